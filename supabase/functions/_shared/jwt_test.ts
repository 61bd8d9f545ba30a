import assert from "node:assert/strict";
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "npm:jose@6.2.18";
import {
  AuthError,
  type AuthFailure,
  createTokenVerifier,
  DEFAULT_MAX_LIFETIME_SECONDS,
  KeySetUnavailable,
  secretKey,
  type TokenOptions,
  tokenOptionsFromEnv,
  type TokenVerifier,
  verifyAuthorization,
} from "./jwt.ts";

const SECRET = "unit-test-secret-with-at-least-32-characters";
const KEY = secretKey(SECRET);
const USER = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";

async function token(
  claims: Record<string, unknown> = {},
  { secret = SECRET, alg = "HS256", expires = "1h" as string | number | null } =
    {},
): Promise<string> {
  const jwt = new SignJWT({
    aud: "authenticated",
    role: "authenticated",
    sub: USER,
    ...claims,
  })
    .setProtectedHeader({ alg, typ: "JWT" });
  if (!("iat" in claims)) jwt.setIssuedAt(); // a given iat (even undefined) is kept
  if (expires !== null) jwt.setExpirationTime(expires);
  return await jwt.sign(new TextEncoder().encode(secret));
}

const b64url = (value: unknown) =>
  btoa(JSON.stringify(value)).replace(/=+$/, "").replace(/\+/g, "-").replace(
    /\//g,
    "_",
  );

async function refused(
  header: string | null,
  reason: AuthFailure,
): Promise<void> {
  await assert.rejects(verifyAuthorization(header, KEY), (error: unknown) => {
    assert.ok(
      error instanceof AuthError,
      `expected an AuthError, got ${error}`,
    );
    assert.equal(error.reason, reason, error.message);
    return true;
  });
}

Deno.test("a valid user token gives its sub", async () => {
  const user = await verifyAuthorization(`Bearer ${await token()}`, KEY);
  assert.equal(user.userId, USER);
  assert.equal(user.claims.role, "authenticated");
  // The scheme is case-insensitive; the id is returned lower-case.
  const upper = await token({ sub: USER.toUpperCase() });
  assert.equal(
    (await verifyAuthorization(`bearer ${upper}`, KEY)).userId,
    USER,
  );
});

Deno.test("missing or malformed Authorization", async () => {
  await refused(null, "missing");
  await refused("", "missing");
  await refused("   ", "missing");
  await refused("Bearer", "malformed");
  await refused("Bearer ", "malformed");
  await refused(`Basic ${btoa("user:password")}`, "malformed");
  await refused(`Token ${await token()}`, "malformed");
  await refused("Bearer not-a-jwt", "malformed");
  await refused("Bearer a.b.c", "malformed");
  await refused(`Bearer ${await token()} extra`, "malformed");
});

Deno.test("a token signed with another secret", async () => {
  await refused(
    `Bearer ${await token({}, {
      secret: "another-secret-of-32-characters-or-more",
    })}`,
    "signature",
  );
  // A valid token with its payload swapped for someone else's keeps the old signature.
  const [header, , signature] = (await token()).split(".");
  const forged = b64url({
    sub: "00000000-0000-4000-8000-000000000000",
    role: "authenticated",
    aud: "authenticated",
    exp: Math.floor(Date.now() / 1000) + 600,
  });
  await refused(`Bearer ${header}.${forged}.${signature}`, "signature");
});

Deno.test("an expired token", async () => {
  const past = Math.floor(Date.now() / 1000) - 60;
  await refused(`Bearer ${await token({}, { expires: past })}`, "expired");
});

Deno.test("alg none and other algorithms are refused", async () => {
  const none = `${b64url({ alg: "none", typ: "JWT" })}.${
    b64url({
      sub: USER,
      role: "authenticated",
      aud: "authenticated",
      exp: Math.floor(Date.now() / 1000) + 3600,
    })
  }.`;
  await refused(`Bearer ${none}`, "algorithm");
  await refused(`Bearer ${await token({}, { alg: "HS512" })}`, "algorithm");
  await refused(`Bearer ${await token({}, { alg: "HS384" })}`, "algorithm");
});

Deno.test("sub must be a UUID, exp and role authenticated must be there", async () => {
  await refused(`Bearer ${await token({ sub: "user-42" })}`, "claims");
  await refused(`Bearer ${await token({ sub: `${USER}x` })}`, "claims");
  await refused(`Bearer ${await token({ sub: 42 })}`, "claims");
  await refused(`Bearer ${await token({ sub: undefined })}`, "claims");
  await refused(`Bearer ${await token({}, { expires: null })}`, "claims");
  await refused(`Bearer ${await token({ role: "anon" })}`, "claims");
  await refused(`Bearer ${await token({ role: "service_role" })}`, "claims");
  await refused(`Bearer ${await token({ role: undefined })}`, "claims");
});

Deno.test("an empty secret is a configuration error, not an auth failure", () => {
  assert.throws(() => secretKey(""), /JWT secret is empty/);
});

// -- the claim policy: aud, iss, lifetime, iat ----------------------------------------------------

const now = () => Math.floor(Date.now() / 1000);
/** 3000-01-01T00:00:00Z. */
const YEAR_3000 = 32503680000;

/** `verify` refuses `header` for `reason`. */
async function refusedBy(
  verify: TokenVerifier,
  header: string,
  reason: AuthFailure,
  message?: RegExp,
): Promise<void> {
  await assert.rejects(verify(header), (error: unknown) => {
    assert.ok(
      error instanceof AuthError,
      `expected an AuthError, got ${error}`,
    );
    assert.equal(error.reason, reason, error.message);
    if (message) assert.match(error.message, message);
    return true;
  });
}

Deno.test("aud must be the audience: authenticated by default, or the configured one", async () => {
  await refused(`Bearer ${await token({ aud: undefined })}`, "claims");
  await refused(`Bearer ${await token({ aud: "anon" })}`, "claims");
  await refused(`Bearer ${await token({ aud: "other-project" })}`, "claims");
  await refused(`Bearer ${await token({ aud: ["x", "y"] })}`, "claims");
  await refused(`Bearer ${await token({ aud: 42 })}`, "claims");
  await refused(`Bearer ${await token({ aud: "Authenticated" })}`, "claims");
  // An array that holds the audience is the audience (RFC 7519 4.1.3).
  const listed = await token({ aud: ["other", "authenticated"] });
  assert.equal(
    (await verifyAuthorization(`Bearer ${listed}`, KEY)).userId,
    USER,
  );

  const custom = createTokenVerifier({ jwtSecret: SECRET, audience: "my-app" });
  assert.equal(
    (await custom(`Bearer ${await token({ aud: "my-app" })}`)).userId,
    USER,
  );
  await refusedBy(custom, `Bearer ${await token()}`, "claims", /"aud"/);
});

Deno.test("iss must be the configured issuer; unconfigured, it is not checked", async () => {
  const ISSUER = "https://abcdefghijklmnop.supabase.co/auth/v1";
  const strict = createTokenVerifier({ jwtSecret: SECRET, issuer: ISSUER });
  assert.equal(
    (await strict(`Bearer ${await token({ iss: ISSUER })}`)).userId,
    USER,
  );
  for (
    const iss of [
      undefined,
      "https://attacker.supabase.co/auth/v1",
      `${ISSUER}/`,
      "https://abcdefghijklmnop.supabase.co/auth/v1x",
      ["https://attacker.example", ISSUER],
    ]
  ) {
    await refusedBy(
      strict,
      `Bearer ${await token({ iss })}`,
      "claims",
      /"iss"/,
    );
  }
  // Without an issuer configured, any iss (or none) passes.
  for (const iss of [undefined, ISSUER, "https://elsewhere.example"]) {
    assert.equal(
      (await verifyAuthorization(`Bearer ${await token({ iss })}`, KEY)).userId,
      USER,
    );
  }
});

Deno.test("exp no further from now than the maximum lifetime", async () => {
  assert.equal(DEFAULT_MAX_LIFETIME_SECONDS, 86400);
  await refused(
    `Bearer ${await token({}, { expires: YEAR_3000 })}`,
    "claims",
  );
  await refused(
    `Bearer ${await token({}, { expires: now() + 86400 + 120 })}`,
    "claims",
  );
  // Measured from now, not from iat: an old iat does not make a far exp acceptable.
  await refused(
    `Bearer ${await token({ iat: now() - 7 * 86400 }, {
      expires: now() + 2 * 86400,
    })}`,
    "claims",
  );
  // Within the default: Supabase's default lifetime (3600 s) and a full day.
  for (const ahead of [3600, 86400 - 60]) {
    const ok = await token({}, { expires: now() + ahead });
    assert.equal((await verifyAuthorization(`Bearer ${ok}`, KEY)).userId, USER);
  }
  // A configured maximum.
  const hour = createTokenVerifier({
    jwtSecret: SECRET,
    maxLifetimeSeconds: 3600,
  });
  assert.equal(
    (await hour(`Bearer ${await token({}, { expires: now() + 3500 })}`))
      .userId,
    USER,
  );
  await refusedBy(
    hour,
    `Bearer ${await token({}, { expires: now() + 7200 })}`,
    "claims",
    /exp is more than 3600 s from now/,
  );
});

Deno.test("iat in the future beyond the clock skew, and nbf not yet reached, are refused", async () => {
  await refused(`Bearer ${await token({ iat: now() + 3600 })}`, "claims");
  await refused(`Bearer ${await token({ iat: now() + 120 })}`, "claims");
  await refused(`Bearer ${await token({ iat: "yesterday" })}`, "claims");
  await refused(`Bearer ${await token({ nbf: now() + 600 })}`, "claims");
  // A few seconds ahead is clock skew; no iat at all is allowed.
  for (const iat of [now() + 10, undefined]) {
    const ok = await token({ iat });
    assert.equal((await verifyAuthorization(`Bearer ${ok}`, KEY)).userId, USER);
  }
});

Deno.test("unusable settings are configuration errors", async () => {
  const { publicKey, privateKey } = await generateKeyPair("ES256", {
    extractable: true,
  });
  const pub = { ...(await exportJWK(publicKey)), kid: "k1" };
  const priv = { ...(await exportJWK(privateKey)), kid: "k1" };
  const cases: [TokenOptions, RegExp][] = [
    [{}, /no key to verify tokens/],
    [{ jwtSecret: "" }, /JWT secret is empty/],
    [{ jwks: "{not json" }, /not valid JSON/],
    [{ jwks: { keys: [] } }, /no keys/],
    [{ jwks: JSON.stringify({ kty: "EC" }) }, /must be an object \{"keys"/],
    [{ jwks: { keys: [priv] } }, /private key members \(d\)/],
    [
      { jwks: { keys: [{ kty: "oct", k: "c2VjcmV0" }] } },
      /symmetric key; the HS256 secret belongs in JWT_SECRET/,
    ],
    [{ jwks: { keys: [{ ...pub, alg: "HS256" }] } }, /not an asymmetric/],
    [{ jwks: { keys: [{ ...pub, use: "enc" }] } }, /"use" is "enc"/],
    [
      { jwks: { keys: [pub] }, jwksUrl: "https://x.supabase.co/jwks" },
      /not both/,
    ],
    [
      { jwksUrl: "http://x.supabase.co/auth/v1/.well-known/jwks.json" },
      /https/,
    ],
    [{ jwtSecret: SECRET, maxLifetimeSeconds: 0 }, /from 1 to 604800/],
    [{ jwtSecret: SECRET, maxLifetimeSeconds: 604801 }, /from 1 to 604800/],
    [{ jwtSecret: SECRET, maxLifetimeSeconds: 1.5 }, /from 1 to 604800/],
    [{ jwtSecret: SECRET, audience: " " }, /audience is empty/],
    [{ jwtSecret: SECRET, issuer: "" }, /issuer is empty/],
  ];
  for (const [options, message] of cases) {
    assert.throws(() => createTokenVerifier(options), message);
  }
});

Deno.test("settings from the environment", () => {
  const env = (values: Record<string, string>) => (name: string) =>
    values[name];
  assert.deepEqual(tokenOptionsFromEnv(env({ JWT_SECRET: SECRET })), {
    jwtSecret: SECRET,
  });
  const jwks = '{"keys": []}';
  assert.deepEqual(
    tokenOptionsFromEnv(env({
      JWT_JWKS: jwks,
      JWT_AUDIENCE: "authenticated",
      JWT_ISSUER: " https://p.supabase.co/auth/v1 ",
      JWT_MAX_LIFETIME_SECONDS: "3600",
    })),
    {
      jwks,
      audience: "authenticated",
      issuer: "https://p.supabase.co/auth/v1",
      maxLifetimeSeconds: 3600,
    },
  );
  assert.deepEqual(
    tokenOptionsFromEnv(env({
      JWT_JWKS_URL: "https://p.supabase.co/auth/v1/.well-known/jwks.json",
      JWT_ISSUER: "",
    })),
    { jwksUrl: "https://p.supabase.co/auth/v1/.well-known/jwks.json" },
  );
  assert.throws(
    () => tokenOptionsFromEnv(env({})),
    /^Error: JWT_SECRET not set \(nor JWT_JWKS or JWT_JWKS_URL\)$/,
  );
  assert.throws(
    () =>
      tokenOptionsFromEnv(env({ JWT_JWKS: jwks, JWT_JWKS_URL: "https://x" })),
    /set JWT_JWKS or JWT_JWKS_URL, not both/,
  );
  for (const lifetime of ["0", "abc", "1e3", "-5", "604801"]) {
    assert.throws(
      () =>
        tokenOptionsFromEnv(
          env({ JWT_SECRET: SECRET, JWT_MAX_LIFETIME_SECONDS: lifetime }),
        ),
      /JWT_MAX_LIFETIME_SECONDS must be an integer from 1 to 604800/,
    );
  }
});

// -- JWKS: asymmetric keys --------------------------------------------------------------------

async function keyPair(alg: "ES256" | "ES384" | "RS256", kid?: string) {
  const { publicKey, privateKey } = await generateKeyPair(alg);
  const jwk: JWK = { ...(await exportJWK(publicKey)), alg, use: "sig" };
  if (kid) jwk.kid = kid;
  return { privateKey, jwk, alg, kid };
}

type Pair = Awaited<ReturnType<typeof keyPair>>;

async function signed(
  pair: Pair,
  claims: Record<string, unknown> = {},
  { kid = pair.kid as string | undefined, expires = "1h" as string | number } =
    {},
): Promise<string> {
  return await new SignJWT({
    aud: "authenticated",
    role: "authenticated",
    sub: USER,
    ...claims,
  })
    .setProtectedHeader({ alg: pair.alg, typ: "JWT", ...(kid ? { kid } : {}) })
    .setIssuedAt()
    .setExpirationTime(expires)
    .sign(pair.privateKey);
}

Deno.test("a local JWKS: ES256 tokens of its keys pass, with the same claim policy", async () => {
  const pair = await keyPair("ES256", "key-1");
  const jwks = { keys: [pair.jwk] };
  for (const given of [jwks, JSON.stringify(jwks)]) {
    const verify = createTokenVerifier({ jwks: given });
    const user = await verify(`Bearer ${await signed(pair)}`);
    assert.equal(user.userId, USER);
    // Without kid: the one key that fits the algorithm.
    assert.equal(
      (await verify(`Bearer ${await signed(pair, {}, { kid: undefined })}`))
        .userId,
      USER,
    );
  }
  const ISSUER = "https://abcdefghijklmnop.supabase.co/auth/v1";
  const verify = createTokenVerifier({ jwks, issuer: ISSUER });
  assert.equal(
    (await verify(`Bearer ${await signed(pair, { iss: ISSUER })}`)).userId,
    USER,
  );
  await refusedBy(verify, `Bearer ${await signed(pair)}`, "claims", /"iss"/);
  await refusedBy(
    verify,
    `Bearer ${await signed(pair, { iss: ISSUER, aud: "anon" })}`,
    "claims",
    /"aud"/,
  );
  await refusedBy(
    verify,
    `Bearer ${await signed(pair, { iss: ISSUER }, { expires: YEAR_3000 })}`,
    "claims",
    /exp is more than/,
  );
  await refusedBy(
    verify,
    `Bearer ${await signed(pair, { iss: ISSUER }, { expires: now() - 60 })}`,
    "expired",
  );
  await refusedBy(
    verify,
    `Bearer ${await signed(pair, { iss: ISSUER, role: "service_role" })}`,
    "claims",
  );
});

Deno.test("a local JWKS: other keys, other algorithms and HS256 are refused", async () => {
  const pair = await keyPair("ES256", "key-1");
  const verify = createTokenVerifier({ jwks: { keys: [pair.jwk] } });
  // Another key: under the set's kid, under an unknown kid, without kid.
  const stranger = await keyPair("ES256", "key-1");
  await refusedBy(verify, `Bearer ${await signed(stranger)}`, "signature");
  await refusedBy(
    verify,
    `Bearer ${await signed(stranger, {}, { kid: "key-9" })}`,
    "signature",
  );
  await refusedBy(
    verify,
    `Bearer ${await signed(stranger, {}, { kid: undefined })}`,
    "signature",
  );
  // Algorithms the set has no key for.
  await refusedBy(
    verify,
    `Bearer ${await signed(await keyPair("ES384", "key-1"))}`,
    "algorithm",
  );
  await refusedBy(
    verify,
    `Bearer ${await signed(await keyPair("RS256", "key-1"))}`,
    "algorithm",
  );
  // HS256: with only a JWKS there is no secret, and the public key is never an HMAC key
  // (algorithm confusion): neither its JSON, nor its x coordinate, nor a guessed secret.
  for (
    const hmacKey of [JSON.stringify(pair.jwk), pair.jwk.x!, SECRET]
  ) {
    await refusedBy(
      verify,
      `Bearer ${await token({}, { secret: hmacKey })}`,
      "algorithm",
    );
  }
  const none = `${b64url({ alg: "none", kid: "key-1" })}.${
    b64url({
      sub: USER,
      role: "authenticated",
      aud: "authenticated",
      exp: now() + 600,
    })
  }.`;
  await refusedBy(verify, `Bearer ${none}`, "algorithm");
  // And an HS256-only verifier refuses ES256 tokens.
  await refused(`Bearer ${await signed(pair)}`, "algorithm");
});

Deno.test("a secret and a JWKS together: the alg picks the key, never one for the other", async () => {
  const pair = await keyPair("ES256", "key-1");
  const verify = createTokenVerifier({
    jwtSecret: SECRET,
    jwks: { keys: [pair.jwk] },
  });
  assert.equal((await verify(`Bearer ${await signed(pair)}`)).userId, USER);
  assert.equal((await verify(`Bearer ${await token()}`)).userId, USER);
  // HS256 signed with the public key: checked against the secret, so the signature fails.
  await refusedBy(
    verify,
    `Bearer ${await token({}, { secret: JSON.stringify(pair.jwk) })}`,
    "signature",
  );
  await refusedBy(
    verify,
    `Bearer ${await token({}, { alg: "HS512" })}`,
    "algorithm",
  );
});

Deno.test("a JWKS in rotation: several keys, with and without kid", async () => {
  const [one, two] = [await keyPair("ES256"), await keyPair("ES256")];
  const rsa = await keyPair("RS256", "rsa-1");
  const verify = createTokenVerifier({
    jwks: { keys: [one.jwk, two.jwk, rsa.jwk] },
  });
  // No kid, two EC keys fit: each is tried.
  assert.equal((await verify(`Bearer ${await signed(one)}`)).userId, USER);
  assert.equal((await verify(`Bearer ${await signed(two)}`)).userId, USER);
  assert.equal((await verify(`Bearer ${await signed(rsa)}`)).userId, USER);
  await refusedBy(
    verify,
    `Bearer ${await signed(await keyPair("ES256"))}`,
    "signature",
  );
  // Claims are still checked on the key that verified.
  await refusedBy(
    verify,
    `Bearer ${await signed(two, { aud: "other" })}`,
    "claims",
  );
  // A key without "alg" verifies what its type implies: EC P-256 -> ES256.
  const bare = await keyPair("ES256", "bare");
  const { alg: _alg, ...noAlg } = bare.jwk;
  const byType = createTokenVerifier({ jwks: { keys: [noAlg] } });
  assert.equal((await byType(`Bearer ${await signed(bare)}`)).userId, USER);
});

Deno.test("a remote JWKS (fetched through a local fetch, no network): cached; outages are not 401s", async () => {
  const pair = await keyPair("ES256", "key-1");
  const URL_ =
    "https://abcdefghijklmnop.supabase.co/auth/v1/.well-known/jwks.json";
  const fetched: string[] = [];
  let answer: () => Response = () => Response.json({ keys: [pair.jwk] });
  const verify = createTokenVerifier({
    jwksUrl: URL_,
    jwksFetch: (url) => {
      fetched.push(url);
      return Promise.resolve(answer());
    },
  });
  assert.equal((await verify(`Bearer ${await signed(pair)}`)).userId, USER);
  assert.equal((await verify(`Bearer ${await signed(pair)}`)).userId, USER);
  assert.deepEqual(fetched, [URL_]);
  await refusedBy(verify, `Bearer ${await token()}`, "algorithm");
  await refusedBy(
    verify,
    `Bearer ${await signed(await keyPair("ES384", "key-1"))}`,
    "algorithm",
  );
  await refusedBy(
    verify,
    `Bearer ${await signed(await keyPair("ES256", "key-1"))}`,
    "signature",
  );
  await refusedBy(
    verify,
    `Bearer ${await signed(pair, { aud: "anon" })}`,
    "claims",
  );
  assert.deepEqual(fetched, [URL_]); // an unknown key refetches at most every 30 s

  // The key set cannot be fetched or used: KeySetUnavailable, never an AuthError.
  const exported = await generateKeyPair("ES256", { extractable: true });
  const privateJwk = {
    ...(await exportJWK(exported.privateKey)),
    alg: "ES256",
    kid: "key-1",
  };
  for (
    const failure of [
      () => {
        throw new TypeError("network unreachable");
      },
      () => new Response("down", { status: 503 }),
      () => new Response("not json", { status: 200 }),
      () => Response.json({ keys: [privateJwk] }), // not a set of public keys
    ]
  ) {
    answer = failure;
    const cold = createTokenVerifier({
      jwksUrl: URL_,
      jwksFetch: () => Promise.resolve().then(answer),
    });
    await assert.rejects(
      cold(`Bearer ${await signed(pair)}`),
      (error: unknown) => error instanceof KeySetUnavailable,
    );
  }
});
