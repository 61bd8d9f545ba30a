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

  try {
    await t.step(
      "401 without a valid user token, and nothing is logged",
      async () => {
        const before = await countServed();
        const expired = await new SignJWT({
          aud: "authenticated",
          role: "authenticated",
          sub: a,
        })
          .setProtectedHeader({ alg: "HS256" })
          .setExpirationTime(Math.floor(Date.now() / 1000) - 10)
          .sign(new TextEncoder().encode(secret));
        const b64 = (v: unknown) => btoa(JSON.stringify(v)).replace(/=+$/, "");
        const none = `${b64({ alg: "none" })}.${
          b64({
            sub: a,
            role: "authenticated",
            aud: "authenticated",
            exp: Math.floor(Date.now() / 1000) + 600,
          })
        }.`;
        const now = Math.floor(Date.now() / 1000);
        const cases: [string, string | undefined, RegExp][] = [
          ["no header", undefined, /missing Authorization/],
          ["not bearer", `Basic ${btoa("a:b")}`, /expected Authorization/],
          ["garbage", "Bearer abc.def.ghi", /not a valid JWT/],
          [
            "another secret",
            `Bearer ${await token(
              a,
              {},
              "not-the-project-secret-at-all-0123",
            )}`,
            /signature is not valid/,
          ],
          ["expired", `Bearer ${expired}`, /has expired/],
          ["alg none", `Bearer ${none}`, /not signed with an algorithm/],
          ["sub not a uuid", `Bearer ${await token("user-a")}`, /sub/],
          ["anon role", `Bearer ${await token(a, { role: "anon" })}`, /role/],
          // Before: each of these was accepted as user A.
          [
            "no aud",
            `Bearer ${await token(a, { aud: undefined })}`,
            /missing required "aud"/,
          ],
          [
            "a foreign aud",
            `Bearer ${await token(a, { aud: "another-app" })}`,
            /unexpected "aud"/,
          ],
          [
            "exp in the year 3000",
            `Bearer ${await token(a, { exp: 32503680000 })}`,
            /exp is more than 86400 s from now/,
          ],
          [
            "exp 8 days ahead",
            `Bearer ${await token(a, { exp: now + 8 * 86400 })}`,
            /exp is more than 86400 s from now/,
          ],
          [
            "iat an hour ahead",
            `Bearer ${await token(a, { iat: now + 3600 })}`,
            /iat is in the future/,
          ],
        ];
        for (const [name, authorization, detail] of cases) {
          const { status, body } = await call(null, "?limit=5", {
            authorization: authorization ?? "",
          });
          assert.equal(status, 401, name);
          assert.equal(body.error, "unauthorized", name);
          assert.match(String(body.detail), detail, name);
        }
        // Auth comes first: bad parameters without a token are still a 401.
        assert.equal(
          (await call(null, "?limit=0", { authorization: "" })).status,
          401,
        );
        await settleLogWrites();
        assert.equal(await countServed(), before);
      },
    );

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
        // The HS256-only handler refuses the ES256 token; an issuer applies to HS256 too.
        const es = await call(null, "?limit=5", {
          authorization: `Bearer ${await es256(a)}`,
        });
        assert.equal(es.status, 401);
        assert.match(String(es.body.detail), /not signed with an algorithm/);
        const withIssuer = createHandler({
          sql: pool,
          jwtSecret: secret,
          issuer: ISSUER,
        });
        assert.equal(
          (await call(a, "?limit=5", { via: withIssuer })).status,
          401,
        );
        const issued = await call(null, "?limit=5", {
          authorization: `Bearer ${await token(a, { iss: ISSUER })}`,
          via: withIssuer,
        });
        assert.equal(issued.status, 200);
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

    let first: RecommendationResponse | undefined;
    await t.step(
      "user A gets A's own recommendations, logged under A",
      async () => {
        const response = await recommend(a, "?limit=20");
        first = response;
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
      const before = first!;
      const response = await recommend(b, { limit: 20 });
      assert.equal(response.source, "embedding");
      const theirs = await decided(b);
      for (const item of response.items) assert.ok(!theirs.has(item.video_id));
      await assertReasonsAreOwn(b, response);
      await settleLogWrites();
      assert.ok(
        (await served(response.request_id)).every((row) => row.user_id === b),
      );

      // B likes every video of A's list: A's list stays exactly the same.
      const added = await db`
        insert into user_video_decisions (user_id, video_id, decision)
        select ${b}::uuid, v, 'like' from unnest(${
        before.items.map((i) => i.video_id)
      }::bigint[]) v
        returning id`;
      try {
        const again = await recommend(a, "?limit=20");
        assert.deepEqual(again.items, before.items);
        await assertReasonsAreOwn(a, again);
      } finally {
        await db`delete from user_video_decisions where id = any(${
          added.map((r) => r.id)
        }::bigint[])`;
      }
      // And no parameter can name another user.
      for (
        const params of [`?user_id=${b}`, { user_id: b }, { limit: 5, sub: b }]
      ) {
        const { status, body } = await call(a, params);
        assert.equal(status, 400);
        assert.ok(
          (body.details as string[]).some((d) =>
            d.includes("unknown parameter")
          ),
        );
      }
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
      "invalid parameters: 400 with every problem listed",
      async () => {
        const { status, body } = await call(
          a,
          "?limit=0&mmr_lambda=2&foo=1&exclude=x",
        );
        assert.equal(status, 400);
        assert.equal(body.error, "invalid parameters");
        const details = body.details as string[];
        assert.equal(details.length, 4, details.join("\n"));
        for (const name of ["limit", "mmr_lambda", "foo", "exclude"]) {
          assert.ok(details.some((d) => d.includes(name)), name);
        }
        const bodies: [unknown, string][] = [
          [{ limit: 101 }, "limit"],
          [{ genres: Array(21).fill("g") }, "genres"],
          [{ makers: [""] }, "makers"],
          [{ exclude: [0] }, "exclude"],
          [{ max_per_maker: 0 }, "max_per_maker"],
          [{ max_per_genre: 101 }, "max_per_genre"],
          [[1, 2], "body"],
        ];
        for (const [params, name] of bodies) {
          const res = await handle(
            new Request("http://localhost/x", {
              method: "POST",
              headers: { Authorization: `Bearer ${await token(a)}` },
              body: JSON.stringify(params),
            }),
          );
          assert.equal(res.status, 400, name);
          const json = await res.json();
          assert.ok(
            json.details[0].startsWith(name),
            `${name}: ${json.details}`,
          );
        }
        const invalidJson = await handle(
          new Request("http://localhost/x", {
            method: "POST",
            headers: { Authorization: `Bearer ${await token(a)}` },
            body: "{limit:",
          }),
        );
        assert.equal(invalidJson.status, 400);
        assert.deepEqual((await invalidJson.json()).details, [
          "body: not valid JSON",
        ]);
      },
    );

    await t.step(
      "control, bidi and zero-width characters: 400 naming the parameter, never 500",
      async () => {
        // Why a NUL used to answer 500: PostgreSQL refuses it in any text value.
        await assert.rejects(
          db`select ${"ドラマ\u0000"}::text as t`,
          (error: { code?: string }) => error.code === "22021",
        );
        const before = await countServed();
        const cases: [string | Record<string, unknown>, string][] = [
          [
            "?genres=%E3%83%89%E3%83%A9%E3%83%9E%00",
            "genres: must not contain control characters, found U+0000",
          ],
          [
            "?makers=%00",
            "makers: must not contain control characters, found U+0000",
          ],
          [
            { genres: ["ドラマ\u0000"] },
            "genres: must not contain control characters, found U+0000",
          ],
          [
            { makers: ["maker\u0000a"] },
            "makers: must not contain control characters, found U+0000",
          ],
          [
            { genres: ["a\tb"] },
            "genres: must not contain control characters, found U+0009",
          ],
          [
            "?makers=a%0Ab",
            "makers: must not contain control characters, found U+000A",
          ],
          [
            { makers: ["a\u007f"] },
            "makers: must not contain control characters, found U+007F",
          ],
          [
            "?genres=a%C2%85",
            "genres: must not contain control characters, found U+0085",
          ],
          [
            { genres: ["\u202eマラド"] },
            "genres: must not contain bidi control characters, found U+202E",
          ],
          [
            "?makers=a%E2%81%A6b",
            "makers: must not contain bidi control characters, found U+2066",
          ],
          [
            { makers: ["a\u200bb"] },
            "makers: must not contain zero-width characters, found U+200B",
          ],
          [
            "?genres=%EF%BB%BFa",
            "genres: must not contain zero-width characters, found U+FEFF",
          ],
          [
            "?limit=5%00",
            "limit: must not contain control characters, found U+0000",
          ],
          [
            { exclude: [1, "2\u0000"] },
            "exclude: must not contain control characters, found U+0000",
          ],
        ];
        for (const [params, detail] of cases) {
          const { status, body } = await call(a, params);
          assert.equal(status, 400, JSON.stringify(params));
          assert.deepEqual(body, {
            error: "invalid parameters",
            details: [detail],
          });
        }
        await settleLogWrites();
        assert.equal(await countServed(), before);
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
      "SQL injection in genres, makers and exclude does nothing",
      async () => {
        const counts = async () =>
          (await db`
          select (select count(*) from videos)::integer as videos,
                 (select count(*) from user_video_decisions)::integer as decisions,
                 (select count(*) from video_embeddings)::integer as embeddings,
                 to_regclass('public.served_recommendations') is not null as log`)[
            0
          ];
        const before = await counts();
        const attacks: (string | Record<string, unknown>)[] = [
          { genres: ["'); drop table public.videos; --"] },
          {
            genres: ["ドラマ' or '1'='1"],
            makers: ["x'); delete from user_video_decisions; --"],
          },
          { makers: ["\\'; truncate video_embeddings cascade; --", '"}'] },
          { genres: ["{a,b}"], makers: ['a",b'] },
          `?genres=${encodeURIComponent("x'||pg_sleep(5)||'")}`,
          `?makers=${encodeURIComponent("x' union select * from videos --")}`,
          `?exclude=${encodeURIComponent("1);drop table videos;--")}`,
          { exclude: ["1); drop table videos; --"] },
          { exclude: "1} or 1=1" },
          `?limit=${encodeURIComponent("5; drop table videos")}`,
        ];
        for (const params of attacks) {
          const { status, body } = await call(a, params);
          assert.ok(
            status === 200 || status === 400,
            `${JSON.stringify(params)}: ${status}`,
          );
          if (status === 200) {
            assert.deepEqual(
              body.items,
              [],
              `${JSON.stringify(params)} matched something`,
            );
            assert.equal(body.model_version, fixture.model_version);
          }
        }
        assert.deepEqual(await counts(), before);
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
  } finally {
    await settleLogWrites();
    await closeHandler();
    await pool.end({ timeout: 5 });
    await db.end({ timeout: 5 });
  }
});
