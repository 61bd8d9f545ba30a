"""Top-k recommendations for one user with a reason each, from the same SQL function the Edge
Function calls (`public.enhanced_two_tower_recommendations`, a migration).

    for rec in recommend(conn, user_id, k=10):
        print(rec.title, rec.score, rec.reason)

The SQL resolves the version serving this user, the query vector (the user's embedding, the
mean of their recent likes, or popularity), and the nearest undecided videos from the HNSW
index, with the evidence for a reason. This takes them in relevance order, without the Edge
Function's MMR re-ranking, and words the reasons as the function does
(supabase/functions/_shared/reasons.ts).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recommendation:
    video_id: int
    title: str
    score: float
    reason: str
    model_version: str
    source: str


def recommend(conn, user_id: str, k: int = 10) -> list[Recommendation]:
    """The user's top-k videos they have not decided yet, each with a reason."""
    with conn.cursor() as cur:
        cur.execute(
            "select video_id, title, score, genres, liked_title, liked_similarity, shared_genre, "
            "shared_maker, shared_performer, model_version, source "
            "from public.enhanced_two_tower_recommendations(%s::uuid, %s) order by rank limit %s",
            (user_id, max(k, 1), k),
        )
        rows = cur.fetchall()
    conn.rollback()
    return [
        Recommendation(video_id, title, round(float(score), 4), reason_for(source, genres,
                       liked_title, liked_similarity, genre, maker, performer), version, source)
        for (video_id, title, score, genres, liked_title, liked_similarity, genre, maker,
             performer, version, source) in rows
    ]  # fmt: skip


def reason_for(source, genres, liked_title, liked_similarity, genre, maker, performer) -> str:
    """The Edge Function's reason for an item, in the same order of preference."""
    if source != "popular":
        if liked_title and (liked_similarity is None or liked_similarity > 0):
            return f"because you liked {liked_title}"
        if genre:
            return f"because you like {genre}"
        if maker:
            return f"more from {maker}"
        if performer:
            return f"featuring {performer}"
    first = next((g for g in genres or () if g and g.strip()), None)
    return f"popular in {first}" if first else "popular right now"
