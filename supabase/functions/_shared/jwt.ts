// Verifies a Supabase Auth user's access token: `Authorization: Bearer <jwt>`.
//
// Keys. Either or both of:
// - the project's (legacy) JWT secret: HS256 only;
// - the project's signing keys as a JSON Web Key Set (new Supabase projects sign with
//   asymmetric keys, ES256 or RS256, published at
//   `https://<project>.supabase.co/auth/v1/.well-known/jwks.json`): given as JSON, or fetched
//   from that URL (cached, refetched at most every 30 s when a token names an unknown key).
//   Only the asymmetric algorithms of the set's keys are accepted.
// The token's `alg` picks the key: HS256 the secret, an asymmetric algorithm the key set, never
// one for the other (no algorithm confusion); alg "none" and every other algorithm are refused.
//
// Claims. `sub` (the user's UUID), `role` = "authenticated" and `aud` = the audience
// ("authenticated" in Supabase's user sessions) must be there; `iss` must be the issuer when
// one is configured (Supabase's is `https://<project>.supabase.co/auth/v1`; unconfigured, iss
// is not checked); `exp` must be there, not past, and no further from now than the maximum
// lifetime; `iat`, when present, must not be in the future beyond the clock skew; `nbf`, when
// present, must have passed. The anon and service_role keys (no `sub`, other roles) are refused.
//
// Env (read by `tokenOptionsFromEnv`, for the deployed function):
//   JWT_SECRET                the legacy HS256 secret
//   JWT_JWKS                  the JWKS as JSON (`{"keys": [...]}`): a local key set, no fetching
//   JWT_JWKS_URL              or its URL, fetched at run time (not with JWT_JWKS)
//   JWT_AUDIENCE              default "authenticated"
//   JWT_ISSUER                e.g. https://<project>.supabase.co/auth/v1; unset: not checked
//   JWT_MAX_LIFETIME_SECONDS  default 86400 (see DEFAULT_MAX_LIFETIME_SECONDS), at most 604800
// At least one of JWT_SECRET, JWT_JWKS and JWT_JWKS_URL must be set.

import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  errors,
  type FetchImplementation,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWK,
  type JWSHeaderParameters,
  jwtVerify,
  type JWTVerifyOptions,
} from "npm:jose@6.2.18";

export type AuthFailure =
  | "missing" // no Authorization header
  | "malformed" // not `Bearer <token>`, or not a JWS
  | "algorithm" // an algorithm no configured key accepts (including alg "none")
  | "signature" // not signed with this project's secret or one of its keys
  | "expired"
  | "claims"; // exp, sub (UUID), role, aud, iss, lifetime or iat missing or wrong

/** Why a request is not authenticated; the handler answers 401. */
export class AuthError extends Error {
  readonly reason: AuthFailure;

  constructor(reason: AuthFailure, message: string) {
    super(message);
    this.name = "AuthError";
    this.reason = reason;
  }
}

/** The remote key set could not be fetched: the server's problem, not the token's (the handler
 * answers 503, never 401). */
export class KeySetUnavailable extends Error {
  constructor(cause: unknown) {
    super("the JSON Web Key Set could not be fetched", { cause });
    this.name = "KeySetUnavailable";
  }
}

export interface AuthenticatedUser {
  /** The user's id: the token's `sub`, lower-case. */
  userId: string;
  claims: Record<string, unknown>;
}

export const DEFAULT_AUDIENCE = "authenticated";
/** One day. Supabase's access tokens live 3600 s by default and at most 604800 s (one week,
 * the dashboard's limit). A day leaves room for projects that raised the expiry to a few hours
 * while refusing any token that claims to stay valid longer than a day, which no user session
 * of a default project does; a project with a longer expiry sets JWT_MAX_LIFETIME_SECONDS. */
export const DEFAULT_MAX_LIFETIME_SECONDS = 86_400;
/** Supabase's own ceiling for an access token's lifetime; no configuration may exceed it. */
export const MAX_LIFETIME_CEILING_SECONDS = 604_800;
/** How far `iat` may lie in the future (clocks of the issuer and of this function differ). */
export const DEFAULT_CLOCK_SKEW_SECONDS = 30;

export const TOKEN_ENV = Object.freeze({
  secret: "JWT_SECRET",
  jwks: "JWT_JWKS",
  jwksUrl: "JWT_JWKS_URL",
  audience: "JWT_AUDIENCE",
  issuer: "JWT_ISSUER",
  maxLifetimeSeconds: "JWT_MAX_LIFETIME_SECONDS",
});

export interface TokenOptions {
  /** The HS256 secret (its UTF-8 bytes sign, as Supabase Auth does), or those bytes. */
  jwtSecret?: string | Uint8Array;
  /** A local JSON Web Key Set: the object or its JSON text. */
  jwks?: JSONWebKeySet | string;
  /** The URL of a remote JSON Web Key Set (not with `jwks`). */
  jwksUrl?: string | URL;
  /** Fetches `jwksUrl` (tests); default: the global fetch. */
  jwksFetch?: FetchImplementation;
  /** Required `aud`; default "authenticated". */
  audience?: string;
  /** Required `iss`; undefined: not checked. */
  issuer?: string;
  /** Largest `exp` - now accepted, in seconds; default DEFAULT_MAX_LIFETIME_SECONDS. */
  maxLifetimeSeconds?: number;
  /** Largest `iat` - now accepted, in seconds; default DEFAULT_CLOCK_SKEW_SECONDS. */
  clockSkewSeconds?: number;
}

/** Verifies an `Authorization` header value: the user, or an AuthError saying why not. */
export type TokenVerifier = (
  header: string | null,
) => Promise<AuthenticatedUser>;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const BEARER = /^Bearer +([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*)$/i;

/** Every asymmetric JWS algorithm a key set may have, by key type (and curve). */
const ASYMMETRIC = new Set([
  "ES256",
  "ES384",
  "ES512",
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "EdDSA",
  "Ed25519",
]);
const EC_CURVES: Record<string, string> = {
  "P-256": "ES256",
  "P-384": "ES384",
  "P-521": "ES512",
};
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/** The key for a JWT secret (its UTF-8 bytes, as Supabase Auth signs with them). */
export function secretKey(secret: string): Uint8Array {
  if (!secret) throw new Error("the JWT secret is empty");
  return new TextEncoder().encode(secret);
}

/** The algorithm of one public JWK of a key set, or an Error saying why it cannot verify. */
function keyAlgorithm(jwk: JWK, index: number): string {
  const where = `JWKS key ${index}${jwk.kid ? ` (kid ${jwk.kid})` : ""}`;
  if (jwk.kty === "oct") {
    throw new Error(
      `${where}: a symmetric key; the HS256 secret belongs in JWT_SECRET`,
    );
  }
  const secret = PRIVATE_MEMBERS.filter((name) => name in jwk);
  if (secret.length > 0) {
    throw new Error(
      `${where}: holds private key members (${
        secret.join(", ")
      }); publish public keys only`,
    );
  }
  if (jwk.use !== undefined && jwk.use !== "sig") {
    throw new Error(`${where}: "use" is ${JSON.stringify(jwk.use)}, not "sig"`);
  }
  if (jwk.alg !== undefined) {
    if (!ASYMMETRIC.has(jwk.alg)) {
      throw new Error(
        `${where}: alg ${
          JSON.stringify(jwk.alg)
        } is not an asymmetric signature algorithm`,
      );
    }
    return jwk.alg;
  }
  // Without "alg": what the key type implies (RSA: RS256, as Supabase signs with RSA keys).
  if (jwk.kty === "EC" && typeof jwk.crv === "string" && EC_CURVES[jwk.crv]) {
    return EC_CURVES[jwk.crv];
  }
  if (jwk.kty === "RSA") return "RS256";
  if (jwk.kty === "OKP" && jwk.crv === "Ed25519") return "EdDSA";
  throw new Error(
    `${where}: key type ${JSON.stringify(jwk.kty)}${
      jwk.crv ? ` on ${JSON.stringify(jwk.crv)}` : ""
    } cannot verify a JWT`,
  );
}

/** The signature algorithms a key set's keys verify; throws when it holds an unusable key. */
export function jwksAlgorithms(jwks: JSONWebKeySet): string[] {
  if (
    typeof jwks !== "object" || jwks === null || !Array.isArray(jwks.keys)
  ) {
    throw new Error('the JWKS must be an object {"keys": [...]}');
  }
  if (jwks.keys.length === 0) throw new Error("the JWKS has no keys");
  const algorithms = new Set<string>();
  jwks.keys.forEach((jwk, index) => {
    if (typeof jwk !== "object" || jwk === null) {
      throw new Error(`JWKS key ${index}: not an object`);
    }
    algorithms.add(keyAlgorithm(jwk, index));
  });
  return [...algorithms];
}

function parseJwks(jwks: JSONWebKeySet | string): JSONWebKeySet {
  if (typeof jwks !== "string") return jwks;
  try {
    return JSON.parse(jwks);
  } catch {
    throw new Error("the JWKS is not valid JSON");
  }
}

function positiveInteger(
  name: string,
  value: number,
  max: number,
  min = 1,
): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new Error(`${name} must be an integer from ${min} to ${max}`);
  }
  return value;
}

type KeyResolver = (
  header: JWSHeaderParameters,
  token: FlattenedJWSInput,
) => Promise<CryptoKey | Uint8Array>;

/** A verifier for `options`; throws (a configuration error, not an AuthError) when they give no
 * key or an unusable one. */
export function createTokenVerifier(options: TokenOptions): TokenVerifier {
  const secret = typeof options.jwtSecret === "string"
    ? secretKey(options.jwtSecret)
    : options.jwtSecret;
  if (secret !== undefined && secret.byteLength === 0) {
    throw new Error("the JWT secret is empty");
  }
  if (options.jwks !== undefined && options.jwksUrl !== undefined) {
    throw new Error("give a local JWKS or a JWKS URL, not both");
  }
  const allowed = new Set<string>(secret ? ["HS256"] : []);
  let keySet: KeyResolver | undefined;
  if (options.jwks !== undefined) {
    const jwks = parseJwks(options.jwks);
    for (const alg of jwksAlgorithms(jwks)) allowed.add(alg);
    keySet = createLocalJWKSet(jwks);
  } else if (options.jwksUrl !== undefined) {
    const url = new URL(options.jwksUrl);
    const local = ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname);
    if (url.protocol !== "https:" && !(url.protocol === "http:" && local)) {
      throw new Error("the JWKS URL must be https (http only on localhost)");
    }
    const remote = createRemoteJWKSet(
      url,
      options.jwksFetch ? { [customFetch]: options.jwksFetch } : {},
    );
    // Which algorithms are allowed is known once the set has been fetched.
    for (const alg of ASYMMETRIC) allowed.add(alg);
    keySet = async (header, token) => {
      let key: CryptoKey | Uint8Array | undefined;
      let refusal: unknown;
      try {
        key = await remote(header, token);
      } catch (error) {
        if (
          !(error instanceof errors.JWKSNoMatchingKey ||
            error instanceof errors.JWKSMultipleMatchingKeys ||
            error instanceof errors.JOSENotSupported)
        ) {
          throw new KeySetUnavailable(error);
        }
        refusal = error; // the token's problem, once the algorithm has been checked
      }
      let algorithms: string[];
      try {
        algorithms = jwksAlgorithms(remote.jwks() ?? { keys: [] });
      } catch (error) {
        throw new KeySetUnavailable(error); // a set this verifier cannot use
      }
      if (!algorithms.includes(String(header.alg))) {
        throw new errors.JOSEAlgNotAllowed(
          '"alg" (Algorithm) Header Parameter value not allowed',
        );
      }
      if (refusal !== undefined) throw refusal;
      return key!;
    };
  }
  if (allowed.size === 0) {
    throw new Error("no key to verify tokens: give a JWT secret or a JWKS");
  }
  const audience = options.audience ?? DEFAULT_AUDIENCE;
  if (typeof audience !== "string" || audience.trim() === "") {
    throw new Error("the JWT audience is empty");
  }
  const issuer = options.issuer;
  if (issuer !== undefined && (typeof issuer !== "string" || issuer === "")) {
    throw new Error("the JWT issuer is empty");
  }
  const maxLifetime = positiveInteger(
    "the maximum token lifetime (seconds)",
    options.maxLifetimeSeconds ?? DEFAULT_MAX_LIFETIME_SECONDS,
    MAX_LIFETIME_CEILING_SECONDS,
  );
  const skew = positiveInteger(
    "the clock skew (seconds)",
    options.clockSkewSeconds ?? DEFAULT_CLOCK_SKEW_SECONDS,
    300,
    0,
  );

  const getKey: KeyResolver = async (header, token) => {
    if (header.alg === "HS256" && secret) return secret;
    if (keySet && ASYMMETRIC.has(String(header.alg))) {
      return await keySet(header, token);
    }
    throw new errors.JOSEAlgNotAllowed(
      '"alg" (Algorithm) Header Parameter value not allowed',
    );
  };
  const verifyOptions: JWTVerifyOptions = {
    algorithms: [...allowed] as JWTVerifyOptions["algorithms"],
    audience,
    ...(issuer !== undefined ? { issuer } : {}),
    requiredClaims: ["exp", "sub"],
  };

  /** jwtVerify, trying each key in turn when several keys of the set fit a token without kid. */
  async function verify(token: string) {
    try {
      return await jwtVerify(token, getKey, verifyOptions);
    } catch (error) {
      if (!(error instanceof errors.JWKSMultipleMatchingKeys)) throw error;
      for await (const key of error) {
        try {
          return await jwtVerify(token, key, verifyOptions);
        } catch (attempt) {
          if (!(attempt instanceof errors.JWSSignatureVerificationFailed)) {
            throw attempt;
          }
        }
      }
      throw new errors.JWSSignatureVerificationFailed();
    }
  }

  return async function verifyAuthorization(
    header: string | null,
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
      ({ payload } = await verify(token));
    } catch (error) {
      if (error instanceof KeySetUnavailable) throw error;
      throw asAuthError(error);
    }
    const { sub, role, exp, iat } = payload;
    if (typeof sub !== "string" || !UUID.test(sub)) {
      throw new AuthError("claims", "the token's sub is not a user id (UUID)");
    }
    if (role !== "authenticated") {
      throw new AuthError("claims", "the token's role is not authenticated");
    }
    // jose has checked that exp (required) and iat (when present) are numbers.
    const now = Math.floor(Date.now() / 1000);
    if ((exp as number) - now > maxLifetime) {
      throw new AuthError(
        "claims",
        `the token's exp is more than ${maxLifetime} s from now`,
      );
    }
    if (iat !== undefined && (iat as number) - now > skew) {
      throw new AuthError("claims", "the token's iat is in the future");
    }
    return { userId: sub.toLowerCase(), claims: payload };
  };
}

/** The user of an `Authorization` header value, or an AuthError saying why not: an HS256 token
 * of `key` under the default claim policy (aud "authenticated", no issuer check, lifetime at
 * most DEFAULT_MAX_LIFETIME_SECONDS). */
export async function verifyAuthorization(
  header: string | null,
  key: Uint8Array,
): Promise<AuthenticatedUser> {
  return await createTokenVerifier({ jwtSecret: key })(header);
}

/** TokenOptions from the environment (TOKEN_ENV); throws one Error listing every problem. */
export function tokenOptionsFromEnv(
  get: (name: string) => string | undefined = (name) => Deno.env.get(name),
): TokenOptions {
  const value = (name: string) => {
    const text = get(name)?.trim();
    return text ? text : undefined;
  };
  const options: TokenOptions = {};
  const problems: string[] = [];
  const secret = get(TOKEN_ENV.secret);
  if (secret) options.jwtSecret = secret;
  const jwks = value(TOKEN_ENV.jwks);
  const jwksUrl = value(TOKEN_ENV.jwksUrl);
  if (jwks && jwksUrl) {
    problems.push(`set ${TOKEN_ENV.jwks} or ${TOKEN_ENV.jwksUrl}, not both`);
  } else if (jwks) {
    options.jwks = jwks;
  } else if (jwksUrl) {
    options.jwksUrl = jwksUrl;
  }
  if (!secret && !jwks && !jwksUrl) {
    problems.push(
      `${TOKEN_ENV.secret} not set (nor ${TOKEN_ENV.jwks} or ${TOKEN_ENV.jwksUrl})`,
    );
  }
  const audience = value(TOKEN_ENV.audience);
  if (audience) options.audience = audience;
  const issuer = value(TOKEN_ENV.issuer);
  if (issuer) options.issuer = issuer;
  const lifetime = value(TOKEN_ENV.maxLifetimeSeconds);
  if (lifetime !== undefined) {
    const seconds = /^[0-9]+$/.test(lifetime) ? Number(lifetime) : NaN;
    if (
      !Number.isSafeInteger(seconds) || seconds < 1 ||
      seconds > MAX_LIFETIME_CEILING_SECONDS
    ) {
      problems.push(
        `${TOKEN_ENV.maxLifetimeSeconds} must be an integer from 1 to ${MAX_LIFETIME_CEILING_SECONDS}, got ${
          JSON.stringify(lifetime)
        }`,
      );
    } else {
      options.maxLifetimeSeconds = seconds;
    }
  }
  if (problems.length > 0) throw new Error(problems.join("; "));
  return options;
}

function asAuthError(error: unknown): AuthError {
  if (error instanceof errors.JWTExpired) {
    return new AuthError("expired", "the token has expired");
  }
  if (
    error instanceof errors.JOSEAlgNotAllowed ||
    error instanceof errors.JOSENotSupported
  ) {
    return new AuthError(
      "algorithm",
      "the token is not signed with an algorithm of this project's keys",
    );
  }
  if (
    error instanceof errors.JWSSignatureVerificationFailed ||
    error instanceof errors.JWKSNoMatchingKey
  ) {
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
