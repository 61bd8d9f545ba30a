// Greedy Maximal Marginal Relevance with per-maker and per-genre caps.
//
// Each step picks, among the candidates that still fit every cap, the one maximising
//
//     lambda * relevance(i) - (1 - lambda) * max_{j already picked} similarity(i, j)
//
// (the second term is 0 for the first pick). Ties go to the earlier candidate, so with
// lambda = 1 the result is the relevance order (earlier first among equal scores), capped.
// Caps hold strictly: a candidate whose maker already has `maxPerMaker` picks, or any of whose
// genres already has `maxPerGenre` picks (a video counts for each of its genres), is skipped,
// and the result is shorter than `limit` when too few candidates fit.

export interface MmrCandidate {
  relevance: number;
  maker: string | null;
  genres: readonly string[];
}

export interface MmrOptions {
  /** How many to pick at most. */
  limit: number;
  /** 1: relevance only; 0: only dissimilarity to what is already picked. */
  lambda: number;
  maxPerMaker: number;
  maxPerGenre: number;
}

/**
 * The indices of the picked candidates, in the order picked.
 * `similarity[i][j]` is the similarity of candidates i and j (n x n, any symmetric measure).
 */
export function mmrSelect(
  candidates: readonly MmrCandidate[],
  similarity: readonly (readonly number[])[],
  options: MmrOptions,
): number[] {
  const { limit, lambda, maxPerMaker, maxPerGenre } = options;
  const n = candidates.length;
  if (!(lambda >= 0 && lambda <= 1)) {
    throw new RangeError(`lambda must be 0..1, got ${lambda}`);
  }
  if (similarity.length !== n || similarity.some((row) => row.length !== n)) {
    throw new RangeError(`similarity must be ${n} x ${n}`);
  }
  const genres = candidates.map((c) => [...new Set(c.genres)]);
  const makerCount = new Map<string, number>();
  const genreCount = new Map<string, number>();
  const fits = (i: number): boolean => {
    const maker = candidates[i].maker;
    if (maker != null && (makerCount.get(maker) ?? 0) >= maxPerMaker) {
      return false;
    }
    return genres[i].every((g) => (genreCount.get(g) ?? 0) < maxPerGenre);
  };

  const open = new Set<number>(candidates.keys()); // not picked, not ruled out by a cap
  const nearest = new Array<number>(n).fill(-Infinity); // max similarity to the picks so far
  const picked: number[] = [];
  while (picked.length < limit) {
    let best = -1;
    let bestScore = -Infinity;
    for (const i of open) {
      if (!fits(i)) {
        open.delete(i); // counts only grow: it never fits again
        continue;
      }
      const redundancy = picked.length === 0 ? 0 : nearest[i];
      const score = lambda === 1
        ? candidates[i].relevance
        : lambda * candidates[i].relevance - (1 - lambda) * redundancy;
      if (
        best === -1 || score > bestScore || (score === bestScore && i < best)
      ) {
        best = i;
        bestScore = score;
      }
    }
    if (best === -1) break;
    picked.push(best);
    open.delete(best);
    const maker = candidates[best].maker;
    if (maker != null) makerCount.set(maker, (makerCount.get(maker) ?? 0) + 1);
    for (const g of genres[best]) {
      genreCount.set(g, (genreCount.get(g) ?? 0) + 1);
    }
    for (const i of open) {
      nearest[i] = Math.max(nearest[i], similarity[i][best]);
    }
  }
  return picked;
}

/**
 * The n x n similarity matrix from its upper triangle: `upper[i]` holds the similarities of
 * candidate i to candidates i + 1 .. n - 1, in that order (the SQL function's
 * `similarities`, one row per candidate in rank order; the last is empty). The diagonal is 1.
 */
export function symmetricSimilarity(
  upper: readonly (readonly number[])[],
): number[][] {
  const n = upper.length;
  const full = Array.from({ length: n }, () => new Array<number>(n).fill(1));
  upper.forEach((row, i) => {
    if (row.length !== n - 1 - i) {
      throw new RangeError(
        `row ${i} of the upper triangle must hold ${
          n - 1 - i
        } similarities, got ${row.length}`,
      );
    }
    row.forEach((value, k) => {
      full[i][i + 1 + k] = value;
      full[i + 1 + k][i] = value;
    });
  });
  return full;
}

/**
 * The n x n similarity matrix from the SQL function's `similarities`, one row per candidate in
 * rank order: either each row's similarities to the candidates ranked after it (the upper
 * triangle, `symmetricSimilarity`), or, from a database not yet migrated to it, each row's to
 * every candidate (the whole matrix, as it is). So the function can be deployed before the
 * migration. Throws a RangeError when the rows are neither.
 */
export function similarityMatrix(
  rows: readonly (readonly number[])[],
): readonly (readonly number[])[] {
  const n = rows.length;
  return rows.every((row) => row.length === n)
    ? rows
    : symmetricSimilarity(rows);
}
