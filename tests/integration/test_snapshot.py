"""The ingest snapshot against a real PostgreSQL: cutoff, consistency, values, hashes, folders."""

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import psycopg2
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from swiperec.data.load import load_synthetic
from swiperec.data.synthetic import SyntheticConfig, generate
from swiperec.snapshot import (
    IncompleteSnapshotError,
    SnapshotError,
    SnapshotExistsError,
    read_metadata,
    take_snapshot,
)

pytestmark = pytest.mark.integration

SMALL = SyntheticConfig(
    videos=200, users=30, pseudo_users=40, decisions_per_user=15, reviews_per_pseudo_user=5
)
VIDEO_COLUMNS = (
    "id, external_id, title, description, genres, maker, label, series, performers,"
    " release_date, duration_sec, thumbnail_url, created_at"
)
USER = "0f1e2d3c-4b5a-4987-8a6b-5c4d3e2f1a0b"


@pytest.fixture
def loaded(conn):
    """`conn` on a database holding the small synthetic set; returns (conn, cutoff): the
    median decision time, so part of every table lies after it."""
    load_synthetic(conn, generate(SMALL))
    median = "percentile_disc(0.5) within group (order by created_at)"
    cutoff = scalar(conn, f"select {median} from user_video_decisions")
    return conn, cutoff


def scalar(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        value = cur.fetchone()[0]
    conn.rollback()
    return value


def rows(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        result = [list(r) for r in cur.fetchall()]
    conn.rollback()
    return result


def execute(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        result = cur.fetchone() if cur.description else None
    conn.commit()
    return result


def read(snapshot, table):
    return pq.read_table(snapshot.path(table)).to_pylist()


def values(snapshot, table):
    """The rows of one file as lists, in file order, to compare with database rows."""
    return [list(row.values()) for row in read(snapshot, table)]


def add_video(conn, external_id, *, release_date=None, created_at=None, title="足す"):
    return execute(
        conn,
        "insert into videos (external_id, title, release_date, created_at)"
        " values (%s, %s, %s, coalesce(%s, now())) returning id",
        (external_id, title, release_date, created_at),
    )[0]


def test_only_rows_up_to_the_cutoff_and_every_count_matches(loaded, tmp_path):
    conn, cutoff = loaded
    snapshot = take_snapshot(conn, tmp_path / "snap", cutoff=cutoff)

    where = "where created_at <= %(c)s"
    for table, source in (("decisions", "user_video_decisions"), ("reviews", "video_reviews")):
        found = read(snapshot, table)
        assert max(r["created_at"] for r in found) <= cutoff
        assert len(found) == snapshot.row_counts[table]
        assert len(found) == scalar(conn, f"select count(*) from {source} {where}", {"c": cutoff})
        span = f"select min(created_at), max(created_at) from {source} {where}"
        assert snapshot.time_ranges[table] == rows(conn, span, {"c": cutoff})[0]
    videos = read(snapshot, "videos")
    assert len(videos) == scalar(
        conn,
        "select count(*) from videos where created_at <= %(c)s or release_date <= %(d)s",
        {"c": cutoff, "d": cutoff.astimezone(UTC).date()},
    )
    assert all(v["created_at"] <= cutoff or v["release_date"] <= cutoff.date() for v in videos)
    assert snapshot.row_counts["videos"] == len(videos) < SMALL.videos
    assert snapshot.videos_known_by_reference == 0

    # Deterministic row order: videos by id; events by time, then their keys.
    assert [v["id"] for v in videos] == sorted(v["id"] for v in videos)
    decisions = read(snapshot, "decisions")
    assert [(d["created_at"], d["id"]) for d in decisions] == sorted(
        (d["created_at"], d["id"]) for d in decisions
    )
    reviews = read(snapshot, "reviews")
    keys = [(r["created_at"], r["reviewer_id"].encode(), r["video_id"]) for r in reviews]
    assert keys == sorted(keys)
    known = {v["id"] for v in videos}
    assert {r["video_id"] for r in decisions + reviews} <= known


def test_a_video_is_known_by_creation_release_or_a_backdated_swipe(conn, tmp_path):
    cutoff = datetime(2026, 1, 1, tzinfo=UTC)
    old_release = add_video(conn, "old-release", release_date=date(2020, 5, 1))  # imported today
    future = add_video(conn, "future", release_date=date(2026, 6, 1))
    unknown = add_video(conn, "unknown")  # created today, no release date
    swiped = add_video(conn, "swiped")  # created today, but swiped on before the cutoff
    on_the_day = add_video(conn, "on-the-day", release_date=date(2026, 1, 1))
    execute(
        conn,
        "insert into user_video_decisions (user_id, video_id, decision, created_at)"
        " values (%s, %s, 'like', %s)",
        (USER, swiped, cutoff - timedelta(days=3)),
    )

    snapshot = take_snapshot(conn, tmp_path / "snap", cutoff=cutoff)

    ids = {v["id"] for v in read(snapshot, "videos")}
    assert ids == {old_release, swiped, on_the_day}
    assert {future, unknown}.isdisjoint(ids)
    assert snapshot.videos_known_by_reference == 1
    assert [d["video_id"] for d in read(snapshot, "decisions")] == [swiped]


def test_rows_committed_while_the_snapshot_runs_are_not_in_it(loaded, db_url, tmp_path):
    conn, cutoff = loaded
    other = psycopg2.connect(db_url)
    before = {
        "decisions": scalar(conn, "select count(*) from user_video_decisions"),
        "reviews": scalar(conn, "select count(*) from video_reviews"),
    }
    added = {}

    def between_tables(table):
        # Videos are read by now; reviews and decisions not yet. Another session commits rows
        # that lie before the cutoff: READ COMMITTED would see them in the next two tables.
        if table == "reviews":
            video = add_video(other, "late", created_at=cutoff - timedelta(days=1))
            added["decision"] = execute(
                other,
                "insert into user_video_decisions (user_id, video_id, decision, created_at)"
                " values (%s, %s, 'nope', %s) returning id",
                (USER, video, cutoff - timedelta(hours=1)),
            )[0]
            execute(
                other,
                "insert into video_reviews values ('late-reviewer', %s, 5, %s)",
                (video, cutoff - timedelta(hours=1)),
            )

    during = take_snapshot(conn, tmp_path / "during", cutoff=cutoff, progress=between_tables)
    after = take_snapshot(conn, tmp_path / "after", cutoff=cutoff)
    other.close()

    assert added, "the hook did not run"
    assert scalar(conn, "select count(*) from user_video_decisions") == before["decisions"] + 1
    assert added["decision"] not in {d["id"] for d in read(during, "decisions")}
    assert "late-reviewer" not in {r["reviewer_id"] for r in read(during, "reviews")}
    assert after.row_counts["decisions"] == during.row_counts["decisions"] + 1
    assert after.row_counts["reviews"] == during.row_counts["reviews"] + 1
    assert after.row_counts["videos"] == during.row_counts["videos"] + 1
    assert after.content_hash != during.content_hash


def test_values_round_trip_exactly(loaded, tmp_path):
    conn, _ = loaded
    tricky = '鉄道の旅\n「改行」と "引用"、タブ\t、バックスラッシュ \\ と \x01 制御文字 🚄'
    video = execute(
        conn,
        "insert into videos (external_id, title, description, genres, performers, maker,"
        " release_date, duration_sec, created_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " returning id",
        ("x-1", "夜行列車", tricky, ["旅行", "", "a,b", '{"q"}'], ["山田 花子", None], None,
         date(1999, 12, 31), 5400, datetime(2020, 2, 29, 23, 59, 59, 123456, tzinfo=UTC)),
    )[0]  # fmt: skip
    add_video(conn, "x-2", title="空の配列", created_at=datetime(2001, 1, 1, tzinfo=UTC))
    execute(
        conn,
        "insert into user_video_decisions (user_id, video_id, decision, created_at)"
        " values (%s, %s, 'like', '2021-06-01 12:00:00.000001+09')",
        (USER, video),
    )
    execute(conn, "insert into video_reviews values ('レビュアー', %s, 1, '2021-06-01')", (video,))

    snapshot = take_snapshot(conn, tmp_path / "snap")

    assert values(snapshot, "videos") == rows(
        conn, f"select {VIDEO_COLUMNS} from videos order by id"
    )
    assert values(snapshot, "decisions") == rows(
        conn,
        "select id, user_id::text, video_id, decision, created_at from user_video_decisions"
        " order by created_at, id",
    )
    assert values(snapshot, "reviews") == rows(
        conn, 'select * from video_reviews order by created_at, reviewer_id collate "C", video_id'
    )
    by_id = {v["id"]: v for v in read(snapshot, "videos")}
    assert by_id[video]["description"] == tricky and by_id[video]["maker"] is None
    assert by_id[video]["performers"] == ["山田 花子", None]
    assert [d["user_id"] for d in read(snapshot, "decisions") if d["video_id"] == video] == [USER]
    schema = pq.read_schema(snapshot.path("decisions"))
    assert str(schema.field("created_at").type) == "timestamp[us, tz=UTC]"


def test_content_hash_depends_on_content_only(loaded, tmp_path):
    conn, cutoff = loaded
    first = take_snapshot(conn, tmp_path / "a", cutoff=cutoff)
    naive_utc = cutoff.astimezone(UTC).replace(tzinfo=None)
    again = take_snapshot(conn, tmp_path / "b", cutoff=naive_utc, batch_rows=7)
    assert again.cutoff == first.cutoff and again.content_hash == first.content_hash
    assert again.files["decisions"]["sha256"] != first.files["decisions"]["sha256"]  # row groups

    video = scalar(
        conn, "select min(video_id) from video_reviews where created_at <= %s", (cutoff,)
    )
    execute(conn, "update videos set description = '' where id = %s", (video,))
    empty = take_snapshot(conn, tmp_path / "c", cutoff=cutoff)
    execute(conn, "update videos set description = null where id = %s", (video,))
    null = take_snapshot(conn, tmp_path / "d", cutoff=cutoff)
    execute(
        conn,
        "update video_reviews set rating = 1 + rating %% 5 where (reviewer_id, video_id) ="
        " (select reviewer_id, video_id from video_reviews where created_at <= %s limit 1)",
        (cutoff,),
    )
    rating = take_snapshot(conn, tmp_path / "e", cutoff=cutoff)
    hashes = {s.content_hash for s in (first, empty, null, rating)}
    assert len(hashes) == 4


def test_refusals_leave_existing_folders_alone(loaded, tmp_path):
    conn, cutoff = loaded
    with pytest.raises(SnapshotError, match="in the future"):
        take_snapshot(conn, tmp_path / "future", cutoff=datetime.now(UTC) + timedelta(hours=1))
    assert not (tmp_path / "future").exists()

    target = tmp_path / "snap"
    first = take_snapshot(conn, target, cutoff=cutoff)
    with pytest.raises(SnapshotExistsError, match="overwrite"):
        take_snapshot(conn, target)
    assert read_metadata(target, verify=True).content_hash == first.content_hash
    replaced = take_snapshot(conn, target, overwrite=True)
    assert read_metadata(target).content_hash == replaced.content_hash
    assert replaced.row_counts["decisions"] > first.row_counts["decisions"]

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SnapshotError, match="other files"):
        take_snapshot(conn, tmp_path / "other")

    def crash(table):
        if table == "decisions":
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        take_snapshot(conn, tmp_path / "crashed", progress=crash)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "snap"]  # no leftovers

    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "videos.parquet").write_bytes(b"PAR1")
    with pytest.raises(IncompleteSnapshotError, match=r"no metadata\.json"):
        read_metadata(incomplete)


def test_object_store_mode_writes_metadata_last_and_redoes_a_dead_run(loaded, tmp_path):
    """A filesystem that is not LocalFileSystem takes the object-store path (no folder rename)."""
    conn, cutoff = loaded
    store = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())

    def crash(table):
        if table == "decisions":
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        take_snapshot(conn, "runs/1", cutoff=cutoff, filesystem=store, progress=crash)
    assert (tmp_path / "runs/1/videos.parquet").exists()
    with pytest.raises(IncompleteSnapshotError):
        read_metadata("runs/1", filesystem=store)

    done = take_snapshot(conn, "runs/1", cutoff=cutoff, filesystem=store)
    assert read_metadata("runs/1", filesystem=store, verify=True) == done
    local = take_snapshot(conn, f"file://{tmp_path}/local", cutoff=cutoff)
    assert local.content_hash == done.content_hash


def test_the_connection_is_left_as_it_was(conn, tmp_path):
    conn.set_session(isolation_level="SERIALIZABLE", readonly=False)
    settings = (conn.isolation_level, conn.readonly, conn.autocommit)
    take_snapshot(conn, tmp_path / "a", cutoff=datetime(2026, 1, 1))  # naive: UTC
    assert (conn.isolation_level, conn.readonly, conn.autocommit) == settings
    add_video(conn, "writable-again")

    conn.autocommit = True
    snapshot = take_snapshot(conn, tmp_path / "b")
    assert conn.autocommit and snapshot.row_counts["videos"] == 1
    assert read_metadata(tmp_path / "a").cutoff == datetime(2026, 1, 1, tzinfo=UTC)

    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("select 1")
    with pytest.raises(SnapshotError, match="inside a transaction"):
        take_snapshot(conn, tmp_path / "c")
    conn.rollback()


def test_cli_snapshot(loaded, db_url, tmp_path):
    _, cutoff = loaded
    env = {**os.environ, "DATABASE_URL": db_url, "SWIPEREC_HOME": str(tmp_path / "home")}

    def swiperec(*args):
        return subprocess.run(
            [sys.executable, "-m", "swiperec.cli", "snapshot", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    out = tmp_path / "snap"
    at = cutoff.astimezone(UTC).isoformat().replace("+00:00", "Z")
    done = swiperec("--out", str(out), "--cutoff", at)
    assert done.returncode == 0, done.stderr
    metadata = read_metadata(out)
    assert metadata.cutoff == cutoff
    assert metadata.content_hash in done.stdout
    assert f"{metadata.row_counts['decisions']:,} rows" in done.stdout

    again = swiperec("--out", str(out), "--cutoff", at)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert swiperec("--out", str(out), "--overwrite").returncode == 0
    future = swiperec("--out", str(tmp_path / "f"), "--cutoff", "2999-01-01T00:00:00Z")
    assert future.returncode == 2 and "in the future" in future.stderr
    assert swiperec("--out", "x", "--cutoff", "yesterday").returncode == 2
    assert "--cutoff" in swiperec("--help").stdout


def test_an_infinite_swipe_time_fails_the_snapshot_and_leaves_the_connection_usable(conn, tmp_path):
    video = add_video(conn, "v", release_date=date(2020, 1, 1))
    execute(
        conn,
        "insert into user_video_decisions (user_id, video_id, decision, created_at)"
        " values (%s, %s, 'like', '-infinity')",
        (USER, video),
    )
    with pytest.raises(SnapshotError, match="infinite"):
        take_snapshot(conn, tmp_path / "snap")
    assert not (tmp_path / "snap").exists() and list(tmp_path.iterdir()) == []
    assert scalar(conn, "select count(*) from videos") == 1
