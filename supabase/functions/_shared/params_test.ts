import assert from "node:assert/strict";
import {
  DEFAULTS,
  LIMITS,
  MAX_DETAILS,
  ParamsError,
  parseBody,
  parseQuery,
  parseRequestParams,
  type RecommendationParams,
} from "./params.ts";

const query = (text: string) => parseQuery(new URLSearchParams(text));

/** The details of the ParamsError `fn` throws. */
function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (error) {
    assert.ok(
      error instanceof ParamsError,
      `expected a ParamsError, got ${error}`,
    );
    return error.details;
  }
  assert.fail("expected a ParamsError, nothing was thrown");
}

async function requestProblems(req: Request): Promise<string[]> {
  try {
    await parseRequestParams(req);
  } catch (error) {
    assert.ok(
      error instanceof ParamsError,
      `expected a ParamsError, got ${error}`,
    );
    return error.details;
  }
  assert.fail("expected a ParamsError, nothing was thrown");
}

const EVERYTHING: RecommendationParams = {
  limit: 10,
  genres: ["ドラマ", "コメディ", "旅行"],
  makers: ["maker a"],
  exclude: [1, 2, 3],
  mmrLambda: 0.5,
  maxPerMaker: 2,
  maxPerGenre: 4,
};

Deno.test("defaults: an empty query string, an empty body, {} and null", async () => {
  const expected = {
    limit: 20,
    genres: null,
    makers: null,
    exclude: [],
    mmrLambda: 0.7,
    maxPerMaker: 3,
    maxPerGenre: 5,
  };
  assert.deepEqual({ ...DEFAULTS }, expected);
  assert.deepEqual(query(""), expected);
  assert.deepEqual(parseBody({}), expected);
  assert.deepEqual(parseBody(null), expected);
  assert.deepEqual(parseBody(undefined), expected);
  assert.deepEqual(parseBody({ limit: null, genres: null }), expected);
  const post = (body?: string) =>
    new Request("http://x/f", { method: "POST", body });
  assert.deepEqual(await parseRequestParams(post()), expected);
  assert.deepEqual(await parseRequestParams(post("  ")), expected);
  assert.deepEqual(await parseRequestParams(post("{}")), expected);
  assert.deepEqual(
    await parseRequestParams(new Request("http://x/f")),
    expected,
  );
});

Deno.test("a query string: comma-separated and repeated lists, numbers as text", () => {
  assert.deepEqual(
    query(
      "limit=10&genres=ドラマ,コメディ&genres=旅行&makers=maker%20a&exclude=1,2&exclude=3" +
        "&mmr_lambda=0.5&max_per_maker=2&max_per_genre=4",
    ),
    EVERYTHING,
  );
  // Whitespace around values is dropped, repeated names are kept once.
  assert.deepEqual(query("genres=%20a%20,b,a&exclude=%207").genres, ["a", "b"]);
  assert.deepEqual(query("exclude=%207").exclude, [7]);
  assert.equal(query("mmr_lambda=1").mmrLambda, 1);
  assert.equal(query("mmr_lambda=0").mmrLambda, 0);
  assert.equal(query("mmr_lambda=.25").mmrLambda, 0.25);
  assert.equal(query("limit=007").limit, 7);
});

Deno.test("a JSON body: lists as arrays, numbers as numbers", async () => {
  const body = {
    limit: 10,
    genres: ["ドラマ", "コメディ", "旅行"],
    makers: ["maker a"],
    exclude: [1, 2, 3],
    mmr_lambda: 0.5,
    max_per_maker: 2,
    max_per_genre: 4,
  };
  assert.deepEqual(parseBody(body), EVERYTHING);
  const req = new Request("http://x/f", {
    method: "POST",
    body: JSON.stringify(body),
  });
  assert.deepEqual(await parseRequestParams(req), EVERYTHING);
  // An empty list is no filter; a comma inside a JSON string is part of the name.
  assert.equal(parseBody({ genres: [] }).genres, null);
  assert.deepEqual(parseBody({ makers: ["a, b"] }).makers, ["a, b"]);
});

Deno.test("bounds: the edges are accepted", () => {
  assert.equal(query("limit=1").limit, 1);
  assert.equal(query("limit=100").limit, 100);
  assert.equal(query("max_per_maker=1&max_per_genre=100").maxPerGenre, 100);
  const twenty = Array.from({ length: 20 }, (_, i) => `g${i}`);
  assert.deepEqual(parseBody({ genres: twenty }).genres, twenty);
  const longest = "字".repeat(LIMITS.listItemChars); // characters, not bytes
  assert.deepEqual(parseBody({ makers: [longest] }).makers, [longest]);
  const ids = Array.from({ length: 1000 }, (_, i) => i + 1);
  assert.deepEqual(parseBody({ exclude: ids }).exclude, ids);
  assert.deepEqual(parseBody({ exclude: [Number.MAX_SAFE_INTEGER] }).exclude, [
    Number.MAX_SAFE_INTEGER,
  ]);
});

Deno.test("every invalid scalar is refused, in a query string and in a body", () => {
  // name, query string value, JSON body value (undefined: no body case), message
  const cases: [string, string, unknown, string][] = [
    ["limit", "0", 0, "limit: must be an integer from 1 to 100"],
    ["limit", "101", 101, "limit: must be an integer from 1 to 100"],
    ["limit", "1.5", 1.5, "limit: must be an integer from 1 to 100"],
    ["limit", "abc", "abc", "limit: must be an integer from 1 to 100"],
    ["limit", "", "", "limit: must be an integer from 1 to 100"],
    ["limit", "-3", -3, "limit: must be an integer from 1 to 100"],
    ["limit", "1e1", undefined, "limit: must be an integer from 1 to 100"],
    ["mmr_lambda", "-0.1", -0.1, "mmr_lambda: must be a number from 0 to 1"],
    ["mmr_lambda", "1.01", 1.01, "mmr_lambda: must be a number from 0 to 1"],
    ["mmr_lambda", "NaN", "NaN", "mmr_lambda: must be a number from 0 to 1"],
    [
      "mmr_lambda",
      "Infinity",
      1e400,
      "mmr_lambda: must be a number from 0 to 1",
    ],
    ["mmr_lambda", "", [], "mmr_lambda: must be a number from 0 to 1"],
    [
      "max_per_maker",
      "0",
      0,
      "max_per_maker: must be an integer from 1 to 100",
    ],
    [
      "max_per_maker",
      "101",
      101,
      "max_per_maker: must be an integer from 1 to 100",
    ],
    [
      "max_per_genre",
      "0",
      0,
      "max_per_genre: must be an integer from 1 to 100",
    ],
    [
      "max_per_genre",
      "x",
      { x: 1 },
      "max_per_genre: must be an integer from 1 to 100",
    ],
  ];
  for (const [name, text, json, message] of cases) {
    const fromQuery = problems(() =>
      query(`${name}=${encodeURIComponent(text)}`)
    );
    assert.equal(fromQuery.length, 1, `${name}=${text}: ${fromQuery}`);
    assert.ok(
      fromQuery[0].startsWith(message),
      `${name}=${text}: ${fromQuery[0]}`,
    );
    if (json === undefined) continue;
    const fromBody = problems(() => parseBody({ [name]: json }));
    assert.equal(
      fromBody.length,
      1,
      `${name}: ${JSON.stringify(json)}: ${fromBody}`,
    );
    assert.ok(
      fromBody[0].startsWith(message),
      `${name}: ${JSON.stringify(json)}: ${fromBody}`,
    );
  }
  // A body's numbers must be JSON numbers, not text; lists must be arrays.
  for (
    const [body, message] of [
      [{ limit: "10" }, "limit: must be an integer"],
      [{ mmr_lambda: "0.5" }, "mmr_lambda: must be a number"],
      [{ max_per_maker: true }, "max_per_maker: must be an integer"],
      [{ genres: "ドラマ" }, "genres: must be a list"],
      [{ exclude: 5 }, "exclude: must be a list"],
      [{ exclude: ["5"] }, "exclude: video ids must be positive integers"],
    ] as const
  ) {
    const found = problems(() => parseBody(body));
    assert.ok(
      found[0]?.startsWith(message),
      `${JSON.stringify(body)}: ${found}`,
    );
  }
});

Deno.test("every invalid list is refused", () => {
  const cases: [Record<string, unknown>, string][] = [
    [
      { genres: Array.from({ length: 21 }, (_, i) => `g${i}`) },
      "genres: at most 20 values",
    ],
    [
      { makers: Array.from({ length: 21 }, (_, i) => `m${i}`) },
      "makers: at most 20 values",
    ],
    [
      { genres: ["x".repeat(101)] },
      "genres: values must be at most 100 characters",
    ],
    [{ makers: ["a", ""] }, "makers: values must not be empty"],
    [{ makers: ["  "] }, "makers: values must not be empty"],
    [{ genres: [3] }, "genres: every value must be a string"],
    [{ genres: [null] }, "genres: every value must be a string"],
    [{ exclude: [0] }, "exclude: video ids must be positive integers"],
    [{ exclude: [-1] }, "exclude: video ids must be positive integers"],
    [{ exclude: [1.5] }, "exclude: video ids must be positive integers"],
    [{ exclude: [2 ** 53] }, "exclude: video ids must be positive integers"],
    [
      { exclude: Array.from({ length: 1001 }, (_, i) => i + 1) },
      "exclude: at most 1000",
    ],
  ];
  for (const [body, message] of cases) {
    const found = problems(() => parseBody(body));
    assert.equal(
      found.length,
      1,
      `${JSON.stringify(body).slice(0, 60)}: ${found}`,
    );
    assert.ok(found[0].startsWith(message), found[0]);
  }
  assert.ok(
    problems(() => query("genres="))[0].startsWith(
      "genres: values must not be empty",
    ),
  );
  assert.ok(
    problems(() => query("genres=a,,b"))[0].startsWith(
      "genres: values must not",
    ),
  );
  assert.ok(
    problems(() => query("exclude=1,x"))[0].startsWith(
      "exclude: video ids must",
    ),
  );
  assert.ok(
    problems(() => query("exclude="))[0].startsWith("exclude: video ids must"),
  );
  assert.ok(
    problems(() => query("exclude=1;drop table videos"))[0].startsWith(
      "exclude:",
    ),
  );
  // An error message never echoes a long value whole.
  const [long] = problems(() => parseBody({ genres: ["y".repeat(5000)] }));
  assert.ok(long.length < 200, long);
});

Deno.test("unknown and repeated parameters are refused; user_id is unknown", () => {
  assert.deepEqual(
    problems(() => query("user_id=00000000-0000-4000-8000-000000000001")),
    [
      '"user_id": unknown parameter (known: limit, genres, makers, exclude, mmr_lambda, ' +
      "max_per_maker, max_per_genre)",
    ],
  );
  assert.ok(
    problems(() => parseBody({ user_id: "x" }))[0].startsWith(
      '"user_id": unknown',
    ),
  );
  assert.ok(
    problems(() => parseBody({ Limit: 3 }))[0].startsWith('"Limit": unknown'),
  );
  assert.deepEqual(problems(() => query("limit=1&limit=2")), [
    "limit: given 2 times, expected once",
  ]);
});

Deno.test("every problem is listed at once", () => {
  const found = problems(() =>
    query(
      "limit=0&mmr_lambda=2&foo=1&exclude=x&genres=&max_per_maker=0&max_per_genre=0",
    )
  );
  assert.equal(found.length, 7, found.join("\n"));
  for (
    const name of [
      "limit",
      "mmr_lambda",
      "foo",
      "exclude",
      "genres",
      "max_per_maker",
    ]
  ) {
    assert.ok(found.some((p) => p.includes(name)), `${name} not in ${found}`);
  }
});

Deno.test("a body must be a JSON object, not too large, and POST takes no query string", async () => {
  for (const body of [[1, 2], "limit", 3, true]) {
    assert.ok(
      problems(() => parseBody(body))[0].startsWith(
        "body: must be a JSON object",
      ),
    );
  }
  const post = (body: string, url = "http://x/f") =>
    new Request(url, { method: "POST", body });
  assert.deepEqual(await requestProblems(post("{limit: 3}")), [
    "body: not valid JSON",
  ]);
  assert.deepEqual(await requestProblems(post("[]")), [
    "body: must be a JSON object, got []",
  ]);
  assert.deepEqual(await requestProblems(post("{}", "http://x/f?limit=3")), [
    "query string: not accepted with POST; send the parameters as JSON",
  ]);
  const huge = JSON.stringify({ genres: ["x".repeat(LIMITS.bodyBytes)] });
  assert.deepEqual(await requestProblems(post(huge)), [
    `body: larger than ${LIMITS.bodyBytes} bytes`,
  ]);
});

// -- forbidden characters ----------------------------------------------------------------------

const hex = (char: string) =>
  `U+${char.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
/** C0 (every one, tab and newline too), DEL, C1. */
const CONTROLS = [
  ...Array.from({ length: 0x20 }, (_, i) => String.fromCharCode(i)),
  "\u007f",
  ...Array.from({ length: 0x20 }, (_, i) => String.fromCharCode(0x80 + i)),
];
const BIDI = [
  "\u202a",
  "\u202b",
  "\u202c",
  "\u202d",
  "\u202e",
  "\u2066",
  "\u2067",
  "\u2068",
  "\u2069",
];
const ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"];
const KIND: [string[], string][] = [
  [CONTROLS, "must not contain control characters"],
  [BIDI, "must not contain bidi control characters"],
  [ZERO_WIDTH, "must not contain zero-width characters"],
];

Deno.test("control, bidi and zero-width characters in genres and makers: one problem naming the parameter", () => {
  assert.equal(CONTROLS.length, 65);
  for (const [chars, message] of KIND) {
    for (const char of chars) {
      for (const name of ["genres", "makers"]) {
        const expected = [`${name}: ${message}, found ${hex(char)}`];
        for (
          const value of [`a${char}b`, `${char}drama`, `drama${char}`, char]
        ) {
          assert.deepEqual(
            problems(() => query(`${name}=ok,${encodeURIComponent(value)}`)),
            expected,
            `${name}=${JSON.stringify(value)}`,
          );
          assert.deepEqual(
            problems(() => parseBody({ [name]: ["ok", value] })),
            expected,
            `${name}: ${JSON.stringify(value)}`,
          );
        }
      }
    }
  }
  // Several parameters at once: each is named, and other problems are still listed.
  assert.deepEqual(
    problems(() =>
      parseBody({ genres: ["a\u0000"], makers: ["b\u202e"], limit: 0 })
    ),
    [
      "limit: must be an integer from 1 to 100, got 0",
      "genres: must not contain control characters, found U+0000",
      "makers: must not contain bidi control characters, found U+202E",
    ],
  );
  // A lone surrogate (possible in JSON text) is not a name either.
  assert.deepEqual(problems(() => parseBody({ genres: ["\ud800x"] })), [
    "genres: must be well-formed Unicode, found a lone surrogate",
  ]);
});

Deno.test("control characters in any other parameter, in a query string or a body", () => {
  for (
    const char of ["\u0000", "\t", "\n", "\u007f", "\u0085", "\u202e", "\u200b"]
  ) {
    const message = KIND.find(([chars]) => chars.includes(char))![1];
    for (
      const [name, text, json] of [
        ["limit", `5${char}`, `5${char}`],
        ["mmr_lambda", `${char}0.5`, `0.5${char}`],
        ["exclude", `1,${char}2`, [1, `${char}2`]],
        ["max_per_maker", `${char}3`, `3${char}`],
        ["max_per_genre", `3${char}`, { [`k${char}`]: 1 }],
      ] as const
    ) {
      const expected = [`${name}: ${message}, found ${hex(char)}`];
      assert.deepEqual(
        problems(() => query(`${name}=${encodeURIComponent(text)}`)),
        expected,
        `${name}=${JSON.stringify(text)}`,
      );
      assert.deepEqual(
        problems(() => parseBody({ [name]: json })),
        expected,
        `${name}: ${JSON.stringify(json)}`,
      );
    }
  }
  // Whitespace that is not a control character is still trimmed as before.
  assert.deepEqual(query("limit=%205%20&genres=%20a%E3%80%80").genres, ["a"]);
  assert.equal(query("limit=%205%20").limit, 5);
});

Deno.test("ordinary names pass; an unknown name's invisible characters are escaped in the message", () => {
  const names = [
    "ドラマ",
    "コメディ・恋愛",
    "maker a",
    "Café",
    "🎬 film",
    "a,b",
  ];
  assert.deepEqual(parseBody({ genres: names }).genres, names);
  assert.deepEqual(parseBody({ makers: ["l\u00e9gende"] }).makers, [
    "légende",
  ]);
  const [unknown] = problems(() => parseBody({ "x\u202ey\u0000\u0085": 1 }));
  assert.ok(
    unknown.startsWith('"x\\u202ey\\u0000\\u0085": unknown parameter'),
    unknown,
  );
  assert.ok(!/[\p{Cc}\u202a-\u202e\u200b]/u.test(unknown), unknown);
});

// -- the body: read as a stream, never past the limit ------------------------------------------

const CHUNK = 16 * 1024;

/** A body that would be `total` bytes of JSON-ish text if read whole; `pulled` counts what was
 * read. */
function endless(total = 64 * 1024 * 1024) {
  const counter = { pulled: 0, cancelled: false };
  const filler = new TextEncoder().encode(" ".repeat(CHUNK));
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (counter.pulled >= total) return controller.close();
      counter.pulled += CHUNK;
      controller.enqueue(filler);
    },
    cancel() {
      counter.cancelled = true;
    },
  }, { highWaterMark: 0 }); // pulled only when read: `pulled` is what the reader took
  return { stream, counter };
}

const tooLarge = [`body: larger than ${LIMITS.bodyBytes} bytes`];

Deno.test("a 64 MiB body is refused after the first 64 KiB, whatever Content-Length says", async () => {
  assert.equal(LIMITS.bodyBytes, 65536);
  for (
    const headers of [
      {}, // no Content-Length (chunked)
      { "content-length": "100" }, // lying: far less than is sent
      { "content-length": "65536" }, // lying: exactly the limit
      { "content-length": "abc" }, // not a number
    ] as Record<string, string>[]
  ) {
    const { stream, counter } = endless();
    const found = await requestProblems(
      new Request("http://x/f", { method: "POST", body: stream, headers }),
    );
    assert.deepEqual(found, tooLarge, JSON.stringify(headers));
    // Read no further than the limit plus the chunk that crossed it.
    assert.ok(
      counter.pulled > LIMITS.bodyBytes &&
        counter.pulled <= LIMITS.bodyBytes + CHUNK,
      `${JSON.stringify(headers)}: pulled ${counter.pulled} bytes`,
    );
    assert.ok(counter.cancelled, "the stream was not cancelled");
  }
  // A declared length over the limit is refused before a single byte is read.
  const { stream, counter } = endless();
  assert.deepEqual(
    await requestProblems(
      new Request("http://x/f", {
        method: "POST",
        body: stream,
        headers: { "content-length": String(64 * 1024 * 1024) },
      }),
    ),
    tooLarge,
  );
  assert.equal(counter.pulled, 0);
});

Deno.test("a body of exactly the limit is read; one byte more is not; bytes must be UTF-8", async () => {
  const post = (body: BodyInit) =>
    new Request("http://x/f", { method: "POST", body });
  const json = '{"limit": 3}';
  const exact = json + " ".repeat(LIMITS.bodyBytes - json.length);
  assert.equal((await parseRequestParams(post(exact))).limit, 3);
  assert.deepEqual(await requestProblems(post(`${exact} `)), tooLarge);
  // Multi-byte characters count as bytes: 21,846 three-byte characters are 65,538 bytes.
  assert.deepEqual(
    await requestProblems(
      post(JSON.stringify({ genres: ["字".repeat(21846)] })),
    ),
    tooLarge,
  );
  assert.deepEqual(
    await requestProblems(post(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))),
    ["body: not valid UTF-8"],
  );
  // A leading byte order mark is dropped, as before.
  assert.equal((await parseRequestParams(post(`\ufeff${json}`))).limit, 3);
});

Deno.test("thousands of unknown names: the first problems, then how many more", () => {
  const names = Array.from({ length: 10_000 }, (_, i) => `x${i}=1`).join("&");
  const listed = problems(() => query(names));
  assert.equal(listed.length, MAX_DETAILS + 1);
  assert.ok(listed[0].startsWith('"x0": unknown parameter'), listed[0]);
  assert.equal(
    listed[MAX_DETAILS],
    `and ${10_000 - MAX_DETAILS} more problems`,
  );
});
