// Supabase Edge Function: recommendations for the signed-in user of a swipe app.
//
//   GET  /functions/v1/enhanced_two_tower_recommendations?limit=20&genres=ドラマ
//   POST /functions/v1/enhanced_two_tower_recommendations  {"limit": 20, "genres": ["ドラマ"]}
//   Authorization: Bearer <the user's Supabase access token>
//
// Flow: verify the JWT (the user is always its `sub`) -> parse the parameters -> one call of the
// SQL function public.enhanced_two_tower_recommendations (ANN candidates without the user's
// decided videos plus the nearest new releases, scored by the ranking stage: `score` is the
// ranking score (the like score with the exposure prior and the new-release bonus) MMR takes
// as relevance; their
// pairwise similarities (each row's to the rows ranked after it), evidence for reasons; up to
// the candidate count + 20 rows), each row with its reason
// worded by public.recommendation_reason (the one home of that wording) -> MMR re-ranking with
// per-maker / per-genre caps -> JSON. Every request is logged off the critical path: its status
// and duration in public.serving_requests, the items served in public.served_recommendations.
//
// A user without an embedding in their serving version (rows of source recent_likes or
// popular): when a real-time endpoint is configured, it is asked once, within a short timeout,
// to compute and store the user's embedding (POST {url}/embed/user {"user_id"}); after its 200
// the SQL call is made again and, once it ranks by the new embedding, the answer says source
// "realtime". Any other answer (404: the user has no decisions), a network error or the timeout
// keep the first result: the endpoint never turns a response into an error.
//
// Env: SUPABASE_DB_URL (set by Supabase), and the token settings of ../_shared/jwt.ts, set with
// `supabase secrets set ...`: JWT_SECRET (the project's legacy HS256 secret) and/or JWT_JWKS (its
// signing keys' JWKS as JSON) or JWT_JWKS_URL (fetched at run time); JWT_AUDIENCE (default
// "authenticated"), JWT_ISSUER (https://<project>.supabase.co/auth/v1; unset: not checked),
// JWT_MAX_LIFETIME_SECONDS (default 86400). Optional, the real-time embedding endpoint:
// REALTIME_EMBED_URL (its base URL; unset: no real-time embeddings, the SQL cold start only),
// REALTIME_EMBED_TOKEN (sent as `Authorization: Bearer <token>`; unset: no header) and
// REALTIME_EMBED_TIMEOUT_MS (a positive integer, default 250). Importing this module starts
// nothing.

import postgres from "npm:postgres@3.4.9";
import {
  AuthError,
  createTokenVerifier,
  KeySetUnavailable,
  TOKEN_ENV,
  type TokenOptions,
  tokenOptionsFromEnv,
} from "../_shared/jwt.ts";
import { mmrSelect, similarityMatrix } from "../_shared/mmr.ts";
import {
  ParamsError,
  parseRequestParams,
  type RecommendationParams,
} from "../_shared/params.ts";

export type Sql = postgres.Sql;

export const FUNCTION_NAME = "enhanced_two_tower_recommendations";
export const ENV = Object.freeze({
  databaseUrl: "SUPABASE_DB_URL",
  jwtSecret: TOKEN_ENV.secret,
  jwks: TOKEN_ENV.jwks,
  jwksUrl: TOKEN_ENV.jwksUrl,
  audience: TOKEN_ENV.audience,
  issuer: TOKEN_ENV.issuer,
  maxLifetimeSeconds: TOKEN_ENV.maxLifetimeSeconds,
  realtimeUrl: "REALTIME_EMBED_URL",
  realtimeToken: "REALTIME_EMBED_TOKEN",
  realtimeTimeoutMs: "REALTIME_EMBED_TIMEOUT_MS",
});

/** How long a request waits for the real-time embedding endpoint, by default. */
export const DEFAULT_REALTIME_TIMEOUT_MS = 250;

/** ANN candidates for MMR: 4 per requested item, at least 100, at most 400. */
export function candidateCount(limit: number): number {
  return Math.min(400, Math.max(100, 4 * limit));
}

export const CORS_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers":
    "authorization, x-client-info, apikey, content-type",
  "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
  "Access-Control-Max-Age": "86400",
});

/** Where a response's candidates come from: the user's embedding; the user's embedding,
 * computed during this request by the real-time endpoint ("realtime"); the mean of their recent
 * likes (no embedding yet); or popular videos (no likes yet). */
export type Source = "embedding" | "realtime" | "recent_likes" | "popular";

/** The sources of the SQL function's rows ("realtime" is this function's own). */
type SqlSource = Exclude<Source, "realtime">;

export interface Item {
  video_id: number;
  title: string;
  score: number;
  reason: string;
}

export interface RecommendationResponse {
  request_id: string;
  model_version: string | null;
  source: Source | null;
  items: Item[];
}

/** One row of the SQL function with its reason (bigint columns arrive as strings). */
interface CandidateRow {
  video_id: string;
  title: string;
  genres: string[] | null;
  maker: string | null;
  score: number;
  rank: number;
  /** Cosines to the candidates ranked after this one, in rank order (the upper triangle). */
  similarities: number[];
  liked_video_id: string | null;
  liked_title: string | null;
  liked_similarity: number | null;
  shared_genre: string | null;
  shared_maker: string | null;
  shared_performer: string | null;
  model_version: string;
  source: SqlSource;
  reason: string;
  /** When the query ran: the served items' time in the log, so a swipe made as soon as the
   * answer arrives always comes after it. */
  served_at: Date;
}

/** The pool, and how tokens are verified (TokenOptions: `jwtSecret` and/or `jwks` or
 * `jwksUrl`, `audience`, `issuer`, `maxLifetimeSeconds`; at least one key). */
export interface HandlerOptions extends TokenOptions {
  sql: Sql;
  /** hnsw.ef_search for the ANN scan (the SQL raises it to at least the candidate count). */
  efSearch?: number;
  /** Keeps a background promise alive after the response; default: EdgeRuntime.waitUntil when
   * the runtime has it, else the pending set that `settleLogWrites()` awaits. */
  waitUntil?: (promise: Promise<unknown>) => void;
  /** Base URL of the real-time embedding endpoint (`POST {realtimeUrl}/embed/user`), asked for
   * the embedding of a user who has none; undefined: never asked (the SQL cold start only). */
  realtimeUrl?: string;
  /** Sent to the endpoint as `Authorization: Bearer <realtimeToken>`; undefined: no header. */
  realtimeToken?: string;
  /** How long a request waits for the endpoint, in ms; default DEFAULT_REALTIME_TIMEOUT_MS. */
  realtimeTimeoutMs?: number;
}

/** The real-time settings of HandlerOptions. */
export type RealtimeOptions = Pick<
  HandlerOptions,
  "realtimeUrl" | "realtimeToken" | "realtimeTimeoutMs"
>;

/** RealtimeOptions from the environment (REALTIME_EMBED_*); throws one Error listing every
 * problem. No REALTIME_EMBED_URL: no real-time endpoint. */
export function realtimeOptionsFromEnv(
  get: (name: string) => string | undefined = (name) => Deno.env.get(name),
): RealtimeOptions {
  const value = (name: string) => {
    const text = get(name)?.trim();
    return text ? text : undefined;
  };
  const options: RealtimeOptions = {};
  const problems: string[] = [];
  const url = value(ENV.realtimeUrl);
  if (url !== undefined) {
    try {
      realtimeEndpoint(url);
      options.realtimeUrl = url;
    } catch (error) {
      problems.push((error as Error).message);
    }
  }
  const token = value(ENV.realtimeToken);
  if (token !== undefined) options.realtimeToken = token;
  const timeout = value(ENV.realtimeTimeoutMs);
  if (timeout !== undefined) {
    const ms = /^[0-9]+$/.test(timeout) ? Number(timeout) : NaN;
    if (!Number.isSafeInteger(ms) || ms < 1) {
      problems.push(
        `${ENV.realtimeTimeoutMs} must be a positive integer (milliseconds), got ${
          JSON.stringify(timeout)
        }`,
      );
    } else {
      options.realtimeTimeoutMs = ms;
    }
  }
  if (problems.length > 0) throw new Error(problems.join("; "));
  return options;
}

/** `{base}/embed/user`; throws when the base is not an http(s) URL. */
function realtimeEndpoint(base: string): URL {
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new Error(
      `${ENV.realtimeUrl} must be an http(s) URL, got ${JSON.stringify(base)}`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(
      `${ENV.realtimeUrl} must be an http(s) URL, got ${JSON.stringify(base)}`,
    );
  }
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return new URL("embed/user", url);
}

// -- background log writes ---------------------------------------------------------------------

const pending = new Set<Promise<unknown>>();
/** Each response's query time, for its log rows (not part of the JSON answer). */
const servedTimes = new WeakMap<RecommendationResponse, Date>();

function keepPending(promise: Promise<unknown>): void {
  pending.add(promise);
  const done = () => void pending.delete(promise);
  promise.then(done, done);
}

function defaultWaitUntil(): (promise: Promise<unknown>) => void {
  const runtime = (globalThis as {
    EdgeRuntime?: { waitUntil?: (promise: Promise<unknown>) => void };
  }).EdgeRuntime;
  return runtime?.waitUntil ? (p) => runtime.waitUntil!(p) : keepPending;
}

/** Resolves once every log write started without EdgeRuntime.waitUntil has finished. */
export async function settleLogWrites(): Promise<void> {
  while (pending.size > 0) await Promise.allSettled([...pending]);
}

// -- responses ---------------------------------------------------------------------------------

function json(
  body: unknown,
  status = 200,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: {
      ...CORS_HEADERS,
      "Content-Type": "application/json; charset=utf-8",
      "Cache-Control": "no-store",
      ...headers,
    },
  });
}

function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

// -- the handler -------------------------------------------------------------------------------

/** A request handler on a given connection pool and token keys. */
export function createHandler(
  options: HandlerOptions,
): (req: Request) => Promise<Response> {
  const { sql } = options;
  const verifyAuthorization = createTokenVerifier(options);
  const efSearch = options.efSearch ?? 100;
  const waitUntil = options.waitUntil ?? defaultWaitUntil();
  const endpoint = options.realtimeUrl === undefined
    ? undefined
    : realtimeEndpoint(options.realtimeUrl);
  const realtimeTimeoutMs = options.realtimeTimeoutMs ??
    DEFAULT_REALTIME_TIMEOUT_MS;
  if (!Number.isSafeInteger(realtimeTimeoutMs) || realtimeTimeoutMs < 1) {
    throw new RangeError(
      `realtimeTimeoutMs must be a positive integer, got ${realtimeTimeoutMs}`,
    );
  }

  function candidateRows(
    userId: string,
    params: RecommendationParams,
  ): Promise<CandidateRow[]> {
    const candidates = candidateCount(params.limit);
    return sql<CandidateRow[]>`
      select r.*,
             public.recommendation_reason(r.source, r.genres, r.liked_title, r.liked_similarity,
               r.shared_genre, r.shared_maker, r.shared_performer) as reason,
             statement_timestamp() as served_at
      from public.enhanced_two_tower_recommendations(
        ${userId}::uuid, ${candidates}::integer, ${params.genres}::text[],
        ${params.makers}::text[], ${params.exclude}::bigint[], ${efSearch}::integer) r
      order by r.rank`;
  }

  /** Asks the real-time endpoint to store the user's embedding: true once it has (200). Never
   * throws; any other outcome but a 404 (no decisions to embed) is logged in one warning. */
  async function embedInRealtime(
    url: URL,
    userId: string,
    requestId: string,
    fallback: SqlSource,
  ): Promise<boolean> {
    const warn = (what: string) =>
      console.warn(
        `${FUNCTION_NAME}: request ${requestId}: the real-time embedding endpoint ${what}; serving ${fallback}`,
      );
    const headers: Record<string, string> = {
      "Content-Type": "application/json",
    };
    if (options.realtimeToken !== undefined) {
      headers.Authorization = `Bearer ${options.realtimeToken}`;
    }
    try {
      const res = await fetch(url, {
        method: "POST",
        headers,
        body: JSON.stringify({ user_id: userId }),
        signal: AbortSignal.timeout(realtimeTimeoutMs),
      });
      // Only the status matters: 200 means the embedding is stored.
      await res.body?.cancel().catch(() => {});
      if (res.status === 200) return true;
      if (res.status !== 404) warn(`answered ${res.status}`);
    } catch (error) {
      const name = (error as { name?: unknown } | null)?.name;
      warn(
        name === "TimeoutError"
          ? `did not answer within ${realtimeTimeoutMs} ms`
          : `failed: ${
            String((error as Error)?.message ?? error).slice(0, 200)
          }`,
      );
    }
    return false;
  }

  async function recommend(
    userId: string,
    params: RecommendationParams,
    requestId: string,
  ): Promise<RecommendationResponse> {
    let rows = await candidateRows(userId, params);
    let source: Source | undefined = rows[0]?.source;
    if (
      endpoint && rows.length > 0 && rows[0].source !== "embedding" &&
      await embedInRealtime(endpoint, userId, requestId, rows[0].source)
    ) {
      // The embedding is stored: rank by it. Should that fail, the first result stands.
      try {
        const fresh = await candidateRows(userId, params);
        if (fresh.length > 0 && fresh[0].source === "embedding") {
          rows = fresh;
          source = "realtime";
        } else {
          console.warn(
            `${FUNCTION_NAME}: request ${requestId}: the real-time embedding endpoint stored an embedding the query does not use (source ${
              fresh[0]?.source ?? "none"
            }); serving ${rows[0].source}`,
          );
        }
      } catch (error) {
        console.warn(
          `${FUNCTION_NAME}: request ${requestId}: the query after the real-time embedding failed (${
            String((error as Error)?.message ?? error).slice(0, 200)
          }); serving ${rows[0].source}`,
        );
      }
    }
    if (rows.length === 0) {
      const [row] = await sql<{ version: string | null }[]>`
        select public.serving_version_for(${userId}::uuid) as version`;
      return {
        request_id: requestId,
        model_version: row?.version ?? null,
        source: null,
        items: [],
      };
    }
    rows.forEach((row, i) => {
      if (row.rank !== i + 1 || !Array.isArray(row.similarities)) {
        throw new Error(
          `candidate ${i} breaks the SQL contract (rank ${row.rank})`,
        );
      }
    });
    const picked = mmrSelect(
      rows.map((row) => ({
        relevance: row.score,
        maker: row.maker,
        genres: row.genres ?? [],
      })),
      similarityMatrix(rows.map((row) => row.similarities)),
      {
        limit: params.limit,
        lambda: params.mmrLambda,
        maxPerMaker: params.maxPerMaker,
        maxPerGenre: params.maxPerGenre,
      },
    );
    const items = picked.map((i): Item => ({
      video_id: Number(rows[i].video_id),
      title: rows[i].title,
      score: rows[i].score,
      reason: rows[i].reason,
    }));
    const response: RecommendationResponse = {
      request_id: requestId,
      model_version: rows[0].model_version,
      source: source ?? rows[0].source,
      items,
    };
    servedTimes.set(response, rows[0].served_at);
    return response;
  }

  /** All items of a response in one multi-row insert. */
  /** One statement: the request's row in serving_requests (status, duration, version, route)
   * and, when items were served, one row per item in served_recommendations. */
  async function logRequest(entry: {
    requestId: string;
    userId: string | null;
    status: number;
    durationMs: number;
    response: RecommendationResponse | null;
  }): Promise<void> {
    const { requestId, userId, status, durationMs, response } = entry;
    const items = response?.items ?? [];
    const servedAt = response ? servedTimes.get(response) ?? null : null;
    try {
      const version = response?.model_version ?? null;
      const source = response?.source ?? null;
      await sql`
        with request as (
          insert into public.serving_requests
            (request_id, user_id, status, duration_ms, model_version, route, source, items,
             created_at)
          values (${requestId}::uuid, ${userId}::uuid, ${status}, ${durationMs}, ${version},
                  case when ${userId}::uuid is null then null
                       else public.serving_route_for(${userId}::uuid) end,
                  ${source}, ${items.length}, coalesce(${servedAt}::timestamptz, now()))
          returning route, created_at
        )
        insert into public.served_recommendations
          (request_id, user_id, video_id, position, score, model_version, source, reason, route,
           created_at)
        select ${requestId}::uuid, ${userId}::uuid, t.video_id, t.position, t.score,
               ${version}, ${source}, t.reason, request.route, request.created_at
        from request,
             unnest(${items.map((item) => item.video_id)}::bigint[],
                    ${items.map((_, i) => i + 1)}::smallint[],
                    ${items.map((item) => item.score)}::real[],
                    ${items.map((item) => item.reason)}::text[])
             as t(video_id, position, score, reason)`;
    } catch (error) {
      console.error(
        `${FUNCTION_NAME}: could not log request ${requestId}`,
        error,
      );
    }
  }

  return async function handler(req: Request): Promise<Response> {
    if (req.method === "OPTIONS") {
      return new Response(null, { status: 204, headers: CORS_HEADERS });
    }
    if (req.method !== "GET" && req.method !== "POST") {
      return json({ error: "method not allowed" }, 405, {
        Allow: "GET, POST, OPTIONS",
      });
    }
    const started = performance.now();
    const requestId = crypto.randomUUID();
    let userId: string | null = null;
    let response: RecommendationResponse | null = null;
    const answer = await (async (): Promise<Response> => {
      try {
        ({ userId } = await verifyAuthorization(
          req.headers.get("Authorization"),
        ));
        const params = await parseRequestParams(req);
        response = await recommend(userId, params, requestId);
        return json(response);
      } catch (error) {
        return errorResponse(error, requestId);
      }
    })();
    waitUntil(logRequest({
      requestId,
      userId,
      status: answer.status,
      durationMs: performance.now() - started,
      response,
    }));
    return answer;
  };
}

/** The answer to a request that failed: 401, 400, 503 or 500. */
function errorResponse(error: unknown, requestId: string): Response {
  if (error instanceof AuthError) {
    return json({ error: "unauthorized", detail: error.message }, 401, {
      "WWW-Authenticate": `Bearer error="invalid_token"`,
    });
  }
  if (error instanceof ParamsError) {
    return json({ error: "invalid parameters", details: error.details }, 400);
  }
  if (error instanceof KeySetUnavailable) {
    console.error(`${FUNCTION_NAME}: request ${requestId}`, error);
    return json({ error: "token keys unavailable, try again" }, 503, {
      "Retry-After": "30",
    });
  }
  if (sqlState(error) === "P0002") {
    return json(
      { error: "no model version is serving recommendations yet" },
      503,
      { "Retry-After": "60" },
    );
  }
  console.error(`${FUNCTION_NAME}: request ${requestId} failed`, error);
  return json({ error: "internal error", request_id: requestId }, 500);
}

// -- the deployed entry point: configured from the environment on first use --------------------

let fromEnv:
  | { handler: (req: Request) => Promise<Response>; sql: Sql }
  | undefined;

function connect(): { handler: (req: Request) => Promise<Response>; sql: Sql } {
  const url = Deno.env.get(ENV.databaseUrl);
  const problems: string[] = [];
  if (!url) problems.push(`${ENV.databaseUrl} not set`);
  let tokens: TokenOptions = {};
  try {
    tokens = tokenOptionsFromEnv((name) => Deno.env.get(name));
  } catch (error) {
    problems.push((error as Error).message);
  }
  let realtime: RealtimeOptions = {};
  try {
    realtime = realtimeOptionsFromEnv((name) => Deno.env.get(name));
  } catch (error) {
    problems.push((error as Error).message);
  }
  if (problems.length > 0) {
    throw new Error(`${FUNCTION_NAME}: ${problems.join("; ")}`);
  }
  // prepare: false also works through Supavisor's transaction-mode pooler.
  const sql = postgres(url!, {
    max: 4,
    prepare: false,
    idle_timeout: 30,
    connect_timeout: 10,
    connection: { application_name: FUNCTION_NAME },
  });
  try {
    return { handler: createHandler({ sql, ...tokens, ...realtime }), sql };
  } catch (error) {
    void sql.end({ timeout: 1 });
    throw new Error(
      `${FUNCTION_NAME}: the token settings are not usable: ${
        (error as Error).message
      }`,
    );
  }
}

/** The handler Deno.serve runs: a pool on SUPABASE_DB_URL and the token and real-time settings
 * of the environment, made on first use. */
export async function handler(req: Request): Promise<Response> {
  try {
    fromEnv ??= connect();
  } catch (error) {
    console.error(error);
    return json({ error: "the function is not configured" }, 500);
  }
  return await fromEnv.handler(req);
}

/** Closes the pool `handler` opened (tests; a deployed function never needs it). */
export async function closeHandler(): Promise<void> {
  const current = fromEnv;
  fromEnv = undefined;
  await current?.sql.end({ timeout: 5 });
}

// Served by Supabase, the options do not matter; run by hand (`deno run ... index.ts`), HOST and
// PORT say where it listens (the simulator binds it to 127.0.0.1).
if (import.meta.main) {
  Deno.serve({
    hostname: Deno.env.get("HOST") ?? "0.0.0.0",
    port: Number(Deno.env.get("PORT") ?? "8000"),
  }, handler);
}
