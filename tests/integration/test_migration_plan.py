"""A migration plan on a real database: advances and refusals, the mix a run trains at, the
gate of a candidate against the version serving, and the commands' printouts."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from swiperec.migration import plan as migration
from swiperec.migration.plan import MigrationError, PlanConfig, Stage
from swiperec.registry.versions import promote
from tests.integration.test_experiments import add_version, users

pytestmark = pytest.mark.integration

CONFIG = PlanConfig(
    stages=(
        Stage(1.0),
        Stage(0.5, min_real_users=30, min_real_swipes=300),
        Stage(0.0, min_real_users=60, min_real_swipes=600),
    ),
    like_rating=3,
    nope_rating=2,
    window_days=30,
)


@pytest.fixture
def db(conn):
    """v1 serving, v2 and v3 registered with ready sets; 20 videos, no swipes."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "insert into videos (external_id, title, genres, release_date)"
            " select 'v' || g, 'title ' || g, '{ドラマ}', date '2020-01-01'"
            " from generate_series(1, 20) g"
        )
    for i, version in enumerate(("v1", "v2", "v3")):
        add_version(conn, version, seed=i)
    promote(conn, "v1")
    return conn


def swipes(conn, people: int, each: int, *, days_ago: float = 1, seed: int = 0) -> None:
    """`each` swipes by each of `people` new users, `days_ago` days back."""
    at = datetime.now(UTC) - timedelta(days=days_ago)
    with conn, conn.cursor() as cur:
        for user in users(people, seed=seed):
            cur.execute(
                "insert into user_video_decisions (user_id, video_id, decision, created_at)"
                " select %s, g, case when g %% 3 = 0 then 'like' else 'nope' end,"
                " %s + g * interval '1 second' from generate_series(1, %s) g",
                (user, at, each),
            )


def passed_gate(conn, version: str, stage: int) -> None:
    gate = {"passed": True, "reasons": [], "serving": "v1", "comparison": None}
    migration.record_gate(conn, {"plan": "p", "stage": stage}, version, gate)


def test_a_plan_advances_only_when_live_and_entered_and_completes(db):
    plan = migration.create(db, "p", CONFIG, actor="ana")
    assert (plan["stage"], plan["live_stage"], plan["serving"]) == (0, 0, "v1")
    assert migration.training_mix(db) == {
        "plan": "p",
        "stage": 0,
        "feature_config": {"pseudo_user_weight": 1.0, "like_rating": 3, "nope_rating": 2},
    }
    # Too few real users and swipes for stage 1 (swipes older than the window do not count).
    swipes(db, 40, 10, days_ago=45, seed=1)
    swipes(db, 29, 10, seed=2)
    refused = migration.advance(db, actor="ana")
    assert refused["result"] == "refused" and refused["stage"] == 0
    assert refused["reasons"] == [
        "29 real users in the last 30 days, the stage needs 30",
        "290 real swipes in the last 30 days, the stage needs 300",
    ]
    swipes(db, 1, 10, seed=3)  # exactly the minimums
    assert migration.advance(db, actor="ana")["result"] == "advanced"
    assert migration.training_mix(db)["feature_config"]["pseudo_user_weight"] == 0.5
    # Stage 1 is not live until a candidate trained at it passed its gate and serves.
    swipes(db, 100, 10, seed=4)
    refused = migration.advance(db, actor="ana")
    assert refused["result"] == "refused"
    assert refused["reasons"][0].startswith("stage 1 is not live yet: the version serving (v1)")
    migration.record_gate(
        db,
        {"plan": "p", "stage": 1},
        "v3",
        {"passed": False, "reasons": ["worse"], "serving": "v1", "comparison": None},
    )
    promote(db, "v3")  # a failed candidate serving (by hand) does not make it live
    assert migration.get(db)["live_stage"] is None
    passed_gate(db, "v2", 1)
    promote(db, "v2")
    assert migration.get(db)["live_stage"] == 1
    assert migration.advance(db, actor="ana")["result"] == "advanced"
    passed_gate(db, "v3", 2)
    promote(db, "v3")
    done = migration.advance(db, actor="ana")
    assert done["result"] == "completed"
    assert migration.get(db) is None  # no active plan
    events = [(e["event"], e["stage"]) for e in migration.get(db, "p")["events"]]
    assert events == [
        ("planned", 0), ("refused", 0), ("advanced", 1), ("refused", 1), ("gate_failed", 1),
        ("gate_passed", 1), ("advanced", 2), ("gate_passed", 2), ("completed", 2),
    ]  # fmt: skip


def test_the_entry_window_is_24_hour_days_back_across_a_dst_change(db):
    """The entry condition counts the real swipes of the last window_days x 24 hours before
    now(), whatever the session's zone: across a change to daylight saving, `interval '7 days'`
    back from now() is 167 hours, and a swipe 167.5 hours old would be left out.

    A real zone changes twice a year, so on most dates no change falls in the last 7 days; the
    session's zone here is a POSIX one made for the day the test runs: UTC+0 until 02:00 UTC
    three days ago, UTC+1 from then until two months ahead."""
    with db.cursor() as cur:
        cur.execute("select now()")
        now = cur.fetchone()[0].astimezone(UTC)
    db.rollback()
    begins, ends = (now - timedelta(days=3)).date(), (now + timedelta(days=60)).date()
    # STD offset DST,start,end: offsets are hours west of UTC, DST one hour ahead of STD;
    # a plain number is the day of its year counted from 0 (leap days counted), at 02:00 local
    # time: the start at 02:00 UTC (XST), the end at 02:00 XDT, 01:00 UTC.
    zone = f"XST0XDT,{begins.timetuple().tm_yday - 1},{ends.timetuple().tm_yday - 1}"
    with db, db.cursor() as cur:
        cur.execute("set timezone = %s", (zone,))
        # The zone's rule as this test means it: daylight saving now, not a week ago; so 7
        # calendar days back from now() are 167 hours.
        cur.execute(
            "select extract(timezone_hour from now())::int,"
            " extract(timezone_hour from now() - interval '168 hours')::int,"
            " extract(epoch from now() - (now() - interval '7 days'))::int"
        )
        assert cur.fetchone() == (1, 0, 167 * 3600)
    config = PlanConfig(
        stages=(Stage(1.0), Stage(0.5, min_real_users=2, min_real_swipes=2)),
        like_rating=3,
        nope_rating=2,
        window_days=7,
    )
    migration.create(db, "p", config, actor="ana")
    inside, outside, recent = users(3, seed=7)
    with db, db.cursor() as cur:
        for user, hours_ago in ((inside, 7 * 24 - 0.5), (outside, 7 * 24 + 0.5), (recent, 1)):
            cur.execute(
                "insert into user_video_decisions (user_id, video_id, decision, created_at)"
                " values (%s, 1, 'like', %s)",
                (user, now - timedelta(hours=hours_ago)),
            )
    # (The swipes' ages are from the `now` read above: the later now() of the count moves the
    # window's start by the seconds between, far less than the half hour to spare.)
    assert migration.real_data(db, 7) == {"window_days": 7, "real_users": 2, "real_swipes": 2}
    assert migration.advance(db, actor="ana")["result"] == "advanced"


def test_one_active_plan_and_two_advances_at_once_move_one_stage(db, db_url, monkeypatch):
    from swiperec.db import connect

    migration.create(db, "p", CONFIG, actor="ana")
    with pytest.raises(MigrationError, match="plan 'p' is active"):
        migration.create(db, "q", CONFIG, actor="bo")
    with pytest.raises(MigrationError, match="a plan named 'p' exists"):
        migration.create(db, "p", CONFIG, actor="bo")
    swipes(db, 100, 10)
    # Both have read the plan (at stage 0, live) and counted the data before either moves it.
    counted, real_data = threading.Barrier(2, timeout=60), migration.real_data

    def count_then_wait(conn, window_days):
        out = real_data(conn, window_days)
        counted.wait()
        return out

    monkeypatch.setattr(migration, "real_data", count_then_wait)
    results = []

    def run():
        conn = connect(db_url)
        try:
            results.append(migration.advance(conn, actor="x")["result"])
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The second found stage 1 not live: one move, one refusal.
    assert sorted(results) == ["advanced", "refused"]
    assert migration.get(db)["stage"] == 1


def test_a_run_at_the_plans_stage_gets_its_mix(db, db_url, tmp_path):
    from swiperec.pipeline import steps

    with pytest.raises(MigrationError, match="no migration plan is active"):
        steps.ingest_snapshot(str(tmp_path / "s0"), database_url=db_url, migration=True)
    migration.create(db, "p", CONFIG, actor="ana")
    out = steps.ingest_snapshot(
        str(tmp_path / "s1"), database_url=db_url, migration=True, feature_config={"seed": 7}
    )
    assert out["feature_config"] == {
        "seed": 7, "pseudo_user_weight": 1.0, "like_rating": 3, "nope_rating": 2,
    }  # fmt: skip
    assert out["migration"]["plan"] == "p" and out["migration"]["stage"] == 0
    with pytest.raises(MigrationError, match="pseudo_user_weight given while the migration plan"):
        steps.ingest_snapshot(str(tmp_path / "s2"), database_url=db_url, migration=True,
                              feature_config={"pseudo_user_weight": 0.3})  # fmt: skip
    plain = steps.ingest_snapshot(str(tmp_path / "s3"), database_url=db_url)
    assert plain["migration"] is None and plain["feature_config"] == {}


def test_the_commands_plan_advance_refuse_and_show_status(db, db_url, monkeypatch, capsys):
    from swiperec.cli import main

    monkeypatch.setenv("DATABASE_URL", db_url)

    def run(*argv, code=0) -> str:
        assert main(list(argv)) == code
        return capsys.readouterr().out

    out = run("migration", "plan", "p", "--weights", "1,0.5", "--min-users", "0,30",
              "--min-swipes", "0,300", "--like-rating", "3")  # fmt: skip
    assert "migration plan p (active)" in out and "training uses stage 0" in out
    refused = run("migration", "advance", "--by", "ana", code=1)
    assert refused == (
        "advance refused at stage 0:\n"
        "  - 0 real users in the last 90 days, the stage needs 30\n"
        "  - 0 real swipes in the last 90 days, the stage needs 300\n"
    )
    swipes(db, 30, 10)
    advanced = run("migration", "advance", "--by", "ana")
    assert advanced.startswith("advanced: stage 1\n")
    status = run("migration", "status")
    assert (
        "training uses stage 1; live (the version serving, v1, was trained at): stage 0" in status
    )
    assert "refused     stage 0  ana: 0 real users" in status
    assert "advanced    stage 1  ana: pseudo-user weight 0.5" in status
    assert main(["migration", "plan", "again"]) == 2  # one active plan at a time
    assert "plan 'p' is active" in capsys.readouterr().err


def test_the_evaluate_step_blesses_only_through_the_stages_gate(
    db, db_url, trained, transformed, snapshot_dir, tmp_path
):
    """The session's model as the version serving and as the candidate: equal on real users,
    so the gate passes; when the serving version's model cannot be found, the gate fails and
    the candidate is not blessed, whatever its other checks say."""
    from swiperec.pipeline import steps

    with db, db.cursor() as cur:  # v1 serves; its model is the session's, with no evaluation
        cur.execute(
            "update model_versions set model_uri = %s, evaluation = null"
            " where model_version = 'v1'",
            (trained.model_dir,),
        )
    # v1 was trained at the defaults (ratings 4/2): a stage 0 at 3/2 is not what serves.
    with pytest.raises(MigrationError, match=r"stage 0 must be the mix the version serving"):
        migration.create(db, "p", CONFIG, actor="ana")
    today = Stage(1.0, like_rating=4, nope_rating=2)
    plan = migration.create(db, "p", replace(CONFIG, stages=(today, *CONFIG.stages[1:])),
                            actor="ana")  # fmt: skip
    assert plan["live_stage"] == 0 and plan["events"][0]["reason"] == "3 stages"
    mix = migration.training_mix(db)
    assert mix["feature_config"] == {"pseudo_user_weight": 1.0, "like_rating": 4,
                                     "nope_rating": 2}  # fmt: skip
    thresholds = {"min_auc": 0.0, "must_beat_popularity": False}  # the tiny model's

    def evaluate(version: str) -> dict:
        return steps.evaluate(
            trained.model_dir, transformed.examples_dir, transformed.transform_dir, snapshot_dir,
            str(tmp_path / version), model_version=version, database_url=db_url,
            thresholds=thresholds, migration=mix,
        )  # fmt: skip

    passed = evaluate("c1")
    assert passed["blessed"], passed["blessing"]["reasons"]
    (check,) = [c for c in passed["blessing"]["checks"] if c["name"] == "migration_gate_real_users"]
    assert check["passed"]
    models = passed["migration_gate"]["comparison"]["models"]
    assert models["c1"] == models["v1"]
    with db, db.cursor() as cur:
        cur.execute("update model_versions set model_uri = '' where model_version = 'v1'")
    failed = evaluate("c2")
    assert not failed["blessed"]
    assert failed["blessing"]["reasons"] == [
        "migration gate: the serving version v1 has no model in the registry to compare"
    ]
    with db, db.cursor() as cur:  # a model folder gone: the comparison fails, so does the gate
        cur.execute("update model_versions set model_uri = %s where model_version = 'v1'",
                    (str(tmp_path / "gone"),))  # fmt: skip
    broken = evaluate("c3")
    assert not broken["blessed"]
    (reason,) = broken["blessing"]["reasons"]
    assert reason.startswith("migration gate: the comparison with the version serving failed")
    events = [(e["event"], e["model_version"]) for e in migration.get(db)["events"]]
    assert events[-3:] == [("gate_passed", "c1"), ("gate_failed", "c2"), ("gate_failed", "c3")]
    with db.cursor() as cur:
        cur.execute("select blessed from model_versions where model_version = 'c2'")
        assert cur.fetchone() == (False,)
    db.rollback()


def test_the_dashboard_shows_the_plan_and_its_decisions(db, db_url):
    from starlette.testclient import TestClient

    from swiperec.migration.web import routes
    from swiperec.monitoring.dashboard import create_app

    with TestClient(create_app(db_url, extra_routes=routes(db_url))) as client:
        assert 'href="/migration"' in client.get("/").text
        assert "No migration plan" in client.get("/migration").text
        from swiperec.migration.calibrate import calibrate

        migration.create(db, "p", replace(CONFIG, calibration=calibrate(db)), actor="ana")
        migration.advance(db, actor="ana")  # refused: no real users yet
        migration.record_gate(
            db,
            {"plan": "p", "stage": 0},
            "v2",
            {"passed": False, "reasons": ["worse on real users"], "serving": "v1",
             "comparison": {"users": 12, "models": {
                 "v2": {"auc_like_vs_nope": 0.55, "recall@50": 0.1},
                 "v1": {"auc_like_vs_nope": 0.6, "recall@50": 0.2}}}},
        )  # fmt: skip
        page = client.get("/migration").text
        assert "Plan <b>p</b> (active): training uses stage 0" in page
        assert "<td>refused</td><td>0</td>" in page and "0 real users in the last 30 days" in page
        assert "<td>gate_failed</td>" in page and "worse on real users" in page
        assert "v2: AUC 0.5500, R@50 0.1000" in page
        assert "Calibration the plan was made with" in page and "too little overlap" in page
        migration.abandon(db, actor="ana", reason="enough")
        assert "Plan <b>p</b> (abandoned)" in client.get("/migration").text
        with pytest.raises(MigrationError, match="plan 'p' is not active"):
            migration.abandon(db, actor="bo", reason="again", name="p")


def test_a_stage_goes_live_when_its_canary_rollout_completes(db):
    from swiperec.experiments import design, rollout
    from swiperec.experiments.design import ExperimentConfig

    migration.create(db, "p", CONFIG, actor="ana")
    swipes(db, 30, 10)
    assert migration.advance(db, actor="ana")["result"] == "advanced"
    passed_gate(db, "v2", 1)
    design.start_rollout(db, "v2", config=ExperimentConfig(stages=(10, 50, 100)))
    # While the candidate has a share of users, v1 still serves: stage 1 is not live yet.
    assert migration.get(db)["live_stage"] == 0
    assert migration.advance(db, actor="ana")["result"] == "refused"
    assert rollout.advance(db, "rollout-v2", reason="fine", actor="ana") == "advance"
    assert migration.get(db)["live_stage"] == 0
    assert rollout.advance(db, "rollout-v2", reason="fine", actor="ana") == "complete"
    plan = migration.get(db)
    assert (plan["serving"], plan["live_stage"]) == ("v2", 1)
