"""The embedding queue (`swiperec_private.embedding_queue`, filled by triggers): claiming a batch
and reading its depth and lag.

A claim is one statement:
1. up to `keys` keys (a user, a video), the oldest first, whose advisory lock this transaction
   gets (`swiperec_private.claim_queue_keys`): keys another worker holds are passed over, as
   FOR UPDATE SKIP LOCKED passes over rows, but per key, so one user's rows are never split
   between two workers and an older read can never overwrite a newer one. Workers on several
   machines share the queue this way;
2. of those keys, the ones that are due: the newest row is `debounce_ms` old (several swipes
   in a row are one re-embedding), or the oldest is `max_delay_ms` old (a user who never stops
   swiping is still refreshed);
3. every row of the due keys is deleted, in the caller's transaction. Only the holder of a
   key's lock deletes its rows, so the delete waits for nobody.
The caller embeds the keys and commits; if it dies first, the delete never happened and the
locks are gone with its session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

CHANNEL = "swiperec_embedding_queue"  # NOTIFY'd by the triggers at commit

CLAIM = """
with mine as materialized (
    select kind, key from swiperec_private.claim_queue_keys(%(keys)s, %(scan)s)
), due as (
    select k.kind, k.key
    from mine k
    cross join lateral (
        select min(q.enqueued_at) as first_at, max(q.enqueued_at) as last_at
        from swiperec_private.embedding_queue q
        where q.kind = k.kind and q.key = k.key
    ) t
    where t.last_at <= clock_timestamp() - %(debounce_ms)s * interval '1 millisecond'
       or t.first_at <= clock_timestamp() - %(max_delay_ms)s * interval '1 millisecond'
), claimed as (
    delete from swiperec_private.embedding_queue q
    using due
    where q.kind = due.kind and q.key = due.key
    returning q.kind, q.key, q.enqueued_at
)
select kind, key, min(enqueued_at), count(*)::int from claimed group by kind, key
"""


@dataclass
class Claimed:
    """One key of a claimed batch: kind ('user' / 'video'), key, its oldest row's time and how
    many rows (events) it stood for."""

    kind: str
    key: str
    first_enqueued_at: datetime
    events: int


def claim(cur, keys: int, debounce_ms: int = 0, max_delay_ms: int = 1000) -> list[Claimed]:
    """Claim a batch of at most `keys` keys (see the module docstring) inside `cur`'s
    transaction; the candidates are the keys of the oldest `10 * keys` rows."""
    cur.execute(CLAIM, {"keys": keys, "scan": 10 * keys, "debounce_ms": debounce_ms,
                        "max_delay_ms": max_delay_ms})  # fmt: skip
    return [Claimed(*row) for row in cur.fetchall()]


def depth_and_lag(cur) -> tuple[int, float]:
    """(rows in the queue, seconds since the oldest was added; 0 when empty)."""
    cur.execute(
        "select count(*), coalesce(extract(epoch from clock_timestamp() - min(enqueued_at)), 0)"
        " from swiperec_private.embedding_queue"
    )
    count, lag = cur.fetchone()
    return int(count), float(lag)
