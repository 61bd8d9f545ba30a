"""Monitoring passes on a real database: metrics from served rows and the swipes that followed,
idempotent and incremental passes, partitions and retention, alert rules and their webhook.

Served rows are inserted directly here, with times and outcomes chosen so that every figure
can be worked out by hand; the simulator's end-to-end run is in test_simulate.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from swiperec.monitoring import alerts
from swiperec.monitoring.compute import analyze_changed_partitions, floor_to_bucket, run_pass
from swiperec.monitoring.config import AlertRule, ConfigError, load_config

pytestmark = pytest.mark.integration

HOUR = 3600


def config(**buckets):
    base = load_config()
    values = {"seconds": HOUR, "attribution_seconds": 600, "settle_seconds": 600,
              "session_gap_seconds": 1800, "new_user_days": 7, "new_video_days": 30,
              **buckets}  # fmt: skip
    return type(base)(type(base.buckets)(**values), base.retention, (), base.source)


def setup_catalogue(conn, videos: int = 20) -> None:
    """Videos 1..n (genres alternate ドラマ / コメディ, makers m0..m4), version v1 serving."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "insert into videos (external_id, title, genres, maker, release_date)"
            " select 'v' || g, 'title ' || g, case when g %% 2 = 0 then '{ドラマ}'::text[]"
            " else '{コメディ}'::text[] end, 'm' || g %% 5, date '2020-01-01'"
            " from generate_series(1, %s) g",
            (videos,),
        )
        cur.execute("insert into model_versions (model_version, stage) values ('v1', 'production')")
        cur.execute("insert into serving_state (model_version) values ('v1')")


def serve(cur, user: str, at: datetime, videos: list[int], source: str = "embedding",
          version: str = "v1", route: str = "default", status: int = 200,
          duration_ms: float = 20.0) -> str:  # fmt: skip
    request = str(uuid.uuid4())
    for position, video in enumerate(videos, 1):
        cur.execute(
            "insert into served_recommendations (request_id, user_id, video_id, position, score,"
            " model_version, source, reason, route, created_at) values"
            " (%s, %s, %s, %s, 0.5, %s, %s, 'r', %s, %s)",
            (request, user, video, position, version, source, route, at),
        )  # fmt: skip
    cur.execute(
        "insert into serving_requests (request_id, user_id, status, duration_ms, model_version,"
        " route, source, items, created_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (request, user, status, duration_ms, version, route, source, len(videos), at),
    )  # fmt: skip
    return request


def swipe(cur, user: str, video: int, decision: str, at: datetime) -> None:
    cur.execute("insert into user_video_decisions (user_id, video_id, decision, created_at)"
                " values (%s, %s, %s, %s)", (user, video, decision, at))  # fmt: skip


def metrics(conn, bucket: datetime, version: str = "*", route: str = "*",
            segment: str = "all") -> dict:  # fmt: skip
    with conn.cursor() as cur:
        cur.execute("select metric, value, samples from monitoring_metrics where bucket_start = %s"
                    " and model_version = %s and route = %s and segment = %s",
                    (bucket, version, route, segment))  # fmt: skip
        rows = {m: (v, n) for m, v, n in cur.fetchall()}
    conn.rollback()
    return rows


def test_metrics_of_a_bucket_are_what_followed_the_serves(conn):
    setup_catalogue(conn)
    now = datetime.now(UTC)
    bucket = floor_to_bucket(now - timedelta(hours=3), HOUR)
    t = bucket + timedelta(minutes=10)
    returning, new = str(uuid.uuid4()), str(uuid.uuid4())
    with conn, conn.cursor() as cur:
        swipe(cur, returning, 20, "like", t - timedelta(days=30))  # a returning user
        # Returning user: 4 items served; 3 swiped (2 likes), one ignored. One more request
        # 5 min later (same session) with 2 items, both noped.
        serve(cur, returning, t, [1, 2, 3, 4])
        swipe(cur, returning, 1, "like", t + timedelta(seconds=5))
        swipe(cur, returning, 2, "like", t + timedelta(seconds=9))
        swipe(cur, returning, 3, "nope", t + timedelta(seconds=12))
        serve(cur, returning, t + timedelta(minutes=5), [5, 6], duration_ms=40.0)
        swipe(cur, returning, 5, "nope", t + timedelta(minutes=5, seconds=3))
        swipe(cur, returning, 6, "nope", t + timedelta(minutes=5, seconds=6))
        # New user, popular source: 2 items, 1 like that came too late (after attribution).
        serve(cur, new, t + timedelta(minutes=20), [7, 8], source="popular", status=500,
              duration_ms=100.0)  # fmt: skip
        swipe(cur, new, 7, "like", t + timedelta(minutes=20 + 11))
    summary = run_pass(conn, config(), now=now)
    assert bucket in summary.buckets

    m = metrics(conn, bucket)
    assert m["served_items"] == (8, 8)
    assert m["swipe_through"] == (5 / 8, 8)  # the late like is not an outcome
    assert m["like_rate"] == (2 / 5, 5)
    assert m["requests"] == (3, 3)
    assert m["hit_rate"] == (1 / 3, 3)
    assert m["likes_per_session"] == (2 / 2, 2)  # two sessions: the returning user's, the new
    assert m["coverage"] == (8 / 20, 8)
    assert m["maker_diversity"][0] == pytest.approx((4 / 4 + 2 / 2 + 2 / 2) / 3)
    # Genres alternate, so a list of n items has pairs of equal and different genres.
    assert m["genre_diversity"][0] == pytest.approx((4 / 6 + 1 + 1) / 3)
    assert m["source_share:embedding"] == (2 / 3, 3)
    assert m["source_share:popular"] == (1 / 3, 3)
    assert m["error_rate"] == (1 / 3, 3)
    assert m["latency_p50_ms"][0] == pytest.approx(40.0)
    assert m["swipe_like_rate"][0] == pytest.approx(3 / 6)  # every swipe in the bucket
    # Segments: by user and source.
    assert metrics(conn, bucket, segment="user:returning")["like_rate"] == (2 / 5, 5)
    assert metrics(conn, bucket, segment="user:new")["swipe_through"] == (0.0, 2)
    assert metrics(conn, bucket, segment="source:popular")["served_items"] == (2, 2)
    assert metrics(conn, bucket, version="v1", route="default")["like_rate"] == (2 / 5, 5)

    # Idempotent: the same bucket again gives the same rows.
    with conn, conn.cursor() as cur:
        cur.execute("delete from swiperec_private.monitoring_state")
    run_pass(conn, config(), now=now)
    assert metrics(conn, bucket) == m


def test_passes_are_incremental_and_final_buckets_are_not_read_again(conn):
    setup_catalogue(conn)
    now = datetime.now(UTC)
    user = str(uuid.uuid4())
    old = floor_to_bucket(now - timedelta(hours=5), HOUR)
    with conn, conn.cursor() as cur:
        serve(cur, user, old + timedelta(minutes=1), [1, 2])
    first = run_pass(conn, config(), now=now)
    assert first.buckets[0] == old
    assert old < first.final_through <= now - timedelta(seconds=600)
    # A swipe on the old bucket's item after it became final changes nothing: not read again.
    with conn, conn.cursor() as cur:
        swipe(cur, user, 1, "like", old + timedelta(minutes=2))
    later = now + timedelta(minutes=1)
    second = run_pass(conn, config(), now=later)
    assert old not in second.buckets and second.buckets[0] >= first.final_through
    assert metrics(conn, old)["swipe_through"] == (0.0, 2)


def test_a_pass_analyzes_the_day_partitions_it_reads_once_they_changed(conn):
    """The newest buckets' rows arrive after their partition's statistics; without fresh ones
    the planner plans the newest hour on statistics that do not count it."""
    setup_catalogue(conn)
    now = datetime.now(UTC)
    today = [f"served_recommendations_{now:%Y%m%d}", f"serving_requests_{now:%Y%m%d}"]
    with conn, conn.cursor() as cur:  # as a database migrated before midnight has: never read
        for log in ("public.served_recommendations", "public.serving_requests"):
            cur.execute("select swiperec_private.ensure_day_partitions(%s, %s, %s)",
                        (log, now.date() - timedelta(days=1), now.date()))  # fmt: skip

    def changed_since_analyze() -> dict:
        with conn.cursor() as cur:
            cur.execute("select relname, n_mod_since_analyze from pg_stat_user_tables"
                        " where relname = any(%s)", (today,))  # fmt: skip
            rows = dict(cur.fetchall())
        conn.rollback()
        return rows

    run_pass(conn, config(), now=now)
    with conn, conn.cursor() as cur:
        serve(cur, str(uuid.uuid4()), floor_to_bucket(now, HOUR), [1, 2, 3])  # today
        cur.execute("select pg_stat_force_next_flush()")
    assert changed_since_analyze() == {today[0]: 3, today[1]: 1}
    summary = run_pass(conn, config(), now=now)
    assert summary.buckets[-1] == floor_to_bucket(now, HOUR)
    assert changed_since_analyze() == {today[0]: 0, today[1]: 0}
    # Nothing changed since: the next pass, reading from the same bucket, samples nothing again
    # (and nothing of yesterday's, never analyzed, unless its buckets are the pass's own).
    assert analyze_changed_partitions(conn, summary.buckets[0], now) == []


def test_partitions_ahead_and_retention(conn):
    now = datetime.now(UTC)
    old_day = now.date() - timedelta(days=100)
    with conn, conn.cursor() as cur:  # an old day with a partition of its own
        cur.execute("select swiperec_private.ensure_day_partitions("
                    "'public.served_recommendations', %s, %s)", (old_day, old_day))  # fmt: skip
        # Two days ago had no partition: its request went to the default partition.
        serve(cur, str(uuid.uuid4()), now - timedelta(days=2), [])
    summary = run_pass(conn, config(), now=now)
    # The migration made today's and the next days' partitions; the pass adds the two days the
    # default partition held rows for (or more, if the session began days ago), and moves them.
    assert summary.partitions_created >= 2
    assert summary.partitions_dropped == ["served_recommendations_" + old_day.strftime("%Y%m%d")]
    assert run_pass(conn, config(), now=now).partitions_created == 0
    with conn.cursor() as cur:
        serve(cur, str(uuid.uuid4()), now, [])  # today's row: today's partition
        cur.execute("select count(*) from swiperec_private.serving_requests_default")
        assert cur.fetchone()[0] == 0
        cur.execute("select tableoid::regclass::text, count(*) from serving_requests group by 1")
        days = dict(cur.fetchall())
    conn.rollback()
    two_days_ago = (now - timedelta(days=2)).strftime("%Y%m%d")
    assert days == {f"swiperec_private.serving_requests_{two_days_ago}": 1,
                    f"swiperec_private.serving_requests_{now:%Y%m%d}": 1}  # fmt: skip


def test_day_partitions_are_utc_days_in_any_session_zone(conn):
    # Chile's daylight saving starts at midnight (2026-09-06 has no 00:00 there): stepping from
    # day to day in that zone put the days after the change at 01:00, past the range's end.
    with conn, conn.cursor() as cur:
        cur.execute("set timezone = 'America/Santiago'")
        cur.execute("select '2026-09-06 00:00'::timestamptz::time")
        assert str(cur.fetchone()[0]) == "01:00:00"  # the zone's rules as this test knows them
        cur.execute("select swiperec_private.ensure_day_partitions('public.served_recommendations',"
                    " date '2026-09-05', date '2026-09-07')")  # fmt: skip
        assert cur.fetchone()[0] == 3
        serve(cur, str(uuid.uuid4()), datetime(2026, 9, 7, 12, tzinfo=UTC), [1])
        cur.execute("select tableoid::regclass::text from served_recommendations")
        assert cur.fetchall() == [("swiperec_private.served_recommendations_20260907",)]


def test_a_versions_baseline_counts_swipes_per_user_in_utc_hours(conn):
    from swiperec.monitoring.compute import ensure_baselines

    setup_catalogue(conn)  # v1 serving, made now
    with conn, conn.cursor() as cur:
        # Asia/Kolkata is UTC+05:30: its hours begin at half past UTC's.
        cur.execute("set timezone = 'Asia/Kolkata'")
        user = str(uuid.uuid4())
        hour = floor_to_bucket(datetime.now(UTC), HOUR) - timedelta(hours=3)
        # One user's swipes at 0:50 and 1:10 past a UTC hour: two UTC hours, one Kolkata hour.
        swipe(cur, user, 1, "like", hour + timedelta(minutes=50))
        swipe(cur, user, 2, "nope", hour + timedelta(minutes=70))
    ensure_baselines(conn)
    with conn.cursor() as cur:
        cur.execute(
            "select swipes, like_rate, swipes_per_user from swiperec_private.monitoring_baselines"
            " where model_version = 'v1'"
        )
        assert cur.fetchone() == (2, 0.5, 1.0)  # one swipe per active user in each UTC hour
    conn.rollback()


# Berlin's change to summer time in 2026: at 01:00 UTC on 29 March its clocks go from 02:00 CET
# (UTC+1) to 03:00 CEST (UTC+2). Half an hour after it, n calendar days back are n x 24 - 1
# hours: the days the windows must not be counted in.
AFTER_BERLIN_CHANGE = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST


def set_berlin(cur) -> None:
    """The session's zone: Europe/Berlin, its rule checked as these tests know it (so that they
    cannot pass for want of a change, should the zone's data change)."""
    cur.execute("set timezone = 'Europe/Berlin'")
    cur.execute("select extract(epoch from %(t)s - (%(t)s - interval '7 days'))::int,"
                " extract(epoch from %(t)s - (%(t)s - interval '30 days'))::int",
                {"t": AFTER_BERLIN_CHANGE})  # fmt: skip
    assert cur.fetchone() == (167 * HOUR, 719 * HOUR)


def test_new_users_and_videos_are_24_hour_days_back_across_a_dst_change(conn):
    """The segments user:new and video:new look back new_user_days and new_video_days times 24
    hours from the serve, whatever the session's zone: from half an hour after Berlin's change
    to summer time, `interval '7 days'` back is 167 hours (30 days, 719), so a first swipe
    167.5 hours before the serve would read as a returning user's, a video made 719.5 hours
    before it as old."""
    setup_catalogue(conn)
    served_at = AFTER_BERLIN_CHANGE
    newcomer, regular = str(uuid.uuid4()), str(uuid.uuid4())
    with conn, conn.cursor() as cur:
        set_berlin(cur)
        cur.execute("insert into videos (external_id, title, created_at)"
                    " values ('fresh', 'fresh', %s) returning id",
                    (served_at - timedelta(hours=30 * 24 - 0.5),))  # fmt: skip
        fresh = cur.fetchone()[0]  # no release date: its age is its row's
        swipe(cur, newcomer, 3, "like", served_at - timedelta(hours=7 * 24 - 0.5))  # first swipes
        swipe(cur, regular, 4, "like", served_at - timedelta(hours=7 * 24 + 0.5))
        serve(cur, newcomer, served_at, [1, fresh])
        serve(cur, regular, served_at, [2])
    run_pass(conn, config(new_user_days=7, new_video_days=30),
             now=served_at + timedelta(hours=1))  # fmt: skip
    bucket = floor_to_bucket(served_at, HOUR)
    assert metrics(conn, bucket, segment="user:new").get("served_items") == (2, 2)
    assert metrics(conn, bucket, segment="user:returning")["served_items"] == (1, 1)
    assert metrics(conn, bucket, segment="user:new").get("requests") == (1, 1)
    assert metrics(conn, bucket, segment="video:new").get("served_items") == (1, 1)
    assert metrics(conn, bucket, segment="video:old")["served_items"] == (2, 2)


def test_a_versions_baseline_is_168_hours_back_across_a_dst_change(conn):
    """The training week a version's baseline counts ends at its last swipe and begins 168
    hours before it, whatever the session's zone (7 days back in Berlin from half an hour after
    its change to summer time are 167 hours: a swipe 167.5 hours before the end would be left
    out)."""
    from swiperec.monitoring.compute import ensure_baselines

    setup_catalogue(conn)  # v1 serving
    end = AFTER_BERLIN_CHANGE
    user = str(uuid.uuid4())
    with conn, conn.cursor() as cur:
        set_berlin(cur)
        cur.execute("update model_versions set created_at = %s where model_version = 'v1'",
                    (end + timedelta(minutes=20),))  # fmt: skip
        swipe(cur, user, 1, "like", end)  # the last swipe before v1 was made: the week's end
        swipe(cur, user, 2, "nope", end - timedelta(hours=168 - 0.5))  # in the week
        swipe(cur, user, 3, "nope", end - timedelta(hours=168 + 0.5))  # before it
    ensure_baselines(conn)
    with conn.cursor() as cur:
        cur.execute(
            "select window_start, window_end, swipes, like_rate"
            " from swiperec_private.monitoring_baselines where model_version = 'v1'"
        )
        assert cur.fetchone() == (end - timedelta(hours=168), end, 2, 0.5)
    conn.rollback()


def test_serving_logs_from_before_partitioning_move_into_their_utc_days(pg_server, tmp_path):
    """A database migrated before the logs were partitioned: the monitoring migration moves its
    rows into day partitions made from their UTC days, whatever the session's time zone."""
    import psycopg2

    from swiperec.db import connect
    from swiperec.db.migrate import list_migrations, migrate

    earlier = tmp_path / "migrations"
    earlier.mkdir()
    for migration in list_migrations():
        if migration.version < "20261203010000":  # the monitoring migration
            (earlier / migration.path.name).symlink_to(migration.path)
    admin = psycopg2.connect(pg_server.status().url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("drop database if exists before_partitions with (force)")
        cur.execute("create database before_partitions")
    old = None
    try:
        old = connect(pg_server.status().url.rsplit("/", 1)[0] + "/before_partitions")
        with old.cursor() as cur:
            cur.execute("set timezone = 'Asia/Tokyo'")  # UTC+9: 20:00 UTC is the next day there
        old.commit()
        migrate(old, earlier, local_bootstrap=True)
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        late_evening = datetime.combine(yesterday, datetime.min.time(), UTC) + timedelta(hours=20)
        with old, old.cursor() as cur:
            cur.execute(
                "insert into served_recommendations (request_id, user_id, video_id, position,"
                " score, model_version, source, reason, created_at)"
                " values (gen_random_uuid(), gen_random_uuid(), 1, 1, 0.5, 'v1', 'embedding',"
                " 'popular', %s)", (late_evening,))  # fmt: skip
        migrate(old, local_bootstrap=True)
        with old.cursor() as cur:
            cur.execute("select tableoid::regclass::text, created_at from served_recommendations")
            assert cur.fetchall() == [
                (f"swiperec_private.served_recommendations_{yesterday:%Y%m%d}", late_evening)
            ]
    finally:
        if old is not None:
            old.close()
        with admin.cursor() as cur:
            cur.execute("drop database before_partitions with (force)")
        admin.close()


class Webhook(BaseHTTPRequestHandler):
    received: ClassVar[list] = []

    def do_POST(self):
        Webhook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_alert_rules_fire_once_with_enough_samples_and_reach_the_webhook(conn, monkeypatch):
    now = datetime.now(UTC)
    with conn, conn.cursor() as cur:  # a session zone half an hour off UTC's hours
        cur.execute("set timezone = 'Asia/Kolkata'")
    start, _ = build_history(conn, now)
    rule = AlertRule(name="like-rate drop", metric="like_rate", kind="relative_drop",
                     threshold=0.25, min_samples=10, baseline_buckets=6, min_baseline_buckets=3,
                     cooldown_buckets=6)  # fmt: skip
    cfg = config()
    cfg = type(cfg)(cfg.buckets, cfg.retention, (rule,), "")

    server = HTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(alerts.WEBHOOK_ENV, f"http://127.0.0.1:{server.server_port}/hook")
    Webhook.received = []
    try:
        summary = run_pass(conn, cfg, now=now)
        again = run_pass(conn, cfg, now=now + timedelta(minutes=1))
    finally:
        server.shutdown()
    # The quiet hour (2 samples < 10) fired nothing; the bad hour fired once.
    assert [a["bucket_start"] for a in summary.alerts] == [start + timedelta(hours=7)]
    assert summary.alerts[0]["value"] == pytest.approx(0.1)
    assert summary.alerts[0]["baseline"] == pytest.approx(0.5)
    assert again.alerts == []
    assert len(Webhook.received) == 1 and "like-rate drop" in Webhook.received[0]["text"]
    assert (
        f"the bucket of {start + timedelta(hours=7):%Y-%m-%d %H:%M} UTC"
        in (Webhook.received[0]["text"])
    )
    listed = alerts.list_alerts(conn)
    assert len(listed) == 1 and listed[0]["delivered_at"] is not None


def test_a_webhook_outage_keeps_the_alert_for_the_next_pass(conn, monkeypatch):
    setup_catalogue(conn)
    now = datetime.now(UTC)
    rule = AlertRule(name="errors", metric="error_rate", kind="above", threshold=0.1,
                     min_samples=1)  # fmt: skip
    cfg = config()
    cfg = type(cfg)(cfg.buckets, cfg.retention, (rule,), "")
    with conn, conn.cursor() as cur:
        serve(cur, str(uuid.uuid4()), floor_to_bucket(now, HOUR) - timedelta(hours=2), [1],
              status=500)  # fmt: skip
    monkeypatch.setenv(alerts.WEBHOOK_ENV, "http://127.0.0.1:9/unreachable")
    assert len(run_pass(conn, cfg, now=now).alerts) == 1
    assert "ConnectError" in alerts.list_alerts(conn)[0]["delivery_error"]
    delivered = []
    run_pass(conn, cfg, now=now, deliver=lambda alert: delivered.append(alert) or True)
    assert [a["rule"] for a in delivered] == ["errors"]
    assert alerts.list_alerts(conn)[0]["delivered_at"] is not None


def test_config_errors_name_the_field(tmp_path):
    assert {r.name for r in load_config().alerts} >= {"like-rate drop", "error rate"}
    bad = tmp_path / "m.toml"
    for text, needle in (
        ("[buckets]\nsecond = 60\n", "unknown key(s) ['second']"),
        ("[[alerts]]\nname='x'\nmetric='like_rate'\nkind='sideways'\nthreshold=1.0\n", "kind"),
        ("[[alerts]]\nname='x'\nmetric='like_rate'\nkind='above'\nthreshold='high'\n",
         "threshold must be float"),
        ("[retention]\nserved_days = 0\n", "served_days must be positive"),
        ("[[alerts]]\nname='x'\nmetric='like_rat'\nkind='above'\nthreshold=1.0\n",
         "unknown metric 'like_rat'"),
        ("[buckets]\nattribution_seconds = 600\nsettle_seconds = 60\n",
         "settle_seconds must be at least attribution_seconds"),
    ):  # fmt: skip
        bad.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_config(bad)


# -- the dashboard in a real browser ----------------------------------------------------------


def build_history(conn, now: datetime) -> tuple[datetime, str]:
    """Eight hours: six healthy (like-rate 0.5), a quiet one, a bad one (0.1); returns the
    first bucket and a user who was served."""
    setup_catalogue(conn, videos=400)
    start = floor_to_bucket(now - timedelta(minutes=20), HOUR) - timedelta(hours=8)
    video = iter(range(1, 401))
    with conn, conn.cursor() as cur:
        for hour, (items, likes) in enumerate([(40, 20)] * 6 + [(2, 0), (40, 4)]):
            at = start + timedelta(hours=hour, minutes=5)
            user = str(uuid.uuid4())
            served = [next(video) for _ in range(items)]
            serve(cur, user, at, served)
            for i, v in enumerate(served):
                swipe(cur, user, v, "like" if i < likes else "nope", at + timedelta(seconds=i + 1))
    return start, user


def test_dashboard_in_chromium_shows_the_database(conn, db_url, tmp_path):
    import shutil

    import httpx
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    from swiperec.monitoring.dashboard import create_app
    from tests.integration.test_realtime import free_port

    now = datetime.now(UTC)
    _, user = build_history(conn, now)
    rule = AlertRule(name="like-rate drop", metric="like_rate", kind="relative_drop",
                     threshold=0.25, min_samples=10)  # fmt: skip
    cfg = config()
    run_pass(conn, type(cfg)(cfg.buckets, cfg.retention, (rule,), ""), now=now,
             deliver=lambda alert: True)  # fmt: skip

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(db_url), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1600"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = None
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/api/overview").status_code == 200:
                    break
            time.sleep(0.1)
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        driver.get(base + "/")
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return document.body.dataset.ready === 'true'")
        )
        # The chart holds the database's series: like_rate of every version and route.
        chart = driver.execute_script(
            "const c = document.getElementById('series-chart');"
            " return {traces: c.data.map(t => ({name: t.name, x: t.x, y: t.y})),"
            " shapes: (c.layout.shapes || []).length}"
        )
        with conn.cursor() as cur:
            cur.execute("select bucket_start, value from monitoring_metrics where metric ="
                        " 'like_rate' and segment = 'all' and model_version = '*' and route = '*'"
                        " order by bucket_start")  # fmt: skip
            expected = cur.fetchall()
        conn.rollback()
        overall = next(t for t in chart["traces"] if t["name"] == "* / *")
        assert [datetime.fromisoformat(x) for x in overall["x"]] == [b for b, _ in expected]
        assert overall["y"] == pytest.approx([v for _, v in expected])
        assert len(expected) >= 8 and chart["shapes"] == 1  # the alert, marked
        rows = driver.execute_script(
            "return [...document.querySelectorAll('#alerts tbody tr')].map(r => r.innerText)"
        )
        assert len(rows) == 1 and "like-rate drop" in rows[0]

        # A user's served lists with their reasons.
        driver.find_element("id", "user-id").send_keys(user)
        driver.find_element("css selector", "#user-form button").click()
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return !!window.servedList"))
        served = driver.execute_script("return window.servedList.items.length")
        assert served == 40

        artifacts = Path(os.environ.get("SWIPEREC_TEST_ARTIFACTS", tmp_path))
        artifacts.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(artifacts / "dashboard.png"))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors

        # Prometheus: the same latest value.
        exposition = httpx.get(f"{base}/metrics").text
        line = ('swiperec_quality{bucket_seconds="3600",metric="like_rate",model_version="*",'
                'route="*",segment="all"}')  # fmt: skip
        assert f"{line} {expected[-1][1]}" in exposition
        assert 'swiperec_alerts_fired{rule="like-rate drop",severity="warning"} 1.0' in exposition
    finally:
        if driver is not None:
            driver.quit()
        server.should_exit = True
        thread.join(30)


def test_the_monitoring_pipeline_runs_on_kfps_local_runner(conn, db_url, tmp_path):
    from kfp import components, local

    from pipelines.__main__ import MONITORING

    now = datetime.now(UTC)
    start, _ = build_history(conn, now)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path),
               raise_on_error=True)  # fmt: skip
    pipeline = components.load_component_from_file(str(MONITORING))
    pipeline(database_url=db_url)
    # The packaged rules (hourly buckets): every hour of the history has its like-rate.
    with conn.cursor() as cur:
        cur.execute("select bucket_start, value from monitoring_metrics where metric = 'like_rate'"
                    " and model_version = '*' and route = '*' and segment = 'all'"
                    " and bucket_start < %s order by 1", (start + timedelta(hours=6),))  # fmt: skip
        assert cur.fetchall() == [(start + timedelta(hours=h), 0.5) for h in range(6)]
    conn.rollback()


def test_a_route_decides_both_the_version_and_the_route_a_user_is_logged_under(conn):
    setup_catalogue(conn)
    user = str(uuid.uuid4())
    with conn, conn.cursor() as cur:
        cur.execute("insert into model_versions (model_version) values ('v2')")
        cur.execute("insert into serving_routes (route, model_version, bucket_from, bucket_to)"
                    " values ('exp/treatment', 'v2', 0, 10000)")  # fmt: skip
        cur.execute("select serving_route_for(%s), serving_version_for(%s)", (user, user))
        assert cur.fetchone() == ("exp/treatment", "v2")
        cur.execute("update serving_routes set active = false")
        cur.execute("select serving_route_for(%s), serving_version_for(%s)", (user, user))
        assert cur.fetchone() == ("default", "v1")
