// The request parameters of enhanced_two_tower_recommendations, from a GET query string or a
// POST JSON body. Every problem is collected, so one 400 answer lists them all.
//
//   GET  ...?limit=10&genres=ドラマ,コメディ&genres=旅行&exclude=3,7&mmr_lambda=0.5
//   POST {"limit": 10, "genres": ["ドラマ"], "exclude": [3, 7], "max_per_maker": 2}
//
// In a query string a list is comma-separated, repeated, or both; in a body it is a JSON array.
//
// No string value may carry a control character (C0 including tab and newline, DEL, C1), a bidi
// embedding/override/isolate (U+202A-U+202E, U+2066-U+2069) or a zero-width character
// (U+200B-U+200D, U+2060, U+FEFF), nor be ill-formed UTF-16 (a lone surrogate): such a value is
// refused with a problem naming its parameter. (PostgreSQL refuses NUL in text outright, and the
// others only make names that look alike but never match.) A POST body is read as a stream and
// refused as soon as more than LIMITS.bodyBytes have arrived, whatever Content-Length says.

export interface RecommendationParams {
  /** How many items to return, 1..100. */
  limit: number;
  /** Only videos with at least one of these genres; null: no genre filter. */
  genres: string[] | null;
  /** Only videos of one of these makers; null: no maker filter. */
  makers: string[] | null;
  /** Video ids never to return (beyond the user's own decisions, always excluded). */
  exclude: number[];
  /** MMR trade-off: 1 = relevance only, 0 = diversity only. */
  mmrLambda: number;
  /** At most this many items of one maker. */
  maxPerMaker: number;
  /** At most this many items of one genre (a video counts for each of its genres). */
  maxPerGenre: number;
}

export const DEFAULTS: Readonly<RecommendationParams> = Object.freeze({
  limit: 20,
  genres: null,
  makers: null,
  exclude: [],
  mmrLambda: 0.7,
  maxPerMaker: 3,
  maxPerGenre: 5,
});

export const LIMITS = Object.freeze({
  limit: { min: 1, max: 100 },
  listItems: 20, // genres, makers
  listItemChars: 100,
  exclude: 1000,
  cap: { min: 1, max: 100 }, // max_per_maker, max_per_genre
  bodyBytes: 64 * 1024,
});

/** At most this many problems are listed, then how many more there are: a request with
 * thousands of unknown names gets a short answer, not one many times its own size. */
export const MAX_DETAILS = 20;

/** Invalid parameters: `details` lists every problem, one sentence each (the first
 * MAX_DETAILS of them, then a count of the rest). */
export class ParamsError extends Error {
  readonly details: string[];

  constructor(details: string[]) {
    const shown = details.length > MAX_DETAILS
      ? [
        ...details.slice(0, MAX_DETAILS),
        `and ${details.length - MAX_DETAILS} more problems`,
      ]
      : details;
    super(`invalid parameters: ${shown.join("; ")}`);
    this.name = "ParamsError";
    this.details = shown;
  }
}

const NAMES = [
  "limit",
  "genres",
  "makers",
  "exclude",
  "mmr_lambda",
  "max_per_maker",
  "max_per_genre",
] as const;
type Name = typeof NAMES[number];
const LISTS: ReadonlySet<Name> = new Set(["genres", "makers", "exclude"]);

/** Control characters (general category Cc: C0 U+0000-U+001F, DEL and C1 U+007F-U+009F). */
const CONTROL = /\p{Cc}/u;
/** Bidi embeddings, overrides and isolates. */
const BIDI = /[\u202a-\u202e\u2066-\u2069]/u;
/** Zero-width space, joiners, word joiner and the byte order mark (zero-width no-break space). */
const ZERO_WIDTH = /[\u200b-\u200d\u2060\ufeff]/u;
/** Everything `show` escapes, so an error message never carries an invisible character. */
const INVISIBLE =
  /[\p{Cc}\u202a-\u202e\u2066-\u2069\u200b-\u200d\u2060\ufeff]/gu;

const codePoint = (char: string) =>
  `U+${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;

/** A value for an error message: quoted, invisible characters escaped, and cut short so an
 * error never echoes megabytes. */
function show(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  text = text.replace(
    INVISIBLE,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

/** The problem with the first string in `raw` (a string, or strings inside arrays and objects)
 * that has a forbidden character, or undefined when there is none. */
function forbiddenCharacter(name: string, raw: unknown): string | undefined {
  const stack: unknown[] = [raw];
  while (stack.length > 0) {
    const value = stack.pop();
    if (typeof value === "string") {
      const control = CONTROL.exec(value)?.[0];
      if (control !== undefined) {
        return `${name}: must not contain control characters, found ${
          codePoint(control)
        }`;
      }
      const bidi = BIDI.exec(value)?.[0];
      if (bidi !== undefined) {
        return `${name}: must not contain bidi control characters, found ${
          codePoint(bidi)
        }`;
      }
      const zeroWidth = ZERO_WIDTH.exec(value)?.[0];
      if (zeroWidth !== undefined) {
        return `${name}: must not contain zero-width characters, found ${
          codePoint(zeroWidth)
        }`;
      }
      if (!value.isWellFormed()) {
        return `${name}: must be well-formed Unicode, found a lone surrogate`;
      }
    } else if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) stack.push(value[i]);
    } else if (typeof value === "object" && value !== null) {
      stack.push(...Object.keys(value), ...Object.values(value));
    }
  }
  return undefined;
}

const INTEGER = /^[0-9]+$/;
const DECIMAL = /^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$/;

// Each reader takes the raw value: a string from a query string (`text`), else a JSON value,
// which must have the JSON type (a number for a number), and returns the parsed value or
// pushes its problems.

/** A query string's number: the number when `raw` is one in `pattern`'s syntax, else `raw`. */
function fromText(raw: unknown, text: boolean, pattern: RegExp): unknown {
  return text && typeof raw === "string" && pattern.test(raw.trim())
    ? Number(raw.trim())
    : raw;
}

function readInteger(
  name: Name,
  raw: unknown,
  text: boolean,
  range: { min: number; max: number },
  problems: string[],
): number | undefined {
  const { min, max } = range;
  const value = fromText(raw, text, INTEGER);
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < min ||
    value > max
  ) {
    problems.push(
      `${name}: must be an integer from ${min} to ${max}, got ${show(raw)}`,
    );
    return undefined;
  }
  return value;
}

function readFraction(
  name: Name,
  raw: unknown,
  text: boolean,
  problems: string[],
): number | undefined {
  const value = fromText(raw, text, DECIMAL);
  if (
    typeof value !== "number" || !Number.isFinite(value) || value < 0 ||
    value > 1
  ) {
    problems.push(`${name}: must be a number from 0 to 1, got ${show(raw)}`);
    return undefined;
  }
  return value;
}

function readNames(
  name: Name,
  items: unknown[],
  problems: string[],
): string[] | null {
  if (items.length > LIMITS.listItems) {
    problems.push(
      `${name}: at most ${LIMITS.listItems} values, got ${items.length}`,
    );
    return null;
  }
  const values: string[] = [];
  for (const item of items) {
    if (typeof item !== "string") {
      problems.push(`${name}: every value must be a string, got ${show(item)}`);
      continue;
    }
    const value = item.trim();
    if (value.length === 0) {
      problems.push(`${name}: values must not be empty`);
    } else if ([...value].length > LIMITS.listItemChars) {
      problems.push(
        `${name}: values must be at most ${LIMITS.listItemChars} characters, got ${
          show(value)
        }`,
      );
    } else if (!values.includes(value)) {
      values.push(value);
    }
  }
  return values.length > 0 ? values : null;
}

function readIds(
  name: Name,
  items: unknown[],
  text: boolean,
  problems: string[],
): number[] {
  if (items.length > LIMITS.exclude) {
    problems.push(
      `${name}: at most ${LIMITS.exclude} video ids, got ${items.length}`,
    );
    return [];
  }
  const ids: number[] = [];
  for (const item of items) {
    const value = fromText(item, text, INTEGER);
    if (
      typeof value !== "number" || !Number.isSafeInteger(value) || value < 1
    ) {
      problems.push(
        `${name}: video ids must be positive integers, got ${show(item)}`,
      );
    } else {
      ids.push(value);
    }
  }
  return ids;
}

/** Parameters from name -> raw value (lists as arrays); `text`: the values are query strings. */
function fromEntries(
  entries: Map<string, unknown>,
  text: boolean,
  problems: string[],
): RecommendationParams {
  const params: RecommendationParams = { ...DEFAULTS, exclude: [] };
  for (const key of entries.keys()) {
    if (!(NAMES as readonly string[]).includes(key)) {
      problems.push(
        `${show(key)}: unknown parameter (known: ${NAMES.join(", ")})`,
      );
    }
  }
  for (const name of NAMES) {
    if (!entries.has(name)) continue;
    const raw = entries.get(name);
    if (raw === null) continue; // JSON null: the default
    const forbidden = forbiddenCharacter(name, raw);
    if (forbidden !== undefined) {
      problems.push(forbidden);
      continue;
    }
    if (LISTS.has(name)) {
      if (!Array.isArray(raw)) {
        problems.push(`${name}: must be a list, got ${show(raw)}`);
        continue;
      }
      if (name === "exclude") {
        params.exclude = readIds(name, raw, text, problems);
      } else {params[name as "genres" | "makers"] = readNames(
          name,
          raw,
          problems,
        );}
      continue;
    }
    switch (name) {
      case "limit":
        params.limit = readInteger(name, raw, text, LIMITS.limit, problems) ??
          params.limit;
        break;
      case "mmr_lambda":
        params.mmrLambda = readFraction(name, raw, text, problems) ??
          params.mmrLambda;
        break;
      case "max_per_maker":
        params.maxPerMaker =
          readInteger(name, raw, text, LIMITS.cap, problems) ??
            params.maxPerMaker;
        break;
      case "max_per_genre":
        params.maxPerGenre =
          readInteger(name, raw, text, LIMITS.cap, problems) ??
            params.maxPerGenre;
        break;
    }
  }
  return params;
}

function check(
  params: RecommendationParams,
  problems: string[],
): RecommendationParams {
  if (problems.length > 0) throw new ParamsError(problems);
  return params;
}

/** Parameters from a query string. Lists: `genres=a,b`, `genres=a&genres=b`, or both. */
export function parseQuery(search: URLSearchParams): RecommendationParams {
  const problems: string[] = [];
  const entries = new Map<string, unknown>();
  for (const key of new Set(search.keys())) {
    const values = search.getAll(key);
    if (LISTS.has(key as Name)) {
      entries.set(key, values.flatMap((value) => value.split(",")));
    } else if (values.length > 1) {
      problems.push(`${key}: given ${values.length} times, expected once`);
    } else {
      entries.set(key, values[0]);
    }
  }
  return check(fromEntries(entries, true, problems), problems);
}

/** Parameters from a parsed JSON body: an object (or nothing, for all defaults). */
export function parseBody(body: unknown): RecommendationParams {
  const problems: string[] = [];
  if (body === undefined || body === null) return { ...DEFAULTS, exclude: [] };
  if (typeof body !== "object" || Array.isArray(body)) {
    throw new ParamsError([`body: must be a JSON object, got ${show(body)}`]);
  }
  const entries = new Map(Object.entries(body as Record<string, unknown>));
  return check(fromEntries(entries, false, problems), problems);
}

/** The body of `req` as text, read as a stream that is cancelled as soon as more than `limit`
 * bytes have arrived: a declared Content-Length over the limit is refused before reading, and
 * a missing or lying one cannot make the whole body be buffered. */
export async function readBodyText(
  req: Request,
  limit: number = LIMITS.bodyBytes,
): Promise<string> {
  const tooLarge = () => new ParamsError([`body: larger than ${limit} bytes`]);
  const declared = req.headers.get("content-length");
  if (declared !== null && /^\s*[0-9]+\s*$/.test(declared)) {
    if (Number(declared) > limit) {
      await req.body?.cancel().catch(() => {});
      throw tooLarge();
    }
  }
  if (req.body === null) return "";
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        await reader.cancel().catch(() => {});
        throw tooLarge();
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ParamsError(["body: not valid UTF-8"]);
  }
}

/** The parameters of a GET (query string) or POST (JSON body, no query string) request. */
export async function parseRequestParams(
  req: Request,
): Promise<RecommendationParams> {
  const url = new URL(req.url);
  if (req.method === "GET") return parseQuery(url.searchParams);
  if (url.search.length > 1) {
    throw new ParamsError([
      "query string: not accepted with POST; send the parameters as JSON",
    ]);
  }
  const text = await readBodyText(req);
  if (text.trim() === "") return parseBody(undefined);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new ParamsError(["body: not valid JSON"]);
  }
  return parseBody(body);
}
