// The Edge Function with the real real-time embedding endpoint (swiperec's `POST /embed/user`)
// on a real PostgreSQL. Not a *_test.ts file, so `deno test supabase/functions/` leaves it out:
// a Python test starts the endpoint, prepares the database and runs it explicitly with
// SUPABASE_DB_URL, JWT_SECRET and SWIPEREC_REALTIME_FIXTURE, a JSON file:
//
//   {"realtime_url": "http://127.0.0.1:PORT", "realtime_token": "...", "model_version": "...",
//    "users": {"cold": "<uuid: likes, no embedding>", "none": "<uuid: no decision at all>"}}
//
//   deno test --allow-env --allow-net --allow-read \
//     supabase/functions/enhanced_two_tower_recommendations/realtime_integration.ts
//
// The steps run in order and change the database: the cold user ends with an embedding, and a
// third user (inserted here, with two likes) stays behind for the caller to inspect.

import assert from "node:assert/strict";
import postgres from "npm:postgres@3.4.9";
import { SignJWT } from "npm:jose@6.2.18";
import {
  createHandler,
  type RecommendationResponse,
  settleLogWrites,
} from "./index.ts";

interface Fixture {
  realtime_url: string;
  realtime_token?: string | null;
  model_version: string;
  users: { cold: string; none: string };
}

const ENV_NAMES = [
  "SUPABASE_DB_URL",
  "JWT_SECRET",
  "SWIPEREC_REALTIME_FIXTURE",
] as const;

function environment(): { url: string; secret: string; fixture: Fixture } {
  const missing = ENV_NAMES.filter((name) => !Deno.env.get(name));
  if (missing.length > 0) {
    throw new Error(
      `${
        missing.join(", ")
      } not set: these tests need a prepared database and a running real-time endpoint`,
    );
  }
  return {
    url: Deno.env.get("SUPABASE_DB_URL")!,
    secret: Deno.env.get("JWT_SECRET")!,
    fixture: JSON.parse(
      Deno.readTextFileSync(Deno.env.get("SWIPEREC_REALTIME_FIXTURE")!),
    ),
  };
}

type Handler = (req: Request) => Promise<Response>;

Deno.test("enhanced_two_tower_recommendations with the real-time endpoint", async (t) => {
  const { url, secret, fixture } = environment();
  const { cold, none } = fixture.users;
  const db = postgres(url, { max: 2, prepare: false, onnotice: () => {} });
  const pool = postgres(url, { max: 4, prepare: false, onnotice: () => {} });
  // A model computing an embedding may take longer than the deployed default allows.
  const realtimeTimeoutMs = 10_000;
  const handle: Handler = createHandler({
    sql: pool,
    jwtSecret: secret,
    realtimeUrl: fixture.realtime_url,
    realtimeToken: fixture.realtime_token ?? undefined,
    realtimeTimeoutMs,
  });

  /** An access token as Supabase Auth issues it (as index_test.ts signs them). */
  async function token(sub: string): Promise<string> {
    return await new SignJWT({
      aud: "authenticated",
      role: "authenticated",
      sub,
    }).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setIssuedAt()
      .setExpirationTime("10m").sign(new TextEncoder().encode(secret));
  }

  /** A 200 answer for `user`, checked against the response contract. */
  async function recommend(
    user: string,
    via: Handler = handle,
  ): Promise<RecommendationResponse> {
    const res = await via(
      new Request(
        "http://localhost/enhanced_two_tower_recommendations?limit=20",
        {
          headers: { Authorization: `Bearer ${await token(user)}` },
        },
      ),
    );
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const body = JSON.parse(text) as RecommendationResponse;
    assert.deepEqual(Object.keys(body).sort(), [
      "items",
      "model_version",
      "request_id",
      "source",
    ]);
    assert.equal(body.model_version, fixture.model_version);
    for (const item of body.items) {
      assert.ok(Number.isSafeInteger(item.video_id) && item.video_id > 0);
      assert.ok(typeof item.reason === "string" && item.reason.length > 0);
    }
    return body;
  }

  const embeddings = async (user: string) =>
    Number(
      (await db`
        select count(*)::integer as n from user_embeddings where user_id = ${user}::uuid`)[
        0
      ]
        .n,
    );

  /** The console.warn lines of `fn` (returned with its result), printed for the reader too. */
  async function warnings<T>(fn: () => Promise<T>): Promise<[T, string[]]> {
    const lines: string[] = [];
    const original = console.warn;
    console.warn = (...args: unknown[]) => {
      lines.push(args.join(" "));
      original(...args);
    };
    try {
      return [await fn(), lines];
    } finally {
      console.warn = original;
    }
  }

  try {
    await t.step(
      "a cold user: embedded during the request (source realtime), then served by it",
      async () => {
        assert.equal(
          await embeddings(cold),
          0,
          "the cold user has an embedding",
        );
        const started = performance.now();
        const [response, lines] = await warnings(() => recommend(cold));
        const elapsed = performance.now() - started;
        assert.equal(response.source, "realtime", lines.join("\n"));
        assert.deepEqual(lines, []);
        assert.ok(elapsed < realtimeTimeoutMs + 5000, `took ${elapsed} ms`);
        assert.ok(response.items.length > 0);
        assert.ok(await embeddings(cold) >= 1);
        await settleLogWrites();
        const logged = await db<{ source: string }[]>`
          select distinct source from served_recommendations
          where request_id = ${response.request_id}::uuid`;
        assert.deepEqual(logged.map((r) => r.source), ["realtime"]);

        const again = await recommend(cold);
        assert.equal(again.source, "embedding");
        assert.ok(again.items.length > 0);
      },
    );

    await t.step(
      "a user without decisions: the endpoint's 404 falls back to popular",
      async () => {
        const [response, lines] = await warnings(() => recommend(none));
        assert.equal(response.source, "popular");
        assert.ok(response.items.length > 0);
        assert.deepEqual(lines, [], "a 404 is not worth a warning");
        assert.equal(await embeddings(none), 0);
      },
    );

    await t.step(
      "a wrong endpoint token: refused (401), the SQL cold start serves",
      async () => {
        const user = crypto.randomUUID();
        await db`
          insert into user_video_decisions (user_id, video_id, decision)
          select ${user}::uuid, id, 'like' from (select id from videos order by id limit 2) v`;
        const wrong = createHandler({
          sql: pool,
          jwtSecret: secret,
          realtimeUrl: fixture.realtime_url,
          realtimeToken: "wrong",
          realtimeTimeoutMs,
        });
        const [response, lines] = await warnings(() => recommend(user, wrong));
        assert.equal(response.source, "recent_likes");
        assert.ok(response.items.length > 0);
        assert.equal(lines.length, 1, lines.join("\n"));
        assert.match(lines[0], /answered 401/);
        assert.equal(await embeddings(user), 0);
      },
    );
  } finally {
    await settleLogWrites();
    await pool.end({ timeout: 5 });
    await db.end({ timeout: 5 });
  }
});
