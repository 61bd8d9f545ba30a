"""What is in the database: table counts, like rate, rating mix and time ranges."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC


@dataclass
class DataSummary:
    counts: dict[str, int]
    users: int
    pseudo_users: int
    like_rate: float | None
    rating_counts: dict[int, int] = field(default_factory=dict)
    first_decision: object = None
    last_decision: object = None
    first_release: object = None
    last_release: object = None

    def format(self) -> str:
        lines = ["table                        rows"]
        lines += [f"  {name:<26}{count:>10,}" for name, count in self.counts.items()]
        lines.append(f"users (swipers)             {self.users:>10,}")
        lines.append(f"pseudo-users (reviewers)    {self.pseudo_users:>10,}")
        like = "n/a" if self.like_rate is None else f"{self.like_rate:.3f}"
        lines.append(f"like rate                   {like:>10}")
        if self.rating_counts:
            mix = "  ".join(f"{r}:{n:,}" for r, n in sorted(self.rating_counts.items()))
            lines.append(f"ratings                     {mix}")
        if self.first_release:
            lines.append(f"releases                    {self.first_release} .. {self.last_release}")
        if self.first_decision:
            lines.append(
                f"decisions                   {self.first_decision.astimezone(UTC):%Y-%m-%d} .. "
                f"{self.last_decision.astimezone(UTC):%Y-%m-%d} (UTC)"
            )
        return "\n".join(lines)


TABLES = ("videos", "video_reviews", "user_video_decisions", "video_embeddings", "user_embeddings")


def summarize(conn) -> DataSummary:
    """Counts and rates over the core tables (exact counts: fine at 5 M rows)."""
    with conn.cursor() as cur:
        counts = {}
        for table in TABLES:
            cur.execute(f"select count(*) from public.{table}")
            counts[table] = cur.fetchone()[0]
        cur.execute(
            "select count(distinct user_id), avg((decision = 'like')::int)::float8,"
            " min(created_at), max(created_at) from public.user_video_decisions"
        )
        users, like_rate, first_decision, last_decision = cur.fetchone()
        cur.execute("select count(distinct reviewer_id) from public.video_reviews")
        pseudo_users = cur.fetchone()[0]
        cur.execute("select rating, count(*) from public.video_reviews group by rating")
        ratings = dict(cur.fetchall())
        cur.execute("select min(release_date), max(release_date) from public.videos")
        first_release, last_release = cur.fetchone()
    conn.rollback()
    return DataSummary(
        counts,
        users,
        pseudo_users,
        like_rate,
        ratings,
        first_decision,
        last_decision,
        first_release,
        last_release,
    )
