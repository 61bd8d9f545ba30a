import assert from "node:assert/strict";
import {
  type MmrCandidate,
  mmrSelect,
  similarityMatrix,
  symmetricSimilarity,
} from "./mmr.ts";

const NO_CAPS = { maxPerMaker: 100, maxPerGenre: 100 };

function plain(relevance: number[]): MmrCandidate[] {
  return relevance.map((r, i) => ({
    relevance: r,
    maker: `maker${i}`,
    genres: [`genre${i}`],
  }));
}

/** A symmetric matrix with 1 on the diagonal from the upper triangle's entries. */
function symmetric(n: number, pairs: Record<string, number>): number[][] {
  const m = Array.from(
    { length: n },
    (_, i) => Array.from({ length: n }, (_, j) => +(i === j)),
  );
  for (const [key, value] of Object.entries(pairs)) {
    const [i, j] = key.split(",").map(Number);
    m[i][j] = m[j][i] = value;
  }
  return m;
}

// Three candidates: 0 and 1 near-duplicates, 2 different and less relevant.
const THREE = plain([0.9, 0.85, 0.5]);
const THREE_SIM = symmetric(3, { "0,1": 0.95, "0,2": 0.1, "1,2": 0.2 });

Deno.test("hand-computed: diversity moves the near-duplicate down", () => {
  // lambda 0.5: first 0 (0.45 > 0.425 > 0.25); then 1: 0.425 - 0.475 = -0.05, 2: 0.25 - 0.05 =
  // 0.2 -> 2; then 1.
  assert.deepEqual(
    mmrSelect(THREE, THREE_SIM, { limit: 3, lambda: 0.5, ...NO_CAPS }),
    [0, 2, 1],
  );
  // lambda 0.9: 1: 0.765 - 0.095 = 0.67 beats 2: 0.45 - 0.01 = 0.44 -> relevance wins.
  assert.deepEqual(
    mmrSelect(THREE, THREE_SIM, { limit: 3, lambda: 0.9, ...NO_CAPS }),
    [0, 1, 2],
  );
  // lambda 0: the first pick is a tie at 0 (earliest wins), then the least similar.
  assert.deepEqual(
    mmrSelect(THREE, THREE_SIM, { limit: 3, lambda: 0, ...NO_CAPS }),
    [0, 2, 1],
  );
  assert.deepEqual(
    mmrSelect(THREE, THREE_SIM, { limit: 2, lambda: 0.5, ...NO_CAPS }),
    [0, 2],
  );
});

Deno.test("hand-computed: the redundancy term is the maximum over all picks", () => {
  // 3 is close to 0 (0.9) but far from 1 (0.0): after picking 0 and 1 its redundancy is 0.9.
  const candidates = plain([1.0, 0.2, 0.8, 0.75]);
  const sim = symmetric(4, {
    "0,1": 0.0,
    "0,2": 0.5,
    "0,3": 0.9,
    "1,2": 0.6,
    "1,3": 0.0,
    "2,3": 0.1,
  });
  // lambda 0.5: pick 0. Then 1: 0.1 - 0 = 0.1; 2: 0.4 - 0.25 = 0.15; 3: 0.375 - 0.45 < 0 -> 2.
  // Then 1: 0.1 - 0.5 * 0.6 = -0.2; 3: 0.375 - 0.5 * 0.9 = -0.075 -> 3. Then 1.
  assert.deepEqual(
    mmrSelect(candidates, sim, { limit: 4, lambda: 0.5, ...NO_CAPS }),
    [0, 2, 3, 1],
  );
});

Deno.test("lambda 1 is the relevance order, whatever the similarities", () => {
  const relevance = [0.3, 0.9, 0.1, 0.7, 0.5];
  const sim = symmetric(5, { "1,3": 0.99, "1,4": 0.98, "3,4": 0.97 });
  assert.deepEqual(
    mmrSelect(plain(relevance), sim, { limit: 5, lambda: 1, ...NO_CAPS }),
    [1, 3, 4, 0, 2],
  );
  // A random case against a stable sort by relevance.
  let seed = 7;
  const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  const n = 60;
  const scores = Array.from(
    { length: n },
    () => Math.round(random() * 20) / 20,
  ); // many ties
  const matrix = Array.from(
    { length: n },
    () => Array.from({ length: n }, random),
  );
  const expected = [...scores.keys()].sort((a, b) =>
    scores[b] - scores[a] || a - b
  );
  assert.deepEqual(
    mmrSelect(plain(scores), matrix, { limit: n, lambda: 1, ...NO_CAPS }),
    expected,
  );
});

Deno.test("ties go to the earlier candidate", () => {
  const same = plain([0.5, 0.5, 0.5]);
  const flat = symmetric(3, { "0,1": 0.2, "0,2": 0.2, "1,2": 0.2 });
  assert.deepEqual(
    mmrSelect(same, flat, { limit: 3, lambda: 0.7, ...NO_CAPS }),
    [0, 1, 2],
  );
  assert.deepEqual(
    mmrSelect(plain([0.2, 0.9, 0.9]), flat, {
      limit: 3,
      lambda: 1,
      ...NO_CAPS,
    }),
    [1, 2, 0],
  );
});

Deno.test("the maker cap holds: fewer items rather than a broken cap", () => {
  const candidates: MmrCandidate[] = [
    { relevance: 0.9, maker: "A", genres: [] },
    { relevance: 0.8, maker: "A", genres: [] },
    { relevance: 0.7, maker: "A", genres: [] },
    { relevance: 0.6, maker: "B", genres: [] },
    { relevance: 0.5, maker: null, genres: [] }, // no maker: no maker cap
    { relevance: 0.4, maker: null, genres: [] },
  ];
  const sim = symmetric(6, {});
  const picked = mmrSelect(candidates, sim, {
    limit: 6,
    lambda: 1,
    maxPerMaker: 2,
    maxPerGenre: 5,
  });
  assert.deepEqual(picked, [0, 1, 3, 4, 5]);
  assert.deepEqual(
    mmrSelect(candidates.slice(0, 3), symmetric(3, {}), {
      limit: 3,
      lambda: 0.5,
      maxPerMaker: 1,
      maxPerGenre: 5,
    }),
    [0],
  );
});

Deno.test("the genre cap holds, and a video counts for each of its genres", () => {
  const candidates: MmrCandidate[] = [
    { relevance: 0.9, maker: "a", genres: ["x", "y"] },
    { relevance: 0.8, maker: "b", genres: ["y"] }, // y is full after 0
    { relevance: 0.7, maker: "c", genres: ["x"] }, // x is full after 0
    { relevance: 0.6, maker: "d", genres: ["z", "z"] }, // a genre listed twice counts once
    { relevance: 0.5, maker: "e", genres: ["z"] },
    { relevance: 0.4, maker: "f", genres: [] },
  ];
  const options = { limit: 6, lambda: 1, maxPerMaker: 3, maxPerGenre: 1 };
  assert.deepEqual(mmrSelect(candidates, symmetric(6, {}), options), [0, 3, 5]);
  const two = { ...options, maxPerGenre: 2 };
  assert.deepEqual(mmrSelect(candidates, symmetric(6, {}), two), [
    0,
    1,
    2,
    3,
    4,
    5,
  ]);
  // y is full after the first pick, so the x-and-y video no longer fits; the x video does.
  const first: MmrCandidate[] = [
    { relevance: 0.9, maker: "b", genres: ["y"] },
    { relevance: 0.8, maker: "a", genres: ["x", "y"] },
    { relevance: 0.7, maker: "c", genres: ["x"] },
  ];
  assert.deepEqual(
    mmrSelect(first, symmetric(3, {}), { ...options, limit: 3 }),
    [0, 2],
  );
});

Deno.test("caps hold on random candidates for every lambda", () => {
  let seed = 11;
  const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  const makers = ["m1", "m2", "m3", "m4", null];
  const genres = ["g1", "g2", "g3", "g4", "g5", "g6"];
  for (let round = 0; round < 30; round++) {
    const n = 80;
    const candidates: MmrCandidate[] = Array.from({ length: n }, () => ({
      relevance: random(),
      maker: makers[Math.floor(random() * makers.length)],
      genres: genres.filter(() => random() < 0.3),
    }));
    const matrix = Array.from(
      { length: n },
      () => Array.from({ length: n }, random),
    );
    const options = {
      limit: 1 + Math.floor(random() * 40),
      lambda: round % 3 === 0 ? 1 : random(),
      maxPerMaker: 1 + Math.floor(random() * 4),
      maxPerGenre: 1 + Math.floor(random() * 5),
    };
    const picked = mmrSelect(candidates, matrix, options);
    assert.ok(picked.length <= options.limit);
    assert.equal(new Set(picked).size, picked.length, "no candidate twice");
    const perMaker = new Map<string, number>();
    const perGenre = new Map<string, number>();
    for (const i of picked) {
      const { maker } = candidates[i];
      if (maker) perMaker.set(maker, (perMaker.get(maker) ?? 0) + 1);
      for (const g of new Set(candidates[i].genres)) {
        perGenre.set(g, (perGenre.get(g) ?? 0) + 1);
      }
    }
    assert.ok(
      [...perMaker.values()].every((k) => k <= options.maxPerMaker),
      "maker cap",
    );
    assert.ok(
      [...perGenre.values()].every((k) => k <= options.maxPerGenre),
      "genre cap",
    );
    // Greedy and strict: a candidate left out either hit a cap or the list is full.
    if (picked.length < options.limit) {
      for (let i = 0; i < n; i++) {
        if (picked.includes(i)) continue;
        const { maker } = candidates[i];
        const blocked =
          (maker != null && perMaker.get(maker) === options.maxPerMaker) ||
          candidates[i].genres.some((g) =>
            perGenre.get(g) === options.maxPerGenre
          );
        assert.ok(blocked, `candidate ${i} fits every cap but was not picked`);
      }
    }
  }
});

Deno.test("edge cases: no candidates, limit larger than the pool, bad input", () => {
  assert.deepEqual(
    mmrSelect([], [], { limit: 5, lambda: 0.7, ...NO_CAPS }),
    [],
  );
  assert.deepEqual(
    mmrSelect(THREE, THREE_SIM, { limit: 10, lambda: 1, ...NO_CAPS }),
    [0, 1, 2],
  );
  assert.throws(
    () => mmrSelect(THREE, THREE_SIM, { limit: 3, lambda: 1.5, ...NO_CAPS }),
    RangeError,
  );
  assert.throws(
    () =>
      mmrSelect(THREE, THREE_SIM.slice(0, 2), {
        limit: 3,
        lambda: 0.5,
        ...NO_CAPS,
      }),
    RangeError,
  );
});

Deno.test("symmetricSimilarity mirrors the upper triangle, 1 on the diagonal", () => {
  assert.deepEqual(
    symmetricSimilarity([[0.95, 0.1], [0.2], []]),
    THREE_SIM,
  );
  assert.deepEqual(symmetricSimilarity([[]]), [[1]]);
  assert.deepEqual(symmetricSimilarity([]), []);
});

Deno.test("symmetricSimilarity rejects a row of the wrong length", () => {
  assert.throws(
    () => symmetricSimilarity([[0.95, 0.1], [0.2, 0.3], []]),
    /row 1 of the upper triangle must hold 1 similarities, got 2/,
  );
  assert.throws(
    () => symmetricSimilarity([[0.95], [], []]),
    /row 0 of the upper triangle must hold 2 similarities, got 1/,
  );
});

Deno.test("MMR over the mirrored triangle picks as over the whole matrix", () => {
  // 30 candidates, a random symmetric matrix (a fixed-seed generator), few makers and genres
  // so the caps bind: every lambda and cap picks the same from its upper triangle.
  let seed = 7;
  const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
  const n = 30;
  const candidates: MmrCandidate[] = Array.from({ length: n }, (_, i) => ({
    relevance: random(),
    maker: `maker${i % 4}`,
    genres: [`genre${i % 3}`, `genre${(i * 7) % 5}`],
  }));
  const whole = Array.from({ length: n }, () => new Array<number>(n).fill(1));
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      whole[i][j] = whole[j][i] = 2 * random() - 1;
    }
  }
  const upper = whole.map((row, i) => row.slice(i + 1));
  for (const lambda of [0, 0.3, 0.7, 1]) {
    for (const [maxPerMaker, maxPerGenre] of [[100, 100], [2, 3], [1, 2]]) {
      const options = { limit: 12, lambda, maxPerMaker, maxPerGenre };
      assert.deepEqual(
        mmrSelect(candidates, symmetricSimilarity(upper), options),
        mmrSelect(candidates, whole, options),
      );
    }
  }
});

Deno.test("similarityMatrix reads the triangle or, before the migration, the whole matrix", () => {
  const triangle = [[0.95, 0.1], [0.2], []];
  assert.deepEqual(similarityMatrix(triangle), THREE_SIM);
  assert.deepEqual(similarityMatrix(THREE_SIM), THREE_SIM);
  assert.deepEqual(similarityMatrix([[]]), [[1]]);
  assert.deepEqual(similarityMatrix([[1]]), [[1]]);
  assert.throws(
    () => similarityMatrix([[1, 0.95, 0.1], [0.2], []]),
    /row 0 of the upper triangle must hold 2 similarities, got 3/,
  );
});
