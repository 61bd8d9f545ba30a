// One human reason per recommended item, from the evidence enhanced_two_tower_recommendations
// (SQL) returns with it. All wording lives in REASONS.
//
// Order of preference:
//   1. the user's liked video nearest to this one   "because you liked <title>"
//   2. the user's most liked genre it has           "because you like <genre>"
//   3. a maker the user liked                       "more from <maker>"
//   4. a performer the user liked                   "featuring <performer>"
//   5. otherwise, and always for the popular
//      fallback (no embedding and no likes)         "popular in <genre>" / "popular right now"

export const REASONS = Object.freeze({
  liked: (title: string) => `because you liked ${title}`,
  genre: (genre: string) => `because you like ${genre}`,
  maker: (maker: string) => `more from ${maker}`,
  performer: (performer: string) => `featuring ${performer}`,
  popularIn: (genre: string) => `popular in ${genre}`,
  popular: () => "popular right now",
});

/** A liked video counts as the reason only when it is at least this similar (cosine). */
export const MIN_LIKED_SIMILARITY = 0;

export type Source = "embedding" | "recent_likes" | "popular";

/** The evidence columns of one SQL row (null where the SQL found none). */
export interface ReasonEvidence {
  source: Source | string;
  genres: readonly string[] | null;
  liked_title: string | null;
  liked_similarity: number | null;
  shared_genre: string | null;
  shared_maker: string | null;
  shared_performer: string | null;
}

const present = (text: string | null | undefined): text is string =>
  typeof text === "string" && text.trim().length > 0;

export function reasonFor(evidence: ReasonEvidence): string {
  if (evidence.source !== "popular") {
    if (
      present(evidence.liked_title) &&
      (evidence.liked_similarity == null ||
        evidence.liked_similarity > MIN_LIKED_SIMILARITY)
    ) {
      return REASONS.liked(evidence.liked_title);
    }
    if (present(evidence.shared_genre)) {
      return REASONS.genre(evidence.shared_genre);
    }
    if (present(evidence.shared_maker)) {
      return REASONS.maker(evidence.shared_maker);
    }
    if (present(evidence.shared_performer)) {
      return REASONS.performer(evidence.shared_performer);
    }
  }
  const genre = (evidence.genres ?? []).find(present);
  return genre ? REASONS.popularIn(genre) : REASONS.popular();
}
