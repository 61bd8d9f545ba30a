// Verifies a Supabase Auth user's access token: `Authorization: Bearer <jwt>`, HS256-signed
// with the project's (legacy) JWT secret. The token must carry `sub` (the user's UUID), an
// unexpired `exp` and `role` = "authenticated", as Supabase's user sessions do; the anon and
// service_role keys (no `sub`, other roles) are refused.

import { errors, jwtVerify } from "npm:jose@6.2.18";

export type AuthFailure =
  | "missing" // no Authorization header
  | "malformed" // not `Bearer <token>`, or not a JWS
  | "algorithm" // signed with anything but HS256 (including alg "none")
  | "signature" // not signed with this project's secret
  | "expired"
  | "claims"; // exp, sub (UUID) or role missing or wrong

/** Why a request is not authenticated; the handler answers 401. */
export class AuthError extends Error {
  readonly reason: AuthFailure;

  constructor(reason: AuthFailure, message: string) {
    super(message);
    this.name = "AuthError";
    this.reason = reason;
  }
}

export interface AuthenticatedUser {
  /** The user's id: the token's `sub`, lower-case. */
  userId: string;
  claims: Record<string, unknown>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const BEARER = /^Bearer +([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*)$/i;

/** The key for a JWT secret (its UTF-8 bytes, as Supabase Auth signs with them). */
export function secretKey(secret: string): Uint8Array {
  if (!secret) throw new Error("the JWT secret is empty");
  return new TextEncoder().encode(secret);
}

/** The user of an `Authorization` header value, or an AuthError saying why not. */
export async function verifyAuthorization(
  header: string | null,
  key: Uint8Array,
): Promise<AuthenticatedUser> {
  if (header == null || header.trim() === "") {
    throw new AuthError("missing", "missing Authorization header");
  }
  const token = BEARER.exec(header.trim())?.[1];
  if (!token) {
    throw new AuthError("malformed", "expected Authorization: Bearer <jwt>");
  }
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, key, {
      algorithms: ["HS256"],
      requiredClaims: ["exp", "sub"],
    }));
  } catch (error) {
    throw asAuthError(error);
  }
  const { sub, role } = payload;
  if (typeof sub !== "string" || !UUID.test(sub)) {
    throw new AuthError("claims", "the token's sub is not a user id (UUID)");
  }
  if (role !== "authenticated") {
    throw new AuthError("claims", "the token's role is not authenticated");
  }
  return { userId: sub.toLowerCase(), claims: payload };
}

function asAuthError(error: unknown): AuthError {
  if (error instanceof errors.JWTExpired) {
    return new AuthError("expired", "the token has expired");
  }
  if (
    error instanceof errors.JOSEAlgNotAllowed ||
    error instanceof errors.JOSENotSupported
  ) {
    return new AuthError("algorithm", "the token is not signed with HS256");
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return new AuthError("signature", "the token's signature is not valid");
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    return new AuthError(
      "claims",
      `the token's claims are not valid: ${error.message}`,
    );
  }
  if (error instanceof errors.JOSEError || error instanceof TypeError) {
    return new AuthError("malformed", "the token is not a valid JWT");
  }
  return new AuthError("malformed", "the token could not be verified");
}
