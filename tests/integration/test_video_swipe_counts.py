"""Each video's live swipe counts on a real PostgreSQL: `swiperec_private.video_swipe_counts`
follows user_video_decisions through inserts, COPY, deletes (also those a deleted video
cascades to), updates, truncates and the synthetic load, an app user's swipe under row-level
security, and concurrent writers. A video's counts are one vote per user who swiped it, their
latest swipe: after each change the table must equal that count over the swipes themselves,
apart from rows at 0/0 (a video whose votes were all taken back keeps its row)."""

from __future__ import annotations

import io
import json
import threading
import uuid

import psycopg2
import pytest

from swiperec.data.load import load_synthetic
from swiperec.data.synthetic import SyntheticConfig, generate
from swiperec.db import connect

pytestmark = pytest.mark.integration

USERS = [str(uuid.UUID(int=i)) for i in range(1, 5)]
COUNTED = "select video_id, likes, nopes from swiperec_private.video_swipe_counts order by 1"
TRUTH = """
    select video_id, count(*) filter (where decision = 'like'),
           count(*) filter (where decision = 'nope')
    from (select distinct on (user_id, video_id) video_id, decision
          from public.user_video_decisions
          order by user_id, video_id, created_at desc, id desc) latest
    group by video_id order by video_id
"""


def assert_counted(conn) -> list[tuple[int, int, int]]:
    """The counts table's rows other than 0/0 equal the votes counted from the swipes; returns
    those rows."""
    with conn.cursor() as cur:
        cur.execute(COUNTED)
        counted = cur.fetchall()
        cur.execute(TRUTH)
        truth = cur.fetchall()
    conn.rollback()
    voted = [row for row in counted if row[1:] != (0, 0)]
    assert voted == truth
    return voted


def add_videos(conn, n: int) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("insert into videos (id, external_id, title) select g, 'v' || g, 't' || g "
                    "from generate_series(1, %s) g", (n,))  # fmt: skip


def swipe(cur, rows) -> None:
    """One multi-row insert of (user, video, decision, created_at) rows."""
    values = ", ".join(["(%s::uuid, %s, %s, %s::timestamptz)"] * len(rows))
    cur.execute("insert into user_video_decisions (user_id, video_id, decision, created_at) "
                f"values {values}", [x for row in rows for x in row])  # fmt: skip


def test_the_counts_follow_every_change_of_the_swipes(conn):
    add_videos(conn, 6)
    a, b, c = USERS[:3]
    with conn, conn.cursor() as cur:
        swipe(cur, [(a, 1, "like", "2026-11-01T00:00Z")])
        swipe(cur, [(b, 1, "nope", "2026-11-01T00:01Z")])
        # the same user answers video 1 again later: their latest swipe replaces their vote
        swipe(cur, [(a, 1, "nope", "2026-11-02T00:00Z")])
    assert assert_counted(conn) == [(1, 0, 2)]
    with conn, conn.cursor() as cur:
        swipe(cur, [(a, 1, "like", "2026-11-03T00:00Z")])
    assert assert_counted(conn) == [(1, 1, 1)]
    with conn, conn.cursor() as cur:  # one statement, several videos and users
        swipe(cur, [(c, 3, "like", "2026-11-04T00:00Z"), (a, 2, "nope", "2026-11-04T00:00Z"),
                    (b, 3, "like", "2026-11-04T00:00Z"), (c, 2, "like", "2026-11-04T00:00Z"),
                    (c, 4, "nope", "2026-11-04T00:00Z"), (c, 5, "like", "2026-11-04T00:00Z"),
                    (c, 6, "like", "2026-11-04T00:00Z")])  # fmt: skip
        # a retried swipe the unique key turns away adds nothing
        cur.execute("insert into user_video_decisions (user_id, video_id, decision, created_at) "
                    "values (%s, 3, 'like', '2026-11-04T00:00Z') on conflict do nothing",
                    (c,))  # fmt: skip
    assert assert_counted(conn) == [(1, 1, 1), (2, 1, 1), (3, 2, 0), (4, 0, 1), (5, 1, 0),
                                    (6, 1, 0)]  # fmt: skip
    with conn, conn.cursor() as cur:
        # a's earliest swipe on video 1 goes: their latest (like) still counts
        cur.execute("delete from user_video_decisions where user_id = %s and video_id = 1 "
                    "and created_at = '2026-11-01T00:00Z'", (a,))  # fmt: skip
    assert assert_counted(conn) == [(1, 1, 1), (2, 1, 1), (3, 2, 0), (4, 0, 1), (5, 1, 0),
                                    (6, 1, 0)]  # fmt: skip
    with conn, conn.cursor() as cur:
        # a's latest swipe on video 1 goes: the one before it (nope) counts again
        cur.execute("delete from user_video_decisions where user_id = %s and video_id = 1 "
                    "and created_at = '2026-11-03T00:00Z'", (a,))  # fmt: skip
        # video 4's only swipe: its row stays, at 0/0
        cur.execute("delete from user_video_decisions where video_id = 4")
    assert assert_counted(conn) == [(1, 0, 2), (2, 1, 1), (3, 2, 0), (5, 1, 0), (6, 1, 0)]
    with conn.cursor() as cur:
        cur.execute("select likes, nopes from swiperec_private.video_swipe_counts "
                    "where video_id = 4")  # fmt: skip
        assert cur.fetchone() == (0, 0)
    conn.rollback()
    with conn, conn.cursor() as cur:
        cur.execute("update user_video_decisions set decision = 'nope' where video_id = 3 "
                    "and user_id = %s", (b,))  # fmt: skip
        # moved to another video; an update that changes nothing counted nets out
        cur.execute("update user_video_decisions set video_id = 4 where video_id = 5")
        cur.execute("update user_video_decisions set created_at = created_at + interval '1 s'")
    assert assert_counted(conn) == [(1, 0, 2), (2, 1, 1), (3, 1, 1), (4, 1, 0), (6, 1, 0)]
    with conn, conn.cursor() as cur:
        # a's one swipe left on video 1 changes its answer
        cur.execute("update user_video_decisions set decision = 'like' where video_id = 1 "
                    "and user_id = %s", (a,))  # fmt: skip
    assert assert_counted(conn) == [(1, 1, 1), (2, 1, 1), (3, 1, 1), (4, 1, 0), (6, 1, 0)]
    with conn, conn.cursor() as cur:  # a deleted video's swipes cascade, and its votes go
        cur.execute("delete from videos where id in (1, 3)")
    assert assert_counted(conn) == [(2, 1, 1), (4, 1, 0), (6, 1, 0)]
    with conn, conn.cursor() as cur:
        cur.execute("truncate user_video_decisions")
    assert assert_counted(conn) == []
    with conn.cursor() as cur:  # a truncate empties the table, rows at 0/0 included
        cur.execute(COUNTED)
        assert cur.fetchall() == []
    conn.rollback()
    with conn, conn.cursor() as cur:
        swipe(cur, [(a, 2, "like", "2026-11-05T00:00Z")])
        # the loads' truncate, the catalogue with it: allowed (no reference to the videos)
        cur.execute("truncate user_video_decisions, video_reviews, video_embeddings, "
                    "user_embeddings, videos restart identity")  # fmt: skip
    assert assert_counted(conn) == []


def test_one_user_swiping_one_video_again_and_again_is_one_vote(conn):
    add_videos(conn, 2)
    user, other = USERS[:2]
    for day, decision in enumerate(["like", "like", "nope", "like", "like"], start=1):
        with conn, conn.cursor() as cur:
            swipe(cur, [(user, 1, decision, f"2026-11-{day:02d}T00:00Z")])
        assert assert_counted(conn) == [(1, int(decision == "like"), int(decision == "nope"))]
    with conn, conn.cursor() as cur:  # all in one statement, not in time order
        swipe(cur, [(user, 2, d, f"2026-11-{day:02d}T00:00Z")
                    for day, d in [(3, "nope"), (1, "like"), (5, "like"), (2, "like"),
                                   (4, "like")]])  # fmt: skip
        swipe(cur, [(other, 2, "nope", "2026-11-01T00:00Z")])
    assert assert_counted(conn) == [(1, 1, 0), (2, 1, 1)]


def test_an_older_swipe_arriving_later_changes_nothing(conn):
    # A backfill import: the user's latest swipe is already counted; an earlier one arriving
    # now is history, not their vote.
    add_videos(conn, 1)
    with conn, conn.cursor() as cur:
        swipe(cur, [(USERS[0], 1, "like", "2026-11-05T00:00Z")])
    assert assert_counted(conn) == [(1, 1, 0)]
    with conn, conn.cursor() as cur:
        swipe(cur, [(USERS[0], 1, "nope", "2026-11-01T00:00Z")])
        cur.execute("insert into user_video_decisions (user_id, video_id, decision, created_at) "
                    "values (%s, 1, 'nope', '2026-11-02T00:00Z') on conflict do nothing",
                    (USERS[0],))  # fmt: skip
    assert assert_counted(conn) == [(1, 1, 0)]
    with conn, conn.cursor() as cur:  # an update of the history alone changes nothing either
        cur.execute("update user_video_decisions set decision = 'like' "
                    "where created_at < '2026-11-05T00:00Z'")  # fmt: skip
    assert assert_counted(conn) == [(1, 1, 0)]


def test_a_rolled_back_swipe_counts_nothing(conn):
    add_videos(conn, 2)
    with conn.cursor() as cur:
        swipe(cur, [(USERS[0], 1, "like", "2026-11-01T00:00Z")])
    conn.rollback()
    assert assert_counted(conn) == []


def test_copy_is_counted(conn):
    add_videos(conn, 3)
    # each video one user's repeated swipes, the latest first in the file
    rows = "".join(f"{USERS[i % 3]}\t{1 + i % 3}\t{('like', 'nope')[i % 2]}\t"
                   f"2026-11-01 00:00:{9 - i:02d}+00\n" for i in range(10))  # fmt: skip
    with conn, conn.cursor() as cur:
        cur.copy_expert("copy user_video_decisions (user_id, video_id, decision, created_at) "
                        "from stdin", io.StringIO(rows))  # fmt: skip
    assert assert_counted(conn) == [(1, 1, 0), (2, 0, 1), (3, 1, 0)]


def test_the_synthetic_load_is_counted_and_replaced(conn):
    # binary COPY, with the table's keys dropped and rebuilt around it, then again with
    # `replace`: truncated and loaded in the same transaction
    load_synthetic(conn, generate(SyntheticConfig(videos=60, users=8, pseudo_users=2, seed=3)))
    first = assert_counted(conn)
    assert sum(likes + nopes for _, likes, nopes in first) > 50
    load_synthetic(conn, generate(SyntheticConfig(videos=40, users=5, pseudo_users=2, seed=4)),
                   replace=True)  # fmt: skip
    assert assert_counted(conn) != first


def as_app_user(cur, user: str) -> None:
    cur.execute("set local role authenticated")
    cur.execute("select set_config('request.jwt.claims', %s, true)",
                (json.dumps({"sub": user, "role": "authenticated"}),))  # fmt: skip


def test_an_app_users_swipe_counts_though_the_table_is_private(conn):
    add_videos(conn, 1)
    with conn, conn.cursor() as cur:
        as_app_user(cur, USERS[0])
        cur.execute("insert into user_video_decisions (video_id, decision) values (1, 'like')")
    assert assert_counted(conn) == [(1, 1, 0)]
    with conn.cursor() as cur:
        as_app_user(cur, USERS[0])
        for statement in (
            "select * from swiperec_private.video_swipe_counts",
            "select swiperec_private.recount_video_swipes()",
        ):
            cur.execute("savepoint denied")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(statement)
            cur.execute("rollback to savepoint denied")
    conn.rollback()


def test_the_counts_refuse_to_go_below_zero(conn):
    add_videos(conn, 1)
    with conn, conn.cursor() as cur:
        swipe(cur, [(USERS[0], 1, "like", "2026-11-01T00:00Z")])
        cur.execute("update swiperec_private.video_swipe_counts set likes = 0, nopes = 1")
    with pytest.raises(psycopg2.errors.CheckViolation), conn, conn.cursor() as cur:
        cur.execute("delete from user_video_decisions")
    # the repair counts from the swipes again
    with conn, conn.cursor() as cur:
        cur.execute("select swiperec_private.recount_video_swipes()")
        assert cur.fetchone() == (1,)
    assert assert_counted(conn) == [(1, 1, 0)]


def test_concurrent_swipes_on_the_same_videos_do_not_deadlock(conn, db_url):
    videos = 400
    add_videos(conn, videos)
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def swipes(user: str, order: list[int], decision: str) -> None:
        other = connect(db_url)
        try:
            with other.cursor() as cur:
                cur.execute("select 1")  # the transaction is open
                barrier.wait()
                swipe(cur, [(user, v, decision, "2026-11-01T00:00Z") for v in order])
                swipe(cur, [(user, v, decision, "2026-11-02T00:00Z") for v in order[::3]])
            other.commit()
        except BaseException as e:  # reported by the assertion below
            errors.append(e)
        finally:
            other.close()

    ids = list(range(1, videos + 1))
    threads = [
        threading.Thread(target=swipes, args=(USERS[0], ids, "like")),
        threading.Thread(target=swipes, args=(USERS[1], ids[::-1], "nope")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    counted = assert_counted(conn)
    assert len(counted) == videos
    # each user's second swipe on every third video replaced their first
    assert sum(likes + nopes for _, likes, nopes in counted) == 2 * videos


def test_changes_given_in_opposite_orders_lock_in_one_order(conn, db_url):
    # The triggers' own grouping happens to sort by video; what guarantees the order is the
    # counting functions': two sessions hand them the same videos, one ascending and one
    # descending, in transactions open at once. Taken in the order given, each would hold
    # half the rows the other waits for. Half the rows exist, half the lock creates.
    videos = 400
    ids = list(range(1, videos + 1))
    with conn, conn.cursor() as cur:
        cur.execute("select swiperec_private.add_video_swipes(%s, %s, %s)",
                    (ids[::2], [1] * len(ids[::2]), [0] * len(ids[::2])))  # fmt: skip
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def add(order: list[int]) -> None:
        other = connect(db_url)
        try:
            with other.cursor() as cur:
                cur.execute("select 1")
                barrier.wait()
                cur.execute("select swiperec_private.lock_video_swipe_counts(%s)", (order,))
                cur.execute("select swiperec_private.add_video_swipes(%s, %s, %s)",
                            (order, [0] * videos, [1] * videos))  # fmt: skip
            other.commit()
        except BaseException as e:  # reported by the assertion below
            errors.append(e)
        finally:
            other.close()

    threads = [threading.Thread(target=add, args=(o,)) for o in (ids, ids[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with conn.cursor() as cur:
        cur.execute(COUNTED)
        assert cur.fetchall() == [(v, v % 2, 2) for v in ids]
    conn.rollback()


def test_a_swipe_waiting_on_a_video_whose_votes_went_still_counts(conn, db_url):
    # Transaction 1 takes back video 1's only swipe: its counts row falls to 0/0, locked.
    # Transaction 2 swipes video 1 meanwhile and waits on that row; when 1 commits, 2 counts
    # its vote on the row at 0/0.
    add_videos(conn, 1)
    with conn, conn.cursor() as cur:
        swipe(cur, [(USERS[0], 1, "like", "2026-11-01T00:00Z")])
    first, second = connect(db_url), connect(db_url)
    try:
        with first.cursor() as cur:
            cur.execute("delete from user_video_decisions")
        with second.cursor() as cur:
            cur.execute("select pg_backend_pid()")
            pid = cur.fetchone()[0]
        second.commit()
        waiting = threading.Thread(target=lambda: _swipe_and_commit(second, USERS[1]))
        waiting.start()
        wait_until_blocked(conn, pid)
        first.commit()
        waiting.join(30)
    finally:
        first.close()
        second.close()
    assert assert_counted(conn) == [(1, 1, 0)]


def wait_until_blocked(conn, pid: int) -> None:
    """Return once the backend `pid` waits on a lock; fail if it never does (~5 s)."""
    with conn.cursor() as cur:
        for _ in range(500):
            cur.execute("select wait_event_type from pg_stat_activity where pid = %s", (pid,))
            if cur.fetchone()[0] == "Lock":
                break
            conn.rollback()
            threading.Event().wait(0.01)
        else:
            pytest.fail("the second swipe never waited for the first transaction")
    conn.rollback()


def _swipe_and_commit(connection, user: str) -> None:
    with connection.cursor() as cur:
        swipe(cur, [(user, 1, "like", "2026-11-02T00:00Z")])
    connection.commit()


@pytest.mark.parametrize("first_at, second_at", [("02", "03"), ("03", "02")])
def test_concurrent_swipes_of_one_user_on_one_video_are_one_vote(conn, db_url, first_at,
                                                                  second_at):  # fmt: skip
    # The user liked video 1; two transactions, open at once, each add a nope of theirs (the
    # later one first, or the earlier one). Without the lock before the read, the second would
    # not see the first's swipe, take the like back a second time and count a second nope.
    add_videos(conn, 1)
    user = USERS[0]
    with conn, conn.cursor() as cur:
        swipe(cur, [(user, 1, "like", "2026-11-01T00:00Z")])
    first, second = connect(db_url), connect(db_url)
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []
    try:
        with second.cursor() as cur:
            cur.execute("select pg_backend_pid()")
            pid = cur.fetchone()[0]

        def swipe_second() -> None:
            try:
                with second.cursor() as cur:
                    barrier.wait()  # both transactions are open
                    barrier.wait()  # the first has swiped, its counts row locked
                    swipe(cur, [(user, 1, "nope", f"2026-11-{second_at}T00:00Z")])
                second.commit()
            except BaseException as e:  # reported by the assertion below
                errors.append(e)

        waiting = threading.Thread(target=swipe_second)
        waiting.start()
        with first.cursor() as cur:
            cur.execute("select 1")  # the transaction is open
            barrier.wait()
            swipe(cur, [(user, 1, "nope", f"2026-11-{first_at}T00:00Z")])
            barrier.wait()
        wait_until_blocked(conn, pid)
        first.commit()
        waiting.join(30)
    finally:
        first.close()
        second.close()
    assert errors == []
    assert assert_counted(conn) == [(1, 0, 1)]
