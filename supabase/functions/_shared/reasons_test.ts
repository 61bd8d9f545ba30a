import assert from "node:assert/strict";
import { type ReasonEvidence, reasonFor, REASONS } from "./reasons.ts";

const NONE: ReasonEvidence = {
  source: "embedding",
  genres: ["ドラマ", "コメディ"],
  liked_title: null,
  liked_similarity: null,
  shared_genre: null,
  shared_maker: null,
  shared_performer: null,
};

const ALL: ReasonEvidence = {
  ...NONE,
  liked_title: "病院涙#5",
  liked_similarity: 0.62,
  shared_genre: "コメディ",
  shared_maker: "ホワイトライト企画",
  shared_performer: "清水颯帆",
};

Deno.test("the wording", () => {
  assert.equal(REASONS.liked("X"), "because you liked X");
  assert.equal(REASONS.genre("X"), "because you like X");
  assert.equal(REASONS.maker("X"), "more from X");
  assert.equal(REASONS.performer("X"), "featuring X");
  assert.equal(REASONS.popularIn("X"), "popular in X");
  assert.equal(REASONS.popular(), "popular right now");
});

Deno.test("the nearest liked video comes first", () => {
  assert.equal(reasonFor(ALL), "because you liked 病院涙#5");
  assert.equal(
    reasonFor({ ...ALL, source: "recent_likes" }),
    "because you liked 病院涙#5",
  );
  assert.equal(
    reasonFor({ ...ALL, liked_similarity: null }),
    "because you liked 病院涙#5",
  );
});

Deno.test("a liked video that is not similar is no reason", () => {
  assert.equal(
    reasonFor({ ...ALL, liked_similarity: -0.2 }),
    "because you like コメディ",
  );
  assert.equal(
    reasonFor({ ...ALL, liked_similarity: 0 }),
    "because you like コメディ",
  );
});

Deno.test("then a shared genre, maker, performer, in that order", () => {
  const noLiked = { ...ALL, liked_title: null, liked_similarity: null };
  assert.equal(reasonFor(noLiked), "because you like コメディ");
  assert.equal(
    reasonFor({ ...noLiked, shared_genre: null }),
    "more from ホワイトライト企画",
  );
  assert.equal(
    reasonFor({ ...noLiked, shared_genre: null, shared_maker: "" }),
    "featuring 清水颯帆",
  );
});

Deno.test("no evidence: popular in the video's first genre", () => {
  assert.equal(reasonFor(NONE), "popular in ドラマ");
  assert.equal(reasonFor({ ...NONE, genres: [] }), "popular right now");
  assert.equal(reasonFor({ ...NONE, genres: null }), "popular right now");
  assert.equal(
    reasonFor({ ...NONE, genres: [" ", "旅行"] }),
    "popular in 旅行",
  );
});

Deno.test("the popular fallback always says popular", () => {
  assert.equal(reasonFor({ ...ALL, source: "popular" }), "popular in ドラマ");
  assert.equal(
    reasonFor({ ...NONE, source: "popular", genres: [] }),
    "popular right now",
  );
});
