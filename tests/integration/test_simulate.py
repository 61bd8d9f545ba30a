"""`swiperec simulate`: simulated users against the real serving path.

The module works on a copy of the session's serving database (`serving_base` in conftest: the
tiny synthetic data set, a snapshot, a version written from it by the batch writer, blessed
and promoted), and the simulator runs against it with the real Edge Function under Deno, which
it starts itself. The checks read the database, not the simulator's own counts: the swipes it
reports are the rows the authenticated path wrote, the function logged what it served, new
videos and users arrived, and the users liked what they were served as often as the ground
truth says they would.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from swiperec.data.synthetic import SyntheticConfig, generate
from swiperec.db import connect
from swiperec.simulate import SimulationError, SimulationOptions, simulate
from swiperec.simulate.edge import DenoNotFound, find_deno
from swiperec.simulate.users import AccessTokens
from tests.conftest import SERVING_VERSION, database_copy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DENO = ROOT / "tools" / "deno" / "node_modules" / ".bin" / "deno"
VERSION = SERVING_VERSION


@pytest.fixture(scope="module")
def prepared(pg_server, serving_base):
    """(database URL, ground truth, its saved path): a copy of the session's serving database
    for this module's runs."""
    for url in database_copy(pg_server, serving_base.name):
        yield url, serving_base.truth, serving_base.truth_path


@pytest.fixture
def deno_env(monkeypatch):
    if not DENO.exists():
        pytest.fail(f"Deno is not installed at {DENO.relative_to(ROOT)}: run `make deno`")
    monkeypatch.setenv("SWIPEREC_DENO", str(DENO))


def server_now(url: str):
    conn = connect(url)
    with conn.cursor() as cur:
        cur.execute("select clock_timestamp()")
        now = cur.fetchone()[0]
    conn.close()
    return now


@pytest.mark.slow
def test_simulated_users_swipe_through_the_real_serving_path(prepared, deno_env, monkeypatch):
    url, truth, _ = prepared
    # The simulator's sessions in a zone whose day is not UTC's at this hour (libpq's PGTZ):
    # UTC+14 from 10:00 UTC, else UTC-11. Days are UTC's whatever the zone.
    zone = "Pacific/Kiritimati" if datetime.now(UTC).hour >= 10 else "Pacific/Pago_Pago"
    monkeypatch.setenv("PGTZ", zone)
    options = SimulationOptions(
        rate=3, duration=12, users=40, organic=0.2, new_videos_per_minute=15,
        new_users_per_minute=10, seed=7,
    )  # fmt: skip
    started = server_now(url)
    progress = []
    report = simulate(url, truth, options, progress=lambda s, t: progress.append(t),
                      progress_every=4)  # fmt: skip
    print(report.format())  # shown with `pytest -s`

    # Every arrival was served, all 200, nothing went wrong; Deno is gone.
    assert report.requests >= 30 and report.missed_arrivals == 0
    assert report.status_counts == {"200": report.requests}, report.format()
    assert report.errors == 0 and report.failed_requests == 0, report.format()
    assert report.achieved_rate == pytest.approx(3, rel=0.15)
    assert report.latency_ms["p50"] <= report.latency_ms["p95"] <= report.latency_ms["p99"]
    assert len(progress) >= 2 and not report.interrupted
    assert not [p for p in psutil.Process().children(recursive=True) if "deno" in p.name()]

    new_users = report.new_user_truth
    users = report.participants + list(new_users)
    assert len(report.participants) == 40 and len(new_users) == 2  # at 3 s and 9 s
    conn = connect(url)
    with conn.cursor() as cur:
        # The swipes are the rows the authenticated path wrote: user from the claims, time
        # from the server clock.
        cur.execute(
            "select d.user_id::text, d.video_id, d.decision, v.external_id,"
            " exists (select from served_recommendations s where s.user_id = d.user_id"
            "         and s.video_id = d.video_id and s.created_at <= d.created_at)"
            " from user_video_decisions d join videos v on v.id = d.video_id"
            " where d.created_at >= %s and d.user_id = any(%s::uuid[]) order by d.id",
            (started, users),
        )
        swipes = cur.fetchall()
        cur.execute("select count(*) from user_video_decisions where created_at >= %s", (started,))
        all_new_rows = cur.fetchone()[0]
        cur.execute(
            "select user_id::text, source, count(distinct request_id) from served_recommendations"
            " where created_at >= %s group by 1, 2",
            (started,),
        )
        served = {(user, source): n for user, source, n in cur.fetchall()}
        cur.execute(
            "select external_id, title, release_date = (created_at at time zone 'UTC')::date"
            " from videos where external_id = any(%s)",
            (list(report.new_video_truth),),
        )
        new_videos = cur.fetchall()
        cur.execute("select external_id, title from videos")
        titles = dict(cur.fetchall())
    conn.close()

    assert len(swipes) == report.swipes == all_new_rows > 0
    assert sum(d == "like" for _, _, d, _, _ in swipes) == report.likes
    assert report.served_swipes > report.organic_swipes > 0
    assert report.duplicate_swipes == 0 and report.unknown_videos == 0

    # The function logged what it served, for the simulated users only.
    assert {user for user, _ in served} <= set(users)
    assert sum(served.values()) >= report.requests - 1  # the last log write may race the stop

    # New videos: copies of truth videos, released the day they were added (a check against
    # today's date would fail on a run crossing midnight), and swiped like their originals.
    assert len(new_videos) == report.new_videos == 3  # at 2, 6 and 10 s
    for external_id, title, today in new_videos:
        original = report.new_video_truth[external_id]
        assert external_id.startswith(f"{original}-new-") and today
        assert title == titles[original] + " 続編"

    # A new user: popular videos at first (no decisions yet), then swipes of their own.
    for user in new_users:
        assert served.get((user, "popular"), 0) >= 1, served
        assert any(u == user for u, *_ in swipes)

    # Likes follow the ground truth. Each swipe is an independent Bernoulli(P(like)) draw, so
    # among the swipes on served items the like count has mean sum(p) and standard deviation
    # sqrt(sum(p (1 - p))); 4 of those (~0.1 of the share for ~300 swipes) fail a correct
    # simulator about once in 16,000 runs. A wrong P(like) (another user's, a constant) keeps
    # the share plausible but not the ordering: liked items must have a higher mean P(like)
    # than noped ones (about 0.15 apart on this data, 5 standard errors).
    truth_user = {u: u for u in report.participants} | new_users
    new_video = report.new_video_truth
    on_served = [s for s in swipes if s[4]]
    p = truth.p_like(
        [truth_user[u] for u, *_ in on_served], [new_video.get(e, e) for _, _, _, e, _ in on_served]
    ).astype(np.float64)
    liked = np.array([d == "like" for _, _, d, _, _ in on_served])
    assert len(on_served) >= 200
    assert abs(liked.sum() - p.sum()) <= 4 * math.sqrt((p * (1 - p)).sum())
    assert p[liked].mean() > p[~liked].mean()
    tolerance = 4 * math.sqrt(report.served_swipes * 0.25)
    assert abs(report.served_likes - report.expected_served_likes) <= tolerance


def test_the_command_runs_and_prints_json(prepared, deno_env, tmp_path):
    url, _, truth_path = prepared
    env = {**os.environ, "DATABASE_URL": url, "SWIPEREC_HOME": str(tmp_path / "home")}
    env.pop("JWT_SECRET", None)
    result = subprocess.run(
        [sys.executable, "-m", "swiperec.cli", "simulate", "--duration", "3", "--rate", "2",
         "--users", "5", "--ground-truth", str(truth_path), "--json"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(result.stdout)
    assert report["requests"] == report["status_counts"]["200"] >= 5
    assert report["participants"] == 5 and report["errors"] == 0 and report["swipes"] > 0

    missing = subprocess.run(
        [sys.executable, "-m", "swiperec.cli", "simulate", "--ground-truth",
         str(tmp_path / "none.npz")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert missing.returncode == 2 and "no ground truth at" in missing.stderr


def test_a_stop_ends_the_run_cleanly(prepared, deno_env):
    url, truth, _ = prepared
    stop = threading.Event()  # set as a signal handler would, 1.5 s into the run
    report = simulate(url, truth, SimulationOptions(rate=4, duration=60, users=5, seed=3),
                      stop=stop, progress=lambda *_: stop.set(), progress_every=1.5)  # fmt: skip
    assert report.interrupted and report.elapsed < 5
    assert report.errors == 0 and report.requests == report.status_counts["200"] > 0


def test_a_foreign_ground_truth_and_a_missing_secret_are_refused(prepared):
    url, _, _ = prepared
    other = generate(SyntheticConfig(videos=50, users=5, pseudo_users=0, seed=99))
    other.ground_truth.video_external_ids[:] = [f"x{i}" for i in range(50)]
    with pytest.raises(SimulationError, match="another data set"):
        simulate(url, other.ground_truth, SimulationOptions(duration=1))
    with pytest.raises(SimulationError, match="JWT secret"):
        simulate(url, prepared[1], SimulationOptions(function_url="http://127.0.0.1:9/"))


def test_tokens_carry_the_claims_the_function_requires():
    import jwt

    tokens = AccessTokens("s" * 40, clock=lambda: 1_900_000_000.5)
    user = "0c01d5a2-7e11-4c3b-9a55-2d6f8e4b1c01"
    claims = jwt.decode(
        tokens.token(user), "s" * 40, algorithms=["HS256"], audience="authenticated",
        options={"verify_exp": False, "verify_iat": False},
    )  # fmt: skip
    assert claims == {"sub": user, "role": "authenticated", "aud": "authenticated",
                      "iat": 1_900_000_000, "exp": 1_900_003_600}  # fmt: skip
    assert tokens.token(user) == tokens.token(user)  # one token per user until renewed


def test_deno_is_found_or_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SWIPEREC_DENO", str(tmp_path / "nope"))
    with pytest.raises(DenoNotFound, match="SWIPEREC_DENO"):
        find_deno()
    monkeypatch.delenv("SWIPEREC_DENO")
    with pytest.raises(DenoNotFound, match="make deno"):
        find_deno({"PATH": str(tmp_path)}, cwd=tmp_path)
    if DENO.exists():
        assert find_deno({"PATH": ""}, cwd=ROOT) == DENO
