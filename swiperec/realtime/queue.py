"""The embedding queue (`swiperec_private.embedding_queue`, filled by triggers): claiming a batch
and reading its depth and lag.

A claim is one statement:
1. the oldest rows, up to `rows`, of keys (a user, a video) this transaction can lock: the
   scan takes each key's advisory lock (`pg_try_advisory_xact_lock`) and passes over the rows
   of keys another worker holds, then locks the rows FOR UPDATE SKIP LOCKED. Workers on
   several machines share the queue, and a key belongs to one of them at a time, so an older
   read can never overwrite a newer one. (Row locks alone would not do: one user's rows could
   be split between two workers, and each would embed the user.)
2. of those keys, the ones that are due: the newest row is `debounce_ms` old (several swipes
   in a row are one re-embedding), or the oldest is `max_delay_ms` old (a user who never stops
   swiping is still refreshed);
3. every row of the due keys is deleted, in the caller's transaction.
The caller embeds the keys and commits; if it dies first, the delete never happened and the
locks are gone with its session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

CHANNEL = "swiperec_embedding_queue"  # NOTIFY'd by the triggers at commit

CLAIM = """
with picked as (
    select id, kind, key from swiperec_private.embedding_queue
    where pg_try_advisory_xact_lock(hashtextextended(kind || ':' || key, 0))
    order by id
    limit %(rows)s
    for update skip locked
), due as (
    select k.kind, k.key
    from (select distinct kind, key from picked) k
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


def claim(cur, rows: int, debounce_ms: int = 0, max_delay_ms: int = 1000) -> list[Claimed]:
    """Claim a batch (see the module docstring) inside `cur`'s transaction."""
    cur.execute(CLAIM, {"rows": rows, "debounce_ms": debounce_ms, "max_delay_ms": max_delay_ms})
    return [Claimed(*row) for row in cur.fetchall()]


def depth_and_lag(cur) -> tuple[int, float]:
    """(rows in the queue, seconds since the oldest was added; 0 when empty)."""
    cur.execute(
        "select count(*), coalesce(extract(epoch from clock_timestamp() - min(enqueued_at)), 0)"
        " from swiperec_private.embedding_queue"
    )
    count, lag = cur.fetchone()
    return int(count), float(lag)
