import assert from "node:assert/strict";
import { SignJWT } from "npm:jose@6.2.18";
import {
  AuthError,
  type AuthFailure,
  secretKey,
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
  const jwt = new SignJWT({ role: "authenticated", sub: USER, ...claims })
    .setProtectedHeader({ alg, typ: "JWT" })
    .setIssuedAt();
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
    exp: 2e9,
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
