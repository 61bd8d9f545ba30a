// The Edge Function against a real PostgreSQL: the real SQL function, real embeddings written
// by the embedding writer, real decisions. tests/integration/test_edge_function.py prepares the
// database and runs this file with SUPABASE_DB_URL, JWT_SECRET and SWIPEREC_EDGE_FIXTURE (a
// JSON file naming the users and the model version); without them these tests fail.

import assert from "node:assert/strict";
import postgres from "npm:postgres@3.4.9";
import { exportJWK, generateKeyPair, SignJWT } from "npm:jose@6.2.18";
import { LIMITS } from "../_shared/params.ts";
import {
  candidateCount,
  closeHandler,
  createHandler,
  handler as deployedHandler,
  type RecommendationResponse,
  settleLogWrites,
} from "./index.ts";

interface Fixture {
  model_version: string;
  users: { a: string; b: string; cold: string; empty: string };
}

const ENV_NAMES = [
  "SUPABASE_DB_URL",
  "JWT_SECRET",
  "SWIPEREC_EDGE_FIXTURE",
] as const;

function environment(): { url: string; secret: string; fixture: Fixture } {
  const missing = ENV_NAMES.filter((name) => !Deno.env.get(name));
  if (missing.length > 0) {
    throw new Error(
      `${
        missing.join(", ")
      } not set: these tests need a prepared database; run them with ` +
        "`.venv/bin/python -m pytest tests/integration/test_edge_function.py`",
    );
  }
  const fixture = JSON.parse(
    Deno.readTextFileSync(Deno.env.get("SWIPEREC_EDGE_FIXTURE")!),
  );
  return {
    url: Deno.env.get("SUPABASE_DB_URL")!,
    secret: Deno.env.get("JWT_SECRET")!,
    fixture,
  };
}

type Handler = (req: Request) => Promise<Response>;

/** One case of tests/testdata/hostile_requests.json: a request as user A and what the handler
 * must answer.
 *
 * - `method` GET: parameters in `query` ("?..."). POST: exactly one of `body` (a JSON value,
 *   sent as JSON), `raw_body` (a string, sent as it is) or `body_base64` (bytes); a `query`
 *   there is refused. Content-Type is application/json unless `headers` say otherwise.
 * - In `query`, `raw_body` and the strings of `body`: `@@REPEAT:<text>:<n>@@` stands for n
 *   copies of text (large inputs stay small in the file), `@@USER:<a|b|cold|empty>@@` for that
 *   user's id.
 * - `token`: a key of `tokens` in the test, the kind of Authorization header sent.
 * - `handler`: "issuer" for one configured with an issuer; else the project secret alone.
 * - `expect.status` 200: the response contract holds, with `items` "some" or "none" (never a
 *   decided video); 400: `error` "invalid parameters" with exactly `details`, or details that
 *   include each of `details_include`; 401: `error` "unauthorized" and a `detail` including
 *   each of `error_include`. */
interface HostileRequest {
  what: string;
  method: "GET" | "POST";
  query?: string;
  body?: unknown;
  raw_body?: string;
  body_base64?: string;
  headers?: Record<string, string>;
  token: string;
  handler?: "issuer";
  expect: {
    status: 200 | 400 | 401;
    items?: "some" | "none";
    details?: string[];
    details_include?: string[];
    error_include?: string[];
  };
}

/** What no error message may carry (the characters params.ts escapes). */
const INVISIBLE =
  /[\p{Cc}\u202a-\u202e\u2066-\u2069\u200b-\u200d\u2060\ufeff]/u;

const HOSTILE_REQUESTS = new URL(
  "../../../tests/testdata/hostile_requests.json",
  import.meta.url,
);

interface Video {
  id: number;
  title: string;
  maker: string | null;
  genres: string[];
}

Deno.test("enhanced_two_tower_recommendations on the real database", async (t) => {
  const { url, secret, fixture } = environment();
  const { a, b, cold, empty } = fixture.users;
  const db = postgres(url, { max: 2, prepare: false, onnotice: () => {} });
  const pool = postgres(url, { max: 4, prepare: false, onnotice: () => {} });
  const handle: Handler = createHandler({ sql: pool, jwtSecret: secret });

  async function token(
    sub: string,
    claims: Record<string, unknown> = {},
    key = secret,
  ) {
    // As Supabase Auth issues them: aud and role "authenticated", iat, a short exp; a claim
    // given here (iat and exp too) replaces the usual one.
    const jwt = new SignJWT({
      aud: "authenticated",
      role: "authenticated",
      sub,
      ...claims,
    }).setProtectedHeader({ alg: "HS256", typ: "JWT" });
    if (!("iat" in claims)) jwt.setIssuedAt();
    if (!("exp" in claims)) jwt.setExpirationTime("10m");
    return await jwt.sign(new TextEncoder().encode(key));
  }

  /** A GET (query: string) or POST (body: object) request as `user`, or with `authorization`. */
  async function call(
    user: string | null,
    params: string | Record<string, unknown> = "",
    { authorization, via = handle }: { authorization?: string; via?: Handler } =
      {},
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const headers: Record<string, string> = {};
    if (authorization !== undefined) headers.Authorization = authorization;
    else if (user) headers.Authorization = `Bearer ${await token(user)}`;
    const req = typeof params === "string"
      ? new Request(
        `http://localhost/enhanced_two_tower_recommendations${params}`,
        { headers },
      )
      : new Request("http://localhost/enhanced_two_tower_recommendations", {
        method: "POST",
        headers: { ...headers, "Content-Type": "application/json" },
        body: JSON.stringify(params),
      });
    const res = await via(req);
    assert.match(res.headers.get("Content-Type") ?? "", /^application\/json/);
    assert.equal(res.headers.get("Access-Control-Allow-Origin"), "*");
    return { status: res.status, body: await res.json() };
  }

  /** A 200 answer's body, checked against the response contract. */
  async function recommend(
    user: string,
    params: string | Record<string, unknown> = "",
    via?: Handler,
  ): Promise<RecommendationResponse> {
    const { status, body } = await call(user, params, { via });
    assert.equal(status, 200, JSON.stringify(body));
    return contract(body);
  }

  /** The body of a 200 answer as a RecommendationResponse, checked against the contract. */
  function contract(body: Record<string, unknown>): RecommendationResponse {
    const response = body as unknown as RecommendationResponse;
    assert.deepEqual(Object.keys(response).sort(), [
      "items",
      "model_version",
      "request_id",
      "source",
    ]);
    assert.match(response.request_id, /^[0-9a-f-]{36}$/);
    assert.equal(response.model_version, fixture.model_version);
    for (const item of response.items) {
      assert.deepEqual(Object.keys(item).sort(), [
        "reason",
        "score",
        "title",
        "video_id",
      ]);
      assert.ok(Number.isSafeInteger(item.video_id) && item.video_id > 0);
      assert.ok(typeof item.title === "string" && item.title.length > 0);
      assert.ok(Number.isFinite(item.score));
      assert.ok(typeof item.reason === "string" && item.reason.length > 0);
    }
    const ids = response.items.map((item) => item.video_id);
    assert.equal(new Set(ids).size, ids.length, "a video twice in one list");
    return response;
  }

  const decided = async (user: string) =>
    new Set(
      (await db<{ id: string }[]>`
        select distinct video_id as id from user_video_decisions where user_id = ${user}::uuid`)
        .map((row) => Number(row.id)),
    );
  const likedTitles = async (user: string) =>
    new Set(
      (await db<{ title: string }[]>`
        select v.title from user_video_latest_decisions d join videos v on v.id = d.video_id
        where d.user_id = ${user}::uuid and d.decision = 'like'`).map((row) =>
        row.title
      ),
    );
  const videos = async (ids: number[]) =>
    new Map(
      (await db<Video[]>`
        select id::integer as id, title, maker, genres from videos where id = any(${ids}::bigint[])`)
        .map((v) => [v.id, v]),
    );
  const served = async (requestId: string) =>
    await db<
      {
        user_id: string;
        video_id: string;
        position: number;
        score: number;
        model_version: string;
        source: string;
        reason: string;
        transaction: string;
      }[]
    >`select user_id::text, video_id, position, score, model_version, source, reason,
             xmin::text as transaction
      from served_recommendations where request_id = ${requestId}::uuid order by position`;
  const countServed = async () =>
    Number((await db`select count(*) as n from served_recommendations`)[0].n);

  /** Every "because you liked X" names one of `user`'s liked videos. */
  async function assertReasonsAreOwn(
    user: string,
    response: RecommendationResponse,
  ) {
    const own = await likedTitles(user);
    for (const { reason } of response.items) {
      const title = /^because you liked (.*)$/.exec(reason)?.[1];
      if (title !== undefined) {
        assert.ok(own.has(title), `"${reason}" is not ${user}'s like`);
      }
    }
  }

  // The project's asymmetric signing key, as new Supabase projects have (the JWKS publishes its
  // public half), generated here: no network.
  const ISSUER = "https://abcdefghijklmnop.supabase.co/auth/v1";
  const signing = await generateKeyPair("ES256");
  const jwk = {
    ...(await exportJWK(signing.publicKey)),
    kid: "edge-test-key",
    alg: "ES256",
    use: "sig",
  };
  const JWKS = { keys: [jwk] };
  async function es256(
    sub: string,
    claims: Record<string, unknown> = {},
    privateKey: CryptoKey = signing.privateKey,
  ) {
    const jwt = new SignJWT({
      aud: "authenticated",
      role: "authenticated",
      iss: ISSUER,
      sub,
      ...claims,
    }).setProtectedHeader({ alg: "ES256", typ: "JWT", kid: jwk.kid });
    if (!("iat" in claims)) jwt.setIssuedAt();
    if (!("exp" in claims)) jwt.setExpirationTime("10m");
    return await jwt.sign(privateKey);
  }

  /** A body stream that would be `total` bytes if read whole; counts the bytes pulled. */
  function endless(total = 64 * 1024 * 1024, chunk = 16 * 1024) {
    const counter = { pulled: 0 };
    const filler = new TextEncoder().encode(" ".repeat(chunk));
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (counter.pulled >= total) return controller.close();
        counter.pulled += chunk;
        controller.enqueue(filler);
      },
    }, { highWaterMark: 0 }); // pulled only when read: `pulled` is what the reader took
    return { stream, counter, chunk };
  }

  /** A local stand-in for the real-time embedding endpoint on a free port: `answer` decides
   * each response; every request is recorded. `close()` releases a request `answer` still
   * holds (see `hold`), then shuts the server down. */
  function standIn(answer: (body: unknown) => Promise<Response> | Response) {
    const requests: {
      method: string;
      path: string;
      authorization: string | null;
      contentType: string | null;
      body: unknown;
    }[] = [];
    let release = () => {};
    const released = new Promise<void>((resolve) => release = resolve);
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      async (req) => {
        const text = await req.text();
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch { /* recorded as text */ }
        requests.push({
          method: req.method,
          path: new URL(req.url).pathname,
          authorization: req.headers.get("Authorization"),
          contentType: req.headers.get("Content-Type"),
          body,
        });
        return await answer(body);
      },
    );
    return {
      url: `http://127.0.0.1:${server.addr.port}`,
      requests,
      /** Never answers before close(). */
      hold: async () => {
        await released;
        return new Response(null, { status: 503 });
      },
      close: async () => {
        release();
        await server.shutdown();
      },
    };
  }

  /** A local port nothing listens on (bound, noted and closed). */
  function closedPort(): number {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const { port } = listener.addr as Deno.NetAddr;
    listener.close();
    return port;
  }

  /** What `fn` returns and the lines it logged with console.warn. */
  async function warnings<T>(fn: () => Promise<T>): Promise<[T, string[]]> {
    const lines: string[] = [];
    const original = console.warn;
    console.warn = (...args: unknown[]) => void lines.push(args.join(" "));
    try {
      return [await fn(), lines];
    } finally {
      console.warn = original;
    }
  }

  try {
    await t.step(
      "a JWKS (ES256) and a configured issuer: the project's keys and issuer only",
      async () => {
        const viaJwks = createHandler({
          sql: pool,
          jwks: JWKS,
          issuer: ISSUER,
        });
        const direct = await recommend(a, "?limit=10");
        const signed = await call(null, "?limit=10", {
          authorization: `Bearer ${await es256(a)}`,
          via: viaJwks,
        });
        assert.equal(signed.status, 200, JSON.stringify(signed.body));
        assert.deepEqual(signed.body.items, direct.items);

        const stranger = await generateKeyPair("ES256");
        const refusals: [string, string, RegExp][] = [
          [
            "HS256 with the project secret",
            await token(a, { iss: ISSUER }),
            /not signed with an algorithm/,
          ],
          [
            "HS256 keyed with the public JWK (algorithm confusion)",
            await token(a, { iss: ISSUER }, JSON.stringify(jwk)),
            /not signed with an algorithm/,
          ],
          [
            "another ES256 key under the project's kid",
            await es256(a, {}, stranger.privateKey),
            /signature is not valid/,
          ],
          [
            "a foreign iss",
            await es256(a, { iss: "https://attacker.supabase.co/auth/v1" }),
            /unexpected "iss"/,
          ],
          [
            "no iss",
            await es256(a, { iss: undefined }),
            /missing required "iss"/,
          ],
          [
            "a foreign aud",
            await es256(a, { aud: "anon" }),
            /unexpected "aud"/,
          ],
          [
            "exp in the year 3000",
            await es256(a, { exp: 32503680000 }),
            /exp is more than 86400 s/,
          ],
          ["anon role", await es256(a, { role: "anon" }), /role/],
        ];
        for (const [name, jwt, detail] of refusals) {
          const { status, body } = await call(null, "?limit=5", {
            authorization: `Bearer ${jwt}`,
            via: viaJwks,
          });
          assert.equal(status, 401, name);
          assert.match(String(body.detail), detail, name);
        }
        // The HS256-only handler refuses the ES256 token (an issuer applies to HS256 too: the
        // hostile-request corpus).
        const es = await call(null, "?limit=5", {
          authorization: `Bearer ${await es256(a)}`,
        });
        assert.equal(es.status, 401);
        assert.match(String(es.body.detail), /not signed with an algorithm/);
        // Secret and JWKS together: each algorithm with its own key.
        const both = createHandler({
          sql: pool,
          jwtSecret: secret,
          jwks: JWKS,
        });
        assert.equal((await call(a, "?limit=5", { via: both })).status, 200);
        assert.equal(
          (await call(null, "?limit=5", {
            authorization: `Bearer ${await es256(a)}`,
            via: both,
          })).status,
          200,
        );
        // No key at all is a configuration error, not a handler that lets everyone in.
        assert.throws(() => createHandler({ sql: pool }), /no key to verify/);
      },
    );

    await t.step(
      "a remote JWKS that cannot be fetched: 503, not 401",
      async () => {
        const outage = createHandler({
          sql: pool,
          jwksUrl: `${ISSUER}/.well-known/jwks.json`,
          jwksFetch: () => Promise.reject(new TypeError("unreachable (test)")),
        });
        const original = console.error;
        const reported: unknown[] = [];
        console.error = (...args: unknown[]) => void reported.push(...args);
        try {
          const res = await outage(
            new Request("http://localhost/x?limit=5", {
              headers: { Authorization: `Bearer ${await es256(a)}` },
            }),
          );
          assert.equal(res.status, 503);
          assert.equal(res.headers.get("Retry-After"), "30");
          assert.deepEqual(await res.json(), {
            error: "token keys unavailable, try again",
          });
        } finally {
          console.error = original;
        }
        assert.ok(reported.some((r) => String(r).includes("JSON Web Key Set")));
        // Served by a fetch that works (still no network), the same token passes.
        const served = createHandler({
          sql: pool,
          jwksUrl: `${ISSUER}/.well-known/jwks.json`,
          jwksFetch: () => Promise.resolve(Response.json(JWKS)),
        });
        assert.equal(
          (await call(null, "?limit=5", {
            authorization: `Bearer ${await es256(a)}`,
            via: served,
          })).status,
          200,
        );
      },
    );

    await t.step("CORS preflight and methods", async () => {
      const res = await handle(
        new Request("http://localhost/x", {
          method: "OPTIONS",
          headers: {
            Origin: "https://app.example",
            "Access-Control-Request-Method": "POST",
          },
        }),
      );
      assert.equal(res.status, 204);
      assert.equal(res.headers.get("Access-Control-Allow-Origin"), "*");
      assert.match(
        res.headers.get("Access-Control-Allow-Headers") ?? "",
        /authorization/,
      );
      assert.match(
        res.headers.get("Access-Control-Allow-Methods") ?? "",
        /POST/,
      );
      await res.body?.cancel();
      const put = await handle(
        new Request("http://localhost/x", { method: "PUT" }),
      );
      assert.equal(put.status, 405);
      await put.body?.cancel();
    });

    await t.step(
      "user A gets A's own recommendations, logged under A",
      async () => {
        const response = await recommend(a, "?limit=20");
        assert.equal(response.source, "embedding");
        assert.ok(
          response.items.length >= 10,
          `only ${response.items.length} items`,
        );
        assert.ok(response.items.length <= 20);
        const mine = await decided(a);
        for (const item of response.items) {
          assert.ok(!mine.has(item.video_id), `${item.video_id}`);
        }
        await assertReasonsAreOwn(a, response);
        assert.ok(
          response.items.some((i) => i.reason.startsWith("because you liked ")),
        );
        const titles = await videos(response.items.map((i) => i.video_id));
        for (const item of response.items) {
          assert.equal(item.title, titles.get(item.video_id)?.title);
        }

        await settleLogWrites();
        const rows = await served(response.request_id);
        assert.equal(rows.length, response.items.length);
        assert.equal(
          new Set(rows.map((r) => r.transaction)).size,
          1,
          "one insert per response",
        );
        rows.forEach((row, i) => {
          const item = response.items[i];
          assert.equal(row.user_id, a);
          assert.equal(row.position, i + 1);
          assert.equal(Number(row.video_id), item.video_id);
          assert.ok(Math.abs(row.score - item.score) < 1e-6);
          assert.equal(row.reason, item.reason);
          assert.equal(row.model_version, fixture.model_version);
          assert.equal(row.source, "embedding");
        });
      },
    );

    await t.step("B's data never reaches A's list", async () => {
      const response = await recommend(b, { limit: 20 });
      assert.equal(response.source, "embedding");
      const theirs = await decided(b);
      for (const item of response.items) assert.ok(!theirs.has(item.video_id));
      await assertReasonsAreOwn(b, response);
      await settleLogWrites();
      assert.ok(
        (await served(response.request_id)).every((row) => row.user_id === b),
      );

      // B likes every video of A's list: A's list stays exactly the same. Other users'
      // swipes reach a list only through the videos' aggregate swipe counts, the ranking
      // stage's evidence (set aside here: its two weights at 0), never as their own data.
      const [saved] = await db`
        select match_weights from embedding_sets
        where model_version = ${fixture.model_version} and kind = 'video'
          and cardinality(match_weights) = 8`;
      if (saved) {
        await db`
          update embedding_sets set match_weights = match_weights[1:6] || '{0,0}'::real[]
          where model_version = ${fixture.model_version} and kind = 'video'`;
      }
      const mine = await recommend(a, "?limit=20");
      const added = await db`
        insert into user_video_decisions (user_id, video_id, decision)
        select ${b}::uuid, v, 'like' from unnest(${
        mine.items.map((i) => i.video_id)
      }::bigint[]) v
        returning id`;
      try {
        const again = await recommend(a, "?limit=20");
        assert.deepEqual(again.items, mine.items);
        await assertReasonsAreOwn(a, again);
      } finally {
        await db`delete from user_video_decisions where id = any(${
          added.map((r) => r.id)
        }::bigint[])`;
        if (saved) {
          await db`update embedding_sets set match_weights = ${saved.match_weights}
            where model_version = ${fixture.model_version} and kind = 'video'`;
        }
      }
      // No parameter can name another user: the hostile-request corpus.
    });

    await t.step(
      "no decided video is ever returned, with or without filters",
      async () => {
        const [{ genre }] = await db`
        select g as genre from videos, unnest(genres) g group by g order by count(*) desc limit 1`;
        const [{ maker }] = await db`
        select maker from videos group by maker order by count(*) desc limit 1`;
        for (const user of [a, b, cold, empty]) {
          const mine = await decided(user);
          const requests: [
            string | Record<string, unknown>,
            (v: Video) => boolean,
          ][] = [
            ["", () => true],
            [
              "?limit=100&mmr_lambda=1&max_per_maker=100&max_per_genre=100",
              () => true,
            ],
            [{ limit: 30, genres: [genre] }, (v) => v.genres.includes(genre)],
            [
              { limit: 30, makers: [maker], max_per_maker: 30 },
              (v) => v.maker === maker,
            ],
            [
              `?genres=${encodeURIComponent(genre)}&makers=${
                encodeURIComponent(maker)
              }`,
              (v) => v.genres.includes(genre) && v.maker === maker,
            ],
          ];
          for (const [params, matches] of requests) {
            const response = await recommend(user, params);
            assert.ok(
              response.items.length > 0,
              `${user} ${JSON.stringify(params)}: no items`,
            );
            const found = await videos(response.items.map((i) => i.video_id));
            for (const item of response.items) {
              assert.ok(
                !mine.has(item.video_id),
                `${user} got decided video ${item.video_id}`,
              );
              assert.ok(
                matches(found.get(item.video_id)!),
                `${item.video_id} breaks the filter`,
              );
            }
          }
          // `exclude` removes more, on top of the decisions.
          const plain = await recommend(user, { limit: 10 });
          const exclude = plain.items.slice(0, 5).map((i) => i.video_id);
          const without = await recommend(user, { limit: 10, exclude });
          for (const item of without.items) {
            assert.ok(
              !exclude.includes(item.video_id) && !mine.has(item.video_id),
            );
          }
        }
      },
    );

    await t.step(
      "the diversity caps hold; mmr_lambda 1 is the relevance order",
      async () => {
        for (
          const [maxPerMaker, maxPerGenre] of [[1, 2], [2, 3], [3, 5]] as const
        ) {
          const response = await recommend(
            a,
            `?limit=100&max_per_maker=${maxPerMaker}&max_per_genre=${maxPerGenre}`,
          );
          assert.ok(response.items.length > 0);
          const found = await videos(response.items.map((i) => i.video_id));
          const makers = new Map<string, number>();
          const genres = new Map<string, number>();
          for (const item of response.items) {
            const video = found.get(item.video_id)!;
            if (video.maker) {
              makers.set(video.maker, (makers.get(video.maker) ?? 0) + 1);
            }
            for (const g of new Set(video.genres)) {
              genres.set(g, (genres.get(g) ?? 0) + 1);
            }
          }
          assert.ok(
            Math.max(...makers.values()) <= maxPerMaker,
            JSON.stringify([...makers]),
          );
          assert.ok(
            Math.max(...genres.values()) <= maxPerGenre,
            JSON.stringify([...genres]),
          );
        }
        const ordered = await recommend(a, {
          limit: 50,
          mmr_lambda: 1,
          max_per_maker: 100,
          max_per_genre: 100,
        });
        assert.equal(ordered.items.length, 50);
        const scores = ordered.items.map((i) => i.score);
        assert.deepEqual(scores, [...scores].sort((x, y) => y - x));
        // With diversity on, the same candidates come in another order.
        const diverse = await recommend(a, {
          limit: 50,
          mmr_lambda: 0.3,
          max_per_maker: 100,
          max_per_genre: 100,
        });
        assert.notDeepEqual(
          diverse.items.map((i) => i.video_id),
          ordered.items.map((i) => i.video_id),
        );
        assert.equal(candidateCount(20), 100);
        assert.equal(candidateCount(50), 200);
        assert.equal(candidateCount(100), 400);
      },
    );

    await t.step(
      "cold start: a user without an embedding gets recent_likes",
      async () => {
        const [{ n }] = await db`
        select count(*)::integer as n from user_embeddings where user_id = ${cold}::uuid`;
        assert.equal(n, 0, "the cold-start user must have no embedding");
        const response = await recommend(cold, "?limit=20");
        assert.equal(response.source, "recent_likes");
        assert.ok(response.items.length >= 10);
        await assertReasonsAreOwn(cold, response);
        assert.ok(
          response.items.some((i) => i.reason.startsWith("because you liked ")),
        );
        await settleLogWrites();
        const rows = await served(response.request_id);
        assert.ok(
          rows.length > 0 && rows.every((r) => r.source === "recent_likes"),
        );
      },
    );

    await t.step("no likes at all: the popular fallback", async () => {
      const response = await recommend(empty, {
        limit: 20,
        mmr_lambda: 1,
        max_per_maker: 100,
        max_per_genre: 100,
      });
      assert.equal(response.source, "popular");
      assert.equal(response.items.length, 20);
      for (const item of response.items) {
        assert.match(item.reason, /^popular (in .+|right now)$/);
      }
      const scores = response.items.map((i) => i.score);
      assert.deepEqual(scores, [...scores].sort((x, y) => y - x));
      assert.equal(
        scores[0],
        1,
        "the most liked video has the full popularity share",
      );
      const capped = await recommend(empty, "?limit=20");
      assert.equal(capped.source, "popular");
      assert.ok(capped.items.length > 0);
    });

    await t.step(
      "the real-time endpoint down, hanging or failing: the SQL cold start, never an error",
      async () => {
        // Down: nothing listens on the port.
        const down = createHandler({
          sql: pool,
          jwtSecret: secret,
          realtimeUrl: `http://127.0.0.1:${closedPort()}`,
        });
        const [offline, offlineWarnings] = await warnings(() =>
          recommend(cold, "?limit=20", down)
        );
        assert.equal(offline.source, "recent_likes");
        assert.ok(offline.items.length > 0);
        await assertReasonsAreOwn(cold, offline);
        assert.equal(offlineWarnings.length, 1, offlineWarnings.join("\n"));
        assert.match(offlineWarnings[0], /real-time embedding endpoint failed/);
        assert.match(offlineWarnings[0], /serving recent_likes$/);
        await settleLogWrites();
        const rows = await served(offline.request_id);
        assert.ok(
          rows.length > 0 && rows.every((r) => r.source === "recent_likes"),
        );

        // Hanging: never answers; the default timeout (250 ms) ends the wait.
        const hanging = standIn(() => hanging.hold());
        try {
          const slow = createHandler({
            sql: pool,
            jwtSecret: secret,
            realtimeUrl: hanging.url,
          });
          const started = performance.now();
          const [waited, waitWarnings] = await warnings(() =>
            recommend(cold, "?limit=20", slow)
          );
          const elapsed = performance.now() - started;
          assert.ok(elapsed < 250 + 1000, `took ${elapsed} ms`);
          assert.equal(waited.source, "recent_likes");
          assert.ok(waited.items.length > 0);
          assert.deepEqual(waitWarnings.length, 1, waitWarnings.join("\n"));
          assert.match(waitWarnings[0], /did not answer within 250 ms/);
          assert.equal(hanging.requests.length, 1);
        } finally {
          await hanging.close();
        }

        // Failing: 500, and 200 without the embedding stored; both warned about once.
        const failing = standIn(() =>
          Response.json({ error: "boom (test)" }, { status: 500 })
        );
        const lying = standIn(() =>
          Response.json({ user_id: cold, path: "realtime" }, { status: 200 })
        );
        try {
          // A base URL with a path (and no trailing slash) and a token.
          const viaFailing = createHandler({
            sql: pool,
            jwtSecret: secret,
            realtimeUrl: `${failing.url}/functions`,
            realtimeToken: "test-token",
            realtimeTimeoutMs: 2000,
          });
          const [failed, failedWarnings] = await warnings(() =>
            recommend(cold, { limit: 20 }, viaFailing)
          );
          assert.equal(failed.source, "recent_likes");
          assert.ok(failed.items.length > 0);
          assert.equal(failedWarnings.length, 1, failedWarnings.join("\n"));
          assert.match(failedWarnings[0], /endpoint answered 500/);
          assert.ok(failedWarnings[0].includes(failed.request_id));
          assert.deepEqual(failing.requests, [{
            method: "POST",
            path: "/functions/embed/user",
            authorization: "Bearer test-token",
            contentType: "application/json",
            body: { user_id: cold },
          }]);

          const viaLying = createHandler({
            sql: pool,
            jwtSecret: secret,
            realtimeUrl: `${lying.url}/`,
            realtimeTimeoutMs: 2000,
          });
          const [unchanged, lyingWarnings] = await warnings(() =>
            recommend(cold, "?limit=20", viaLying)
          );
          assert.equal(unchanged.source, "recent_likes");
          assert.ok(unchanged.items.length > 0);
          assert.equal(lyingWarnings.length, 1, lyingWarnings.join("\n"));
          assert.match(
            lyingWarnings[0],
            /does not use \(source recent_likes\)/,
          );
          assert.equal(lying.requests.length, 1);
          assert.equal(lying.requests[0].path, "/embed/user");
          assert.equal(lying.requests[0].authorization, null, "no token set");
        } finally {
          await failing.close();
          await lying.close();
        }
      },
    );

    await t.step(
      "the real-time endpoint: asked only for users without an embedding; a 404 is quiet",
      async () => {
        const noDecisions = standIn(() =>
          Response.json({ error: "no decisions (test)" }, { status: 404 })
        );
        try {
          const via = createHandler({
            sql: pool,
            jwtSecret: secret,
            realtimeUrl: noDecisions.url,
            realtimeTimeoutMs: 2000,
          });
          const [[own, coldStart, popular], lines] = await warnings(
            async () => [
              await recommend(a, "?limit=10", via),
              await recommend(cold, "?limit=10", via),
              await recommend(empty, "?limit=10", via),
            ],
          );
          assert.deepEqual(lines, []);
          assert.equal(own.source, "embedding");
          assert.equal(coldStart.source, "recent_likes");
          assert.equal(popular.source, "popular");
          assert.ok(coldStart.items.length > 0 && popular.items.length > 0);
          // A's embedding needs no endpoint; each of the other two asked once.
          assert.deepEqual(
            noDecisions.requests.map((r) => r.body),
            [{ user_id: cold }, { user_id: empty }],
          );
        } finally {
          await noDecisions.close();
        }
        // Unusable settings are a configuration error.
        assert.throws(
          () =>
            createHandler({
              sql: pool,
              jwtSecret: secret,
              realtimeUrl: "ftp://example.com",
            }),
          /must be an http\(s\) URL/,
        );
        assert.throws(
          () =>
            createHandler({
              sql: pool,
              jwtSecret: secret,
              realtimeUrl: "http://127.0.0.1:1",
              realtimeTimeoutMs: 0,
            }),
          /positive integer/,
        );
      },
    );

    await t.step(
      "the real-time endpoint stores the embedding: source realtime, then embedding",
      async () => {
        // A user of this step only (the others' states are the fixture's): two likes, no
        // embedding. The stand-in stores A's embedding as theirs, as the endpoint would store
        // the one it computes; everything of this user is removed at the end.
        const user = crypto.randomUUID();
        const likes = (await db<{ id: string }[]>`
          select id from videos order by id limit 2`).map((r) => Number(r.id));
        const storing = standIn(async (body) => {
          const userId = (body as { user_id: string }).user_id;
          await db`
            insert into user_embeddings (model_version, user_id, embedding)
            select model_version, ${userId}::uuid, embedding from user_embeddings
            where user_id = ${a}::uuid`;
          return Response.json({
            user_id: userId,
            model_version: fixture.model_version,
            versions: [fixture.model_version],
            path: "realtime",
            has_history: true,
          });
        });
        try {
          await db`
            insert into user_video_decisions (user_id, video_id, decision)
            select ${user}::uuid, v, 'like' from unnest(${likes}::bigint[]) v`;
          const before = await recommend(user, "?limit=20");
          assert.equal(before.source, "recent_likes");
          const via = createHandler({
            sql: pool,
            jwtSecret: secret,
            realtimeUrl: storing.url,
            realtimeTimeoutMs: 5000,
          });
          const [response, lines] = await warnings(() =>
            recommend(user, "?limit=20", via)
          );
          assert.deepEqual(lines, []);
          assert.equal(response.source, "realtime");
          assert.ok(response.items.length >= 10);
          for (const item of response.items) {
            assert.ok(!likes.includes(item.video_id), `${item.video_id}`);
          }
          await assertReasonsAreOwn(user, response);
          await settleLogWrites();
          const rows = await served(response.request_id);
          assert.equal(rows.length, response.items.length);
          assert.ok(rows.every((r) => r.source === "realtime"));
          // Ranked by the stored embedding: the list an embedding user gets.
          const again = await recommend(user, "?limit=20", via);
          assert.equal(again.source, "embedding");
          assert.deepEqual(again.items, response.items);
          assert.equal(storing.requests.length, 1, "asked once, then stored");
        } finally {
          await storing.close();
          await settleLogWrites();
          await db`delete from served_recommendations where user_id = ${user}::uuid`;
          await db`delete from user_embeddings where user_id = ${user}::uuid`;
          await db`delete from user_video_decisions where user_id = ${user}::uuid`;
        }
      },
    );

    await t.step(
      "hostile requests: each case of tests/testdata/hostile_requests.json has its answer",
      async (corpus) => {
        // Why a NUL used to answer 500: PostgreSQL refuses it in any text value.
        await assert.rejects(
          db`select ${"ドラマ\u0000"}::text as t`,
          (error: { code?: string }) => error.code === "22021",
        );
        const cases: HostileRequest[] = JSON.parse(
          await Deno.readTextFile(HOSTILE_REQUESTS),
        );
        assert.ok(cases.length > 0);
        const names = cases.map((c) => c.what);
        assert.equal(new Set(names).size, names.length, "two cases, one name");

        const now = () => Math.floor(Date.now() / 1000);
        const bearer = async (
          sub: string,
          claims: Record<string, unknown> = {},
          key = secret,
        ) => `Bearer ${await token(sub, claims, key)}`;
        const b64url = (value: unknown) =>
          btoa(JSON.stringify(value)).replace(/=+$/, "").replaceAll("+", "-")
            .replaceAll("/", "_");
        // Each kind of Authorization header a case may name; all for user A.
        const tokens: Record<string, () => Promise<string | undefined>> = {
          none: () => Promise.resolve(undefined),
          empty: () => Promise.resolve(""),
          basic: () => Promise.resolve(`Basic ${btoa("a:b")}`),
          garbage: () => Promise.resolve("Bearer abc.def.ghi"),
          two_tokens: async () => `${await bearer(a)}, ${await bearer(b)}`,
          valid: () => bearer(a),
          lowercase_scheme: async () => `bearer ${await token(a)}`,
          expired: () => bearer(a, { iat: now() - 600, exp: now() - 10 }),
          wrong_secret: () =>
            bearer(a, {}, "not-the-project-secret-at-all-0123"),
          truncated_signature: async () => (await bearer(a)).slice(0, -4),
          alg_none: () =>
            Promise.resolve(
              `Bearer ${b64url({ alg: "none", typ: "JWT" })}.${
                b64url({
                  aud: "authenticated",
                  role: "authenticated",
                  sub: a,
                  iat: now(),
                  exp: now() + 600,
                })
              }.`,
            ),
          alg_hs512: async () =>
            `Bearer ${await new SignJWT({
              aud: "authenticated",
              role: "authenticated",
              sub: a,
            }).setProtectedHeader({ alg: "HS512", typ: "JWT" }).setIssuedAt()
              .setExpirationTime("10m").sign(
                new TextEncoder().encode(secret),
              )}`,
          no_aud: () => bearer(a, { aud: undefined }),
          foreign_aud: () => bearer(a, { aud: "another-app" }),
          aud_list: () => bearer(a, { aud: ["authenticated", "another-app"] }),
          no_exp: () => bearer(a, { exp: undefined }),
          exp_string: () => bearer(a, { exp: String(now() + 600) }),
          year_3000: () => bearer(a, { exp: 32503680000 }),
          year_3000_iss: () => bearer(a, { iss: ISSUER, exp: 32503680000 }),
          exp_8_days: () => bearer(a, { exp: now() + 8 * 86400 }),
          iat_future: () => bearer(a, { iat: now() + 3600 }),
          nbf_future: () => bearer(a, { nbf: now() + 3600 }),
          anon_role: () => bearer(a, { role: "anon" }),
          // Shaped like a project's service_role key: iss "supabase", no sub, no aud, ten years.
          service_role_key: () =>
            bearer("", {
              sub: undefined,
              aud: undefined,
              role: "service_role",
              iss: "supabase",
              exp: now() + 10 * 365 * 86400,
            }),
          sub_not_uuid: () => bearer("user-a"),
          sub_uppercase: () => bearer(a.toUpperCase()),
          foreign_iss: () =>
            bearer(a, { iss: "https://attacker.supabase.co/auth/v1" }),
          valid_iss: () => bearer(a, { iss: ISSUER }),
        };
        const handlers: Record<string, Handler> = {
          default: handle,
          issuer: createHandler({
            sql: pool,
            jwtSecret: secret,
            issuer: ISSUER,
          }),
        };
        const users: Record<string, string> = fixture.users;
        const expand = (text: string) =>
          text.replace(
            /@@REPEAT:(.+?):([0-9]+)@@/gs,
            (_, part: string, n: string) => part.repeat(Number(n)),
          ).replace(/@@USER:([a-z]+)@@/g, (_, key: string) => {
            assert.ok(users[key], `no user ${key}`);
            return users[key];
          });

        async function request(c: HostileRequest): Promise<Request> {
          const make = tokens[c.token];
          assert.ok(make, `unknown token kind ${JSON.stringify(c.token)}`);
          const authorization = await make();
          const headers = new Headers();
          if (authorization !== undefined) {
            headers.set("Authorization", authorization);
          }
          const url = `http://localhost/enhanced_two_tower_recommendations${
            expand(c.query ?? "")
          }`;
          const bodies = ["body", "raw_body", "body_base64"].filter((key) =>
            key in c
          );
          if (c.method === "GET") {
            assert.equal(bodies.length, 0, "a GET has no body");
            for (const [k, v] of Object.entries(c.headers ?? {})) {
              headers.set(k, v);
            }
            return new Request(url, { headers });
          }
          assert.equal(c.method, "POST", "method: GET or POST");
          assert.equal(bodies.length, 1, "a POST has one kind of body");
          headers.set("Content-Type", "application/json");
          for (const [k, v] of Object.entries(c.headers ?? {})) {
            headers.set(k, v);
          }
          const body = c.raw_body !== undefined
            ? expand(c.raw_body)
            : c.body_base64 !== undefined
            ? Uint8Array.from(atob(c.body_base64), (ch) => ch.charCodeAt(0))
            : expand(JSON.stringify(c.body));
          return new Request(url, { method: "POST", headers, body });
        }

        const mine = await decided(a);
        const counts = async () =>
          (await db`
            select (select count(*) from videos)::integer as videos,
                   (select count(*) from user_video_decisions)::integer as decisions,
                   (select count(*) from video_embeddings)::integer as embeddings,
                   (select count(*) from user_embeddings)::integer as users,
                   to_regclass('public.served_recommendations') is not null as log`)[
            0
          ];
        await settleLogWrites();
        const before = await counts();
        const servedBefore = await countServed();
        let servedItems = 0;
        for (const c of cases) {
          await corpus.step(c.what, async () => {
            const via = handlers[c.handler ?? "default"];
            assert.ok(via, `unknown handler ${JSON.stringify(c.handler)}`);
            const res = await via(await request(c));
            const text = await res.text();
            const body = JSON.parse(text);
            if (res.status === 200 && Array.isArray(body.items)) {
              servedItems += body.items.length;
            }
            const { status, items, details, details_include, error_include } =
              c.expect;
            assert.equal(res.status, status, text.slice(0, 1000));
            assert.match(
              res.headers.get("Content-Type") ?? "",
              /^application\/json/,
            );
            assert.equal(res.headers.get("Access-Control-Allow-Origin"), "*");
            if (status === 200) {
              const response = contract(body);
              assert.ok(items === "some" || items === "none", "expect.items");
              if (items === "some") assert.ok(response.items.length > 0);
              else assert.deepEqual(response.items, []);
              for (const item of response.items) {
                assert.ok(!mine.has(item.video_id), `${item.video_id}`);
              }
            } else if (status === 400) {
              assert.equal(body.error, "invalid parameters");
              const found: string[] = body.details;
              assert.ok(Array.isArray(found) && found.length > 0);
              for (const detail of found) {
                // Short, visible, well-formed: never an echo of the input.
                assert.ok(
                  detail.length <= 200 && detail.isWellFormed() &&
                    !INVISIBLE.test(detail),
                  JSON.stringify(detail),
                );
              }
              assert.ok(
                (details === undefined) !== (details_include === undefined),
                "expect.details or expect.details_include",
              );
              if (details !== undefined) assert.deepEqual(found, details);
              for (const part of details_include ?? []) {
                assert.ok(
                  found.some((detail) => detail.includes(part)),
                  `no detail includes ${JSON.stringify(part)}: ${text}`,
                );
              }
            } else if (status === 401) {
              assert.equal(body.error, "unauthorized");
              assert.equal(
                res.headers.get("WWW-Authenticate"),
                'Bearer error="invalid_token"',
              );
              assert.ok(error_include?.length, "expect.error_include");
              for (const part of error_include) {
                assert.ok(String(body.detail).includes(part), text);
              }
            } else {
              assert.fail(`expect.status ${status}: 200, 400 or 401`);
            }
          });
        }
        // Only the 200 answers were logged; nothing else changed.
        await settleLogWrites();
        assert.equal(await countServed() - servedBefore, servedItems);
        assert.deepEqual(await counts(), before);
      },
    );

    await t.step(
      "a 64 MiB body is refused after the first 64 KiB, without reading the rest",
      async () => {
        const post = (
          body: ReadableStream<Uint8Array>,
          headers: Record<string, string>,
        ) =>
          new Request("http://localhost/x", { method: "POST", body, headers });
        const bearer = `Bearer ${await token(a)}`;
        for (
          const declared of [undefined, "100", String(LIMITS.bodyBytes), "x"]
        ) {
          const { stream, counter, chunk } = endless();
          const headers: Record<string, string> = { Authorization: bearer };
          if (declared !== undefined) headers["Content-Length"] = declared;
          const res = await handle(post(stream, headers));
          assert.equal(res.status, 400, `Content-Length ${declared}`);
          assert.deepEqual(await res.json(), {
            error: "invalid parameters",
            details: [`body: larger than ${LIMITS.bodyBytes} bytes`],
          });
          assert.ok(
            counter.pulled > LIMITS.bodyBytes &&
              counter.pulled <= LIMITS.bodyBytes + chunk,
            `Content-Length ${declared}: pulled ${counter.pulled} bytes`,
          );
        }
        // An honest Content-Length over the limit: refused before reading a byte.
        const declared = endless();
        const res = await handle(
          post(declared.stream, {
            Authorization: bearer,
            "Content-Length": String(64 * 1024 * 1024),
          }),
        );
        assert.equal(res.status, 400);
        await res.body?.cancel();
        assert.equal(declared.counter.pulled, 0);
        // Without a valid token the body is never read at all.
        const anonymous = endless();
        const refused = await handle(post(anonymous.stream, {}));
        assert.equal(refused.status, 401);
        await refused.body?.cancel();
        assert.equal(anonymous.counter.pulled, 0);
      },
    );

    await t.step(
      "a failing log write is reported and never fails the response",
      async () => {
        await db`
        create function public.edge_test_log_is_down() returns trigger language plpgsql
        as 'begin raise exception ''served_recommendations is down (test)''; end'`;
        await db`
        create trigger edge_test_log_is_down before insert on public.served_recommendations
        for each statement execute function public.edge_test_log_is_down()`;
        const reported: unknown[][] = [];
        const original = console.error;
        console.error = (...args: unknown[]) => void reported.push(args);
        try {
          const response = await recommend(a, "?limit=5");
          assert.equal(response.items.length, 5);
          await settleLogWrites();
          assert.equal((await served(response.request_id)).length, 0);
          assert.ok(
            reported.some((args) =>
              String(args[0]).includes(response.request_id)
            ),
            "the failure was not reported",
          );
        } finally {
          console.error = original;
          await db`drop trigger edge_test_log_is_down on public.served_recommendations`;
          await db`drop function public.edge_test_log_is_down()`;
        }
      },
    );

    await t.step("503 while no model version serves", async () => {
      const [state] =
        await db`select model_version, activated_at from serving_state`;
      await db`delete from serving_state`;
      try {
        const { status, body } = await call(a, "?limit=5");
        assert.equal(status, 503);
        assert.match(String(body.error), /no model version/);
      } finally {
        await db`
          insert into serving_state (model_version, activated_at)
          values (${state.model_version}, ${state.activated_at})`;
      }
      assert.equal((await call(a, "?limit=5")).status, 200);
    });

    await t.step(
      "the deployed handler: SUPABASE_DB_URL and JWT_SECRET, made on first use",
      async () => {
        const direct = await recommend(a, "?limit=10");
        const deployed = await recommend(a, "?limit=10", deployedHandler);
        assert.deepEqual(deployed.items, direct.items);
        await settleLogWrites();
        assert.equal(
          (await served(deployed.request_id)).length,
          deployed.items.length,
        );
        await closeHandler();
        // Without its secret it answers 500 and says so in the log, never serving anyone.
        const saved = Deno.env.get("JWT_SECRET")!;
        Deno.env.delete("JWT_SECRET");
        const original = console.error;
        const reported: unknown[] = [];
        console.error = (...args: unknown[]) => void reported.push(...args);
        try {
          const { status, body } = await call(a, "?limit=10", {
            via: deployedHandler,
          });
          assert.equal(status, 500);
          assert.equal(body.error, "the function is not configured");
          assert.ok(
            reported.some((r) => String(r).includes("JWT_SECRET not set")),
          );
        } finally {
          console.error = original;
          Deno.env.set("JWT_SECRET", saved);
          await closeHandler();
        }

        // With JWT_JWKS and JWT_ISSUER instead of the secret: the project's ES256 tokens only.
        const envNames = [
          "JWT_JWKS",
          "JWT_ISSUER",
          "JWT_MAX_LIFETIME_SECONDS",
        ] as const;
        const before = Object.fromEntries(
          envNames.map((name) => [name, Deno.env.get(name)]),
        );
        Deno.env.delete("JWT_SECRET");
        Deno.env.set("JWT_JWKS", JSON.stringify(JWKS));
        Deno.env.set("JWT_ISSUER", ISSUER);
        const silenced = console.error;
        const logged: unknown[] = [];
        try {
          const viaEnv = await call(null, "?limit=10", {
            authorization: `Bearer ${await es256(a)}`,
            via: deployedHandler,
          });
          assert.equal(viaEnv.status, 200);
          assert.deepEqual(viaEnv.body.items, direct.items);
          for (
            const jwt of [
              await token(a, { iss: ISSUER }),
              await es256(a, { iss: "https://attacker.supabase.co/auth/v1" }),
            ]
          ) {
            const { status } = await call(null, "?limit=10", {
              authorization: `Bearer ${jwt}`,
              via: deployedHandler,
            });
            assert.equal(status, 401);
          }
          // A shorter configured lifetime applies; an unusable one is a configuration error.
          await closeHandler();
          Deno.env.set("JWT_MAX_LIFETIME_SECONDS", "300");
          assert.equal(
            (await call(null, "?limit=10", {
              authorization: `Bearer ${await es256(a)}`, // 10 minutes
              via: deployedHandler,
            })).status,
            401,
          );
          await closeHandler();
          Deno.env.set("JWT_MAX_LIFETIME_SECONDS", "forever");
          console.error = (...args: unknown[]) => void logged.push(...args);
          const broken = await call(null, "?limit=10", {
            authorization: `Bearer ${await es256(a)}`,
            via: deployedHandler,
          });
          assert.equal(broken.status, 500);
          assert.equal(broken.body.error, "the function is not configured");
          assert.ok(
            logged.some((r) =>
              String(r).includes(
                "JWT_MAX_LIFETIME_SECONDS must be an integer from 1 to 604800",
              )
            ),
          );
        } finally {
          console.error = silenced;
          Deno.env.set("JWT_SECRET", saved);
          for (const name of envNames) {
            if (before[name] === undefined) Deno.env.delete(name);
            else Deno.env.set(name, before[name]!);
          }
          await closeHandler();
        }
      },
    );

    await t.step(
      "the deployed handler: REALTIME_EMBED_URL, _TOKEN and _TIMEOUT_MS",
      async () => {
        const names = [
          "REALTIME_EMBED_URL",
          "REALTIME_EMBED_TOKEN",
          "REALTIME_EMBED_TIMEOUT_MS",
        ] as const;
        const before = Object.fromEntries(
          names.map((name) => [name, Deno.env.get(name)]),
        );
        const original = console.error;
        const logged: unknown[] = [];
        try {
          // Unusable settings: 500 "not configured", each problem logged.
          await closeHandler();
          Deno.env.set("REALTIME_EMBED_URL", "not a url");
          Deno.env.set("REALTIME_EMBED_TIMEOUT_MS", "0");
          console.error = (...args: unknown[]) => void logged.push(...args);
          const broken = await call(cold, "?limit=10", {
            via: deployedHandler,
          });
          console.error = original;
          assert.equal(broken.status, 500);
          assert.equal(broken.body.error, "the function is not configured");
          for (
            const problem of [
              'REALTIME_EMBED_URL must be an http(s) URL, got "not a url"',
              'REALTIME_EMBED_TIMEOUT_MS must be a positive integer (milliseconds), got "0"',
            ]
          ) {
            assert.ok(
              logged.some((r) => String(r).includes(problem)),
              problem,
            );
          }
          await closeHandler();
          Deno.env.set("REALTIME_EMBED_TIMEOUT_MS", "1.5");
          Deno.env.set("REALTIME_EMBED_URL", "http://127.0.0.1:1");
          console.error = (...args: unknown[]) => void logged.push(...args);
          assert.equal(
            (await call(cold, "?limit=10", { via: deployedHandler })).status,
            500,
          );
          console.error = original;
          assert.ok(
            logged.some((r) => String(r).includes('got "1.5"')),
          );

          // An endpoint that is down: the cold start and one warning.
          await closeHandler();
          Deno.env.set(
            "REALTIME_EMBED_URL",
            `http://127.0.0.1:${closedPort()}`,
          );
          Deno.env.set("REALTIME_EMBED_TOKEN", "test-token");
          Deno.env.set("REALTIME_EMBED_TIMEOUT_MS", "400");
          const [response, lines] = await warnings(() =>
            recommend(cold, "?limit=10", deployedHandler)
          );
          assert.equal(response.source, "recent_likes");
          assert.ok(response.items.length > 0);
          assert.equal(lines.length, 1, lines.join("\n"));
          assert.match(lines[0], /endpoint failed/);

          // The hanging endpoint with the configured timeout.
          await closeHandler();
          const hanging = standIn(() => hanging.hold());
          try {
            Deno.env.set("REALTIME_EMBED_URL", hanging.url);
            const started = performance.now();
            const [slow, slowLines] = await warnings(() =>
              recommend(cold, "?limit=10", deployedHandler)
            );
            assert.ok(performance.now() - started < 400 + 1000);
            assert.equal(slow.source, "recent_likes");
            assert.equal(slowLines.length, 1, slowLines.join("\n"));
            assert.match(slowLines[0], /did not answer within 400 ms/);
            assert.equal(
              hanging.requests[0]?.authorization,
              "Bearer test-token",
            );
          } finally {
            await hanging.close();
          }
        } finally {
          console.error = original;
          for (const name of names) {
            if (before[name] === undefined) Deno.env.delete(name);
            else Deno.env.set(name, before[name]!);
          }
          await closeHandler();
        }
      },
    );
  } finally {
    await settleLogWrites();
    await closeHandler();
    await pool.end({ timeout: 5 });
    await db.end({ timeout: 5 });
  }
});
