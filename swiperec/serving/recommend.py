"""Top-k recommendations for one user with a reason each, from the same SQL the Edge Function
runs: `public.enhanced_two_tower_recommendations` for the candidates and
`public.recommendation_reason` for each one's reason (both migrations).

    for rec in recommend(conn, user_id, k=10):
        print(rec.title, rec.score, rec.reason)

The SQL resolves the version serving this user, the query vector (the user's embedding, the
mean of their recent likes, or popularity), the nearest undecided videos from the HNSW index
and the nearest new releases, scored by the ranking stage, with the evidence for a reason. This
takes them in score order, without the Edge Function's MMR re-ranking; the reasons are worded
by the database, so the demo and the Edge Function always say the same thing about the same
video.
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


_TOP_K = """
select r.video_id, r.title, r.score,
       public.recommendation_reason(r.source, r.genres, r.liked_title, r.liked_similarity,
                                    r.shared_genre, r.shared_maker, r.shared_performer),
       r.model_version, r.source
from public.enhanced_two_tower_recommendations(%s::uuid, %s) r
order by r.rank
limit %s
"""


def recommend(conn, user_id: str, k: int = 10) -> list[Recommendation]:
    """The user's top-k videos they have not decided yet, each with a reason."""
    with conn.cursor() as cur:
        cur.execute(_TOP_K, (user_id, max(k, 1), k))
        rows = cur.fetchall()
    conn.rollback()
    return [
        Recommendation(video_id, title, round(float(score), 4), reason, version, source)
        for video_id, title, score, reason, version, source in rows
    ]


def sample_user(conn, version: str) -> tuple[str, int] | None:
    """(user id, likes) of the real user with the most likes who has an embedding in
    `version`'s set: the demo's sample user. None when the set has no users."""
    with conn.cursor() as cur:
        cur.execute(
            "select e.user_id, count(*) filter (where d.decision = 'like') as likes "
            "from user_embeddings e join user_video_latest_decisions d using (user_id) "
            "where e.model_version = %s group by e.user_id order by likes desc, e.user_id "
            "limit 1",
            (version,),
        )
        row = cur.fetchone()
    conn.rollback()
    return (str(row[0]), row[1]) if row else None
