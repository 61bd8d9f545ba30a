"""Experiments and rollouts on a real database: sticky assignment, overlap refusal, retention,
the analysis of logged traffic, and the rollout controller's moves.

Versions here are small embedding sets written through the store (20 videos, random vectors);
served rows, requests and swipes are inserted directly with outcomes chosen per arm, so what
the analysis and the controller must conclude is known. The simulator's end-to-end runs are in
tests/performance/bench_experiments.py.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from swiperec.embeddings import store
from swiperec.experiments import design, rollout
from swiperec.experiments.analysis import analyse
from swiperec.experiments.design import ExperimentConfig, ExperimentError
from swiperec.registry.versions import promote, record_evaluation

pytestmark = pytest.mark.integration

VIDEOS = 20


def add_version(conn, version: str, *, blessed: bool = True, seed: int = 0) -> None:
    """A registered version with ready sets: VIDEOS videos and no users, random vectors."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(VIDEOS, 768)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with store.writing(conn, version):
        for kind, ids, x in (
            ("video", range(1, VIDEOS + 1), vectors),
            ("user", [], np.zeros((0, 768), np.float32)),
        ):
            store.begin_set(conn, version, kind, expected_shards=1)
            store.copy_shard(conn, version, kind, "0", list(ids), x)
            store.finish_set(
                conn,
                version,
                kind,
                store.IndexParams(maintenance_work_mem="64MB", parallel_workers=0),
            )
    record_evaluation(conn, version, f"/models/{version}", {}, {"blessed": blessed})


@pytest.fixture
def db(conn):
    """v1 serving, v2 and v3 blessed and ready, v4 ready but not blessed; 20 videos."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "insert into videos (external_id, title, genres, maker, release_date)"
            " select 'v' || g, 'title ' || g, case when g %% 2 = 0 then '{ドラマ}'::text[]"
            " else '{コメディ}'::text[] end, 'm' || g %% 5, date '2020-01-01'"
            " from generate_series(1, %s) g",
            (VIDEOS,),
        )
    for i, version in enumerate(("v1", "v2", "v3")):
        add_version(conn, version, seed=i)
    add_version(conn, "v4", blessed=False, seed=4)
    promote(conn, "v1")
    return conn


def route_of(conn, user: str) -> tuple[str, str]:
    with conn.cursor() as cur:
        cur.execute("select serving_route_for(%s), serving_version_for(%s)", (user, user))
        row = cur.fetchone()
    conn.rollback()
    return row


def routes_of(conn, users: list[str]) -> dict[str, str]:
    with conn.cursor() as cur:
        cur.execute("select u::text, serving_route_for(u) from unnest(%s::uuid[]) u", (users,))
        out = dict(cur.fetchall())
    conn.rollback()
    return out


def users(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]


# -- assignment ----------------------------------------------------------------------------------


def test_arms_split_users_by_their_shares_and_keep_them(db):
    design.start(
        db, "exp-a", control="v1", arms={"treatment": "v2"}, shares={"treatment": 30}, holdout=10
    )
    people = users(4000)
    first = routes_of(db, people)
    counts = {r: sum(1 for v in first.values() if v == r) for r in set(first.values())}
    assert set(counts) == {"exp-a/treatment", "exp-a/holdout", "exp-a/control"}
    assert abs(counts["exp-a/treatment"] / 4000 - 0.30) < 0.03
    assert abs(counts["exp-a/holdout"] / 4000 - 0.10) < 0.02
    # Each arm serves its version; the holdout stays on control's.
    treated = next(u for u, r in first.items() if r == "exp-a/treatment")
    held = next(u for u, r in first.items() if r == "exp-a/holdout")
    assert route_of(db, treated) == ("exp-a/treatment", "v2")
    assert route_of(db, held) == ("exp-a/holdout", "v1")
    # Sticky across requests and across a serving switch: v3 now serves everyone else.
    promote(db, "v3")
    assert routes_of(db, people) == first
    assert route_of(db, next(u for u, r in first.items() if r == "exp-a/control"))[1] == "v1"
    # Ending the test sends everyone to the serving version.
    design.stop(db, "exp-a", reason="done")
    assert set(routes_of(db, people).values()) == {"default"}
    assert route_of(db, treated) == ("default", "v3")


def test_a_users_arm_follows_the_bucket_boundary_exactly(db):
    user = users(1, seed=5)[0]
    design.start(db, "probe", control="v1", arms={"treatment": "v2"}, shares={"treatment": 1})
    with db.cursor() as cur:
        cur.execute(
            "select swiperec_private.arm_bucket(%s, salt) from experiments where name = 'probe'",
            (user,),
        )
        bucket = cur.fetchone()[0]
        # [0, bucket) treatment: the user's bucket is the first of control.
        cur.execute(
            "update serving_routes set arm_to = %s where route = 'probe/treatment'", (bucket,)
        )
        cur.execute(
            "update serving_routes set arm_from = %s where route = 'probe/control'", (bucket,)
        )
    assert route_of(db, user)[0] == "probe/control"
    with db.cursor() as cur:  # one more bucket: now the last of treatment
        cur.execute(
            "update serving_routes set arm_to = %s where route = 'probe/treatment'", (bucket + 1,)
        )
        cur.execute(
            "update serving_routes set arm_from = %s where route = 'probe/control'", (bucket + 1,)
        )
    assert route_of(db, user)[0] == "probe/treatment"
    db.rollback()


def test_overlapping_traffic_is_refused_and_disjoint_traffic_runs(db):
    design.start(db, "left", control="v1", arms={"t": "v2"}, shares={"t": 50}, traffic=(0, 5000))
    with pytest.raises(ExperimentError, match="overlaps a running experiment"):
        design.start(
            db, "mid", control="v1", arms={"t": "v3"}, shares={"t": 50}, traffic=(4999, 6000)
        )
    design.start(
        db, "right", control="v1", arms={"t": "v3"}, shares={"t": 50}, traffic=(5000, 10000)
    )
    routes = set(routes_of(db, users(2000)).values())
    assert routes == {"left/t", "left/control", "right/t", "right/control"}
    with pytest.raises(ExperimentError, match="exists already"):
        design.start(db, "left", control="v1", arms={"t": "v2"}, shares={"t": 50}, traffic=(0, 10))
    # Once ended, its traffic is free again.
    design.stop(db, "left", reason="done")
    design.start(db, "again", control="v1", arms={"t": "v2"}, shares={"t": 50}, traffic=(0, 5000))


def test_two_starts_at_once_on_the_same_traffic_one_wins(db, db_url):
    from swiperec.db import connect

    outcomes, barrier = [], threading.Barrier(2)

    def run(name):
        conn = connect(db_url)
        try:
            barrier.wait()
            design.start(conn, name, control="v1", arms={"t": "v2"}, shares={"t": 50})
            outcomes.append("started")
        except ExperimentError as e:
            outcomes.append(str(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 2 and outcomes.count("started") == 1
    assert any("overlaps" in o for o in outcomes)
    with db.cursor() as cur:
        cur.execute("select count(*) from serving_routes where active")
        assert cur.fetchone()[0] == 2  # one experiment's two arms, nothing of the other
    db.rollback()


def test_bad_experiments_are_refused_with_the_reason(db):
    with pytest.raises(ExperimentError, match="not registered"):
        design.start(db, "x", control="v1", arms={"t": "v9"}, shares={"t": 50})
    with pytest.raises(ExperimentError, match="control needs the rest"):
        design.start(db, "x", control="v1", arms={"t": "v2"}, shares={"t": 95}, holdout=5)
    with pytest.raises(ExperimentError, match="would get no users"):
        design.start(db, "x", control="v1", arms={"t": "v2"}, shares={"t": 0.004})
    with pytest.raises(ExperimentError, match="built-in arms"):
        design.start(db, "x", control="v1", arms={"control": "v2"}, shares={"control": 50})
    with pytest.raises(ExperimentError, match="not blessed"):
        design.start_rollout(db, "v4")
    with pytest.raises(ExperimentError, match="serves already"):
        design.start_rollout(db, "v1")
    with pytest.raises(ExperimentError, match="stages must rise"):
        ExperimentConfig(stages=(5, 1, 100))
    with db.cursor() as cur:
        cur.execute("select count(*) from experiments")
        assert cur.fetchone()[0] == 0
    db.rollback()


def test_versions_in_a_running_experiment_are_never_retired(db):
    design.start(db, "keep", control="v1", arms={"t": "v4"}, shares={"t": 50})
    removed = store.retire(db, keep=0)
    assert "v4" not in removed and "v1" not in removed
    assert {"v2", "v3"} <= set(removed)


# -- analysis and the controller on logged traffic -------------------------------------------------


def log_traffic(
    conn,
    experiment: str,
    at: datetime,
    like_rates: dict[str, float],
    *,
    people: list[str],
    requests_per_user: int = 3,
    items: int = 5,
    seed: int = 0,
) -> None:
    """Each user's requests on the route serving_route_for gives them (in the minutes after
    `at`), `items` videos served per request, and a swipe on every item: like with the arm's
    probability. Three multi-row inserts."""
    from psycopg2.extras import execute_values

    rng = np.random.default_rng(seed)
    routes = routes_of(conn, people)
    with conn.cursor() as cur:
        cur.execute(
            "select a.route, a.arm, r.model_version from experiment_arms a "
            "join serving_routes r using (route) where a.experiment = %s",
            (experiment,),
        )
        arm_of = {route: (arm, version) for route, arm, version in cur.fetchall()}
    requests, served, swipes = [], [], []
    for i, user in enumerate(people):
        if routes[user] not in arm_of:
            continue
        arm, version = arm_of[routes[user]]
        for k in range(requests_per_user):
            when = at + timedelta(seconds=i % 50 + 60 * k)
            request = str(uuid.uuid4())
            videos = rng.choice(np.arange(1, VIDEOS + 1), size=items, replace=False)
            requests.append(
                (request, user, 20.0 + rng.exponential(5), version, routes[user], items, when)
            )
            for position, video in enumerate(videos, 1):
                served.append((request, user, int(video), position, version, routes[user], when))
                liked = rng.random() < like_rates[arm]
                swipes.append(
                    (
                        user,
                        int(video),
                        "like" if liked else "nope",
                        when + timedelta(seconds=2 + position),
                    )
                )
    with conn, conn.cursor() as cur:
        execute_values(
            cur,
            "insert into serving_requests (request_id, user_id, duration_ms,"
            " model_version, route, items, created_at, status, source) values %s",
            requests,
            template="(%s, %s, %s, %s, %s, %s, %s, 200, 'embedding')",
        )
        execute_values(
            cur,
            "insert into served_recommendations (request_id, user_id, video_id,"
            " position, model_version, route, created_at, score, source, reason)"
            " values %s",
            served,
            template="(%s, %s, %s, %s, %s, %s, %s, 0.5, 'embedding', 'r')",
        )
        execute_values(
            cur,
            "insert into user_video_decisions (user_id, video_id, decision, created_at) values %s",
            swipes,
        )
        # What autovacuum does after a load like this; without statistics the planner picks
        # nested loops over what it thinks are empty tables.
        cur.execute("analyze serving_requests, served_recommendations, user_video_decisions")


SMALL = ExperimentConfig(
    min_users_per_arm=50, min_answered_per_arm=300, planned_users_per_arm=200, stages=(10, 50, 100)
)
# Margins a few hundred simulated users can show non-inferior within (production defaults are
# tighter and need more users).
WIDE = ExperimentConfig(
    min_users_per_arm=50,
    min_answered_per_arm=300,
    planned_users_per_arm=200,
    stages=(10, 50, 100),
    guardrails=(
        design.Guardrail("like_rate", 0.25, relative=True),
        design.Guardrail("error_rate", 0.01),
        design.Guardrail("slow_rate", 0.15),
        design.Guardrail("genre_diversity", 0.15, relative=True),
        design.Guardrail("swipes_per_session", 0.1, relative=True),
    ),
)


def started_at(conn, name: str, *, backdate: timedelta = timedelta(hours=1)) -> datetime:
    """When the experiment's stage started, moved `backdate` into the past first, so that the
    traffic logged after it is in the past of a tick."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "update experiments set started_at = started_at - %s, stage_started_at ="
            " stage_started_at - %s where name = %s returning stage_started_at",
            (backdate, backdate, name),
        )
        return cur.fetchone()[0]


def test_the_analysis_finds_a_real_difference_and_no_srm(db):
    design.start(
        db, "ab", control="v1", arms={"treatment": "v2"}, shares={"treatment": 50}, config=SMALL
    )
    people = users(600, seed=1)
    start = started_at(db, "ab")
    with db, db.cursor() as cur:  # the first 200 users swiped a month before: returning
        for user in people[:200]:
            cur.execute(
                "insert into user_video_decisions (user_id, video_id, decision, created_at)"
                " values (%s, 1, 'like', %s)",
                (user, start - timedelta(days=30)),
            )
    log_traffic(
        db,
        "ab",
        start + timedelta(seconds=1),
        {"control": 0.5, "treatment": 0.6},
        people=people,
    )
    result = analyse(db, "ab", at=datetime.now(UTC) + timedelta(hours=1))
    assert not result["srm"]["mismatch"]
    assert result["users"]["control"] + result["users"]["treatment"] == 600
    assert result["crossovers"] == 0
    primary = result["comparisons"]["treatment"]["primary"]
    assert primary["metric"] == "like_rate"
    # Every item is answered: like_rate is likes / served, arm by arm.
    for arm in ("control", "treatment"):
        totals = result["totals"][arm]
        assert totals["answered"] == totals["served"] == result["users"][arm] * 15
    assert primary["effect"] == pytest.approx(primary["treatment"] - primary["control"])
    assert 0.05 < primary["effect"] < 0.15
    assert primary["significant"] and primary["sequential_pvalue"] < 0.05
    assert primary["sequential_ci"][0] > 0
    # The always-valid interval is wider than the fixed-horizon one.
    assert primary["sequential_ci"][0] < primary["ci"][0]
    assert result["comparisons"]["treatment"]["min_sample_reached"]
    # Guardrails share alpha (5 of them); the primary metric has all of it.
    guardrails = result["comparisons"]["treatment"]["guardrails"]
    assert {g["sequential_alpha"] for g in guardrails if g["status"] == "ok"} == {0.01}
    assert primary["sequential_alpha"] == 0.05
    # A request logged under the treatment's route but served by another version (a route
    # change between serving and logging) counts for no arm.
    with db, db.cursor() as cur:
        cur.execute(
            "insert into serving_requests (request_id, user_id, status, duration_ms,"
            " model_version, route, source, items, created_at) values (gen_random_uuid(),"
            " gen_random_uuid(), 200, 10, 'v1', 'ab/treatment', 'embedding', 0, %s)",
            (start + timedelta(minutes=5),),
        )
    again = analyse(db, "ab", at=datetime.now(UTC) + timedelta(hours=1))
    assert again["users"] == result["users"]
    # By segment: 200 returning users, 400 new; both show the difference.
    segments = result["comparisons"]["treatment"]["segments"]
    assert sum(segments["returning"]["users"].values()) == 200
    assert sum(segments["new"]["users"].values()) == 400
    for segment in ("new", "returning"):
        assert segments[segment]["status"] == "ok" and segments[segment]["effect"] > 0


def test_the_new_user_segment_is_24_hour_days_back_across_a_dst_change(db):
    """A user is 'new' when their first swipe is within new_user_days x 24 hours before the
    experiment's start, whatever the session's zone. An experiment started in Berlin half an
    hour after its change to summer time: `interval '7 days'` back from the start is 167 hours,
    so a first swipe 167.5 hours before it would read as a returning user's."""
    from swiperec.experiments.analysis import per_user

    started = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 CEST; 02:00 CET became 03:00
    with db, db.cursor() as cur:
        cur.execute("set timezone = 'Europe/Berlin'")
        # The zone's rule as this test knows it: 7 calendar days back are 167 hours.
        cur.execute(
            "select extract(epoch from %(t)s - (%(t)s - interval '7 days'))::int", {"t": started}
        )
        assert cur.fetchone()[0] == 167 * 3600
    design.start(db, "dst", control="v1", arms={"treatment": "v2"}, shares={"treatment": 50})
    assert ExperimentConfig.from_dict(design.get(db, "dst")["config"]).new_user_days == 7
    with db, db.cursor() as cur:
        cur.execute(
            "update experiments set started_at = %s, stage_started_at = %s where name = 'dst'",
            (started, started),
        )
    newcomer, regular = users(2, seed=9)
    arms = {user: route_of(db, user) for user in (newcomer, regular)}  # (route, version)
    with db, db.cursor() as cur:
        for user, hours_before in ((newcomer, 7 * 24 - 0.5), (regular, 7 * 24 + 0.5)):
            cur.execute(
                "insert into user_video_decisions (user_id, video_id, decision, created_at)"
                " values (%s, 1, 'like', %s)",
                (user, started - timedelta(hours=hours_before)),
            )
            route, version = arms[user]
            cur.execute(
                "insert into serving_requests (request_id, user_id, status, duration_ms,"
                " model_version, route, source, items, created_at) values (gen_random_uuid(),"
                " %s, 200, 20, %s, %s, 'embedding', 0, %s)",
                (user, version, route, started + timedelta(minutes=5)),
            )
    frame, _ = per_user(db, design.get(db, "dst"), started, started + timedelta(hours=1))
    assert dict(zip(frame["user_id"], frame["segment"], strict=True)) == {
        newcomer: "new",
        regular: "returning",
    }


def test_an_injected_assignment_imbalance_is_an_srm(db):
    design.start(
        db, "srm", control="v1", arms={"treatment": "v2"}, shares={"treatment": 50}, config=SMALL
    )
    people = users(1200, seed=2)
    routes = routes_of(db, people)
    # Drop 40 % of the treatment users' traffic, as a broken client in one arm would: about 360
    # against 600 users, which the always-valid test flags at p < 1e-4 whatever the salt's
    # split (the arms' sizes vary by about 17 users from run to run).
    kept = [u for i, u in enumerate(people) if routes[u] != "srm/treatment" or i % 10 >= 4]
    log_traffic(
        db,
        "srm",
        started_at(db, "srm") + timedelta(seconds=1),
        {"control": 0.5, "treatment": 0.5},
        people=kept,
    )
    result = analyse(db, "srm", at=datetime.now(UTC) + timedelta(hours=1))
    assert result["srm"]["mismatch"] and result["srm"]["sequential_pvalue"] < 0.001
    assert result["srm"]["pvalue"] < result["srm"]["sequential_pvalue"]  # one look is sharper


def test_the_controller_rolls_back_a_broken_candidate_alone(db):
    design.start_rollout(db, "v2", config=SMALL)
    name = "rollout-v2"
    people = users(1500, seed=3)
    before = routes_of(db, people)
    candidates = {u for u, r in before.items() if r == f"{name}/candidate"}
    assert 0.07 < len(candidates) / len(people) < 0.13  # stage 0: 10 %
    log_traffic(
        db,
        name,
        started_at(db, name) + timedelta(seconds=1),
        {"control": 0.55, "candidate": 0.2},
        people=people,
    )
    with db.cursor() as cur:
        cur.execute("select count(*) from served_recommendations")
        served = cur.fetchone()[0]
    db.rollback()
    decisions = rollout.tick(db)
    assert decisions == [
        {
            "experiment": name,
            "action": "rollback",
            "stage": 0,
            "reason": "guardrail breached: like_rate",
        }
    ]
    # Every user on the control version (still serving), the candidate marked, logs kept.
    assert set(routes_of(db, people).values()) == {"default"}
    assert route_of(db, next(iter(candidates)))[1] == "v1"
    with db.cursor() as cur:
        cur.execute("select stage from model_versions where model_version = 'v2'")
        assert cur.fetchone()[0] == "rolled_back"
        cur.execute("select model_version from serving_state")
        assert cur.fetchone()[0] == "v1"
        cur.execute("select count(*) from served_recommendations")
        assert cur.fetchone()[0] == served
        cur.execute("select state, ended_by from experiments where name = %s", (name,))
        assert cur.fetchone() == ("rolled_back", rollout.CONTROLLER)
    db.rollback()
    last = design.events(db, name)[-1]
    assert last["event"] == "rolled_back" and last["decided_by"] == rollout.CONTROLLER
    like = next(c for c in last["evidence"]["checks"] if c["metric"] == "like_rate")
    assert like["verdict"] == "breached" and like["sequential_ci"][1] < 0
    from swiperec.registry.lineage import show_version

    (entry,) = show_version(db, "v2")["experiments"]
    assert (entry["name"], entry["arm"], entry["state"]) == (name, "candidate", "rolled_back")
    assert entry["ended_by"] == rollout.CONTROLLER and entry["reason"] == decisions[0]["reason"]
    # A rolled-back version is refused by a promotion and a new rollout, unless forced.
    from swiperec.registry.versions import RegistryError

    with pytest.raises(RegistryError, match="was rolled back"):
        promote(db, "v2")
    with pytest.raises(ExperimentError, match="was rolled back"):
        design.start_rollout(db, "v2")
    # A second tick finds nothing to do.
    assert rollout.tick(db) == []


def test_a_healthy_candidate_advances_sticky_and_completes(db):
    design.start_rollout(db, "v2", config=WIDE)
    name = "rollout-v2"
    people = users(1500, seed=4)
    first = routes_of(db, people)
    # Equal arms: with enough evidence every guardrail is shown non-inferior.
    start = started_at(db, name)
    for round_ in range(3):
        log_traffic(
            db,
            name,
            start + timedelta(seconds=1 + 600 * round_),
            {"control": 0.5, "candidate": 0.5},
            people=people,
            seed=round_,
        )
        decision = rollout.tick(db)[0]
        if decision["action"] != "hold":
            break
    assert decision["action"] == "advance", decision
    second = routes_of(db, people)
    # Users only move from control to candidate.
    assert all(
        second[u] == f"{name}/candidate" for u, r in first.items() if r == f"{name}/candidate"
    )
    share = sum(r == f"{name}/candidate" for r in second.values()) / len(people)
    assert 0.45 < share < 0.55
    # The last stage below 100 %: completing promotes the candidate, by hand here.
    assert rollout.advance(db, name, reason="looks fine", actor="alice") == "complete"
    assert set(routes_of(db, people).values()) == {"default"}
    with db.cursor() as cur:
        cur.execute("select model_version from serving_state")
        assert cur.fetchone()[0] == "v2"
        cur.execute(
            "select stage from model_versions where model_version in ('v1', 'v2') "
            "order by model_version"
        )
        assert [r[0] for r in cur.fetchall()] == ["archived", "production"]
    db.rollback()
    events = [(e["event"], e["decided_by"]) for e in design.events(db, name)]
    assert events[1] == ("advanced", rollout.CONTROLLER) and events[-1] == ("completed", "alice")


def test_two_ticks_at_once_act_once(db, db_url, monkeypatch):
    from swiperec.db import connect

    design.start_rollout(db, "v2", config=SMALL)
    name = "rollout-v2"
    log_traffic(
        db,
        name,
        started_at(db, name) + timedelta(seconds=1),
        {"control": 0.55, "candidate": 0.2},
        people=users(1500, seed=6),
    )
    # Both ticks have analysed and decided to roll back before either applies it.
    analysed = threading.Barrier(2, timeout=60)
    real_analyse = rollout.analyse

    def analyse_then_wait(conn, experiment):
        result = real_analyse(conn, experiment)
        analysed.wait()
        return result

    monkeypatch.setattr(rollout, "analyse", analyse_then_wait)
    results = []

    def run():
        conn = connect(db_url)
        try:
            results.extend(rollout.tick(conn))
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # One applied it; the other found the experiment rolled back under its row lock.
    assert sorted(r["action"] for r in results) == ["none", "rollback"]
    assert [e["event"] for e in design.events(db, name)].count("rolled_back") == 1
    assert set(routes_of(db, users(50, seed=6)).values()) == {"default"}


def test_the_commands_start_report_and_roll_back(db, db_url, tmp_path, monkeypatch, capsys):
    from swiperec.cli import main

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SWIPEREC_HOME", str(tmp_path / "home"))

    def run(*argv) -> str:
        assert main(list(argv)) == 0
        return capsys.readouterr().out

    assert run("experiment", "start", "ab", "treatment=v2:40", "--traffic", "0:5000") == (
        "started ab: treatment v2 (40 %), control v1 (60 %)\n"
    )
    assert main(["experiment", "start", "ab2", "t=v3:50", "--traffic", "4000:6000"]) == 2
    assert "overlaps a running experiment" in capsys.readouterr().err
    log_traffic(db, "ab", started_at(db, "ab") + timedelta(seconds=1),
                {"control": 0.5, "treatment": 0.5}, people=users(400, seed=7))  # fmt: skip
    report = run("experiment", "report", "ab", "--html", str(tmp_path / "ab.html"), "--looks", "3")
    assert "experiment ab (ab, running)" in report
    assert "sample ratio: always-valid p" in report and "treatment vs control" in report
    assert "like_rate" in report and "swipes_per_session" in report
    assert "segment new" in report and "segment returning" in report
    page = (tmp_path / "ab.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "always-valid CI" in page
    assert page.count("<img ") >= 1  # the effect over time
    as_json = json.loads(run("experiment", "report", "ab", "--json"))
    assert set(as_json["comparisons"]) == {"treatment"}

    assert "stopped ab" in run("experiment", "stop", "ab", "--reason", "done")
    # A rollout takes all users: it starts once the test has ended.
    assert "v3 serves 10 %" in run("rollout", "start", "v3", "--stages", "10,100")
    assert "rollout-v3" in run("rollout", "status")
    listing = run("experiment", "list")
    assert "ab " in listing and "stopped" in listing and "rollout-v3" in listing
    assert "rolled back" in run("rollout", "rollback", "rollout-v3", "--reason", "by hand")
    assert set(routes_of(db, users(300, seed=8)).values()) == {"default"}
    last = design.events(db, "rollout-v3")[-1]
    assert (last["event"], last["reason"]) == ("rolled_back", "by hand")
    shown = run("registry", "show", "v3")
    assert "stage         rolled_back" in shown
    assert "experiments   rollout-v3 (rollout, arm candidate); rolled_back " in shown
    assert shown.rstrip().endswith(": by hand")


def test_the_dashboard_shows_the_experiments_and_their_reports(db, db_url):
    from starlette.testclient import TestClient

    from swiperec.experiments.web import routes
    from swiperec.monitoring.dashboard import create_app

    design.start(db, "ab", control="v1", arms={"treatment": "v2"}, shares={"treatment": 50},
                 config=SMALL)  # fmt: skip
    log_traffic(db, "ab", started_at(db, "ab") + timedelta(seconds=1),
                {"control": 0.5, "treatment": 0.6}, people=users(400, seed=9))  # fmt: skip
    with TestClient(create_app(db_url, extra_routes=routes(db_url, looks=3))) as client:
        assert 'href="/experiments"' in client.get("/").text
        listing = client.get("/experiments")
        assert listing.status_code == 200 and 'href="/experiments/ab"' in listing.text
        page = client.get("/experiments/ab")
        assert page.status_code == 200
        assert "<h1>Experiment ab</h1>" in page.text and "always-valid CI" in page.text
        assert "treatment vs control" in page.text and "<img " in page.text
        assert "Primary metric by user segment" in page.text
        assert client.get("/experiments/nope").status_code == 404


def test_the_pipelines_canary_promotion_starts_a_rollout(db, db_url, tmp_path):
    from swiperec.pipeline.steps import RunArtifact, register

    made = {  # artifact -> (the step that wrote it, what that step read)
        "snapshot": ("ingest_snapshot", []),
        "transform_graph": ("feature_transform", ["snapshot"]),
        "examples": ("feature_transform", ["snapshot"]),
        "model": ("train", ["transform_graph", "examples"]),
        "evaluation": ("evaluate", ["model", "examples"]),
        "embedding_set": ("write_embeddings", ["model", "snapshot"]),
    }
    at = datetime(2026, 12, 1, tzinfo=UTC).isoformat()
    artifacts = {}
    for name, (step, inputs) in made.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "part").write_text(name)
        artifacts[name] = RunArtifact(str(folder), str(folder), {
            "step/name": step, "step/inputs": inputs, "step/parameters": {},
            "step/started_at": at, "step/finished_at": at,
        })  # fmt: skip
    with pytest.raises(ValueError, match="'instant' or 'canary'"):
        register(artifacts, model_version="v2", run_id="run-1", activate=True,
                 promotion="gradual", database_url=db_url)  # fmt: skip
    # While an A/B test holds some of the users, no rollout starts (it would take them all):
    # the run is recorded, the version stays blessed and not serving, and it says why.
    design.start(db, "ab", control="v1", arms={"t": "v3"}, shares={"t": 50}, traffic=(0, 100))
    blocked = register(artifacts, model_version="v2", run_id="run-1", activate=True,
                       promotion="canary", database_url=db_url)  # fmt: skip
    assert blocked["rollout"] is None and not blocked["promoted"]
    assert "overlaps a running experiment" in blocked["rollout_refused"]
    design.stop(db, "ab", reason="make room")
    outcome = register(artifacts, model_version="v2", run_id="run-1", activate=True,
                       promotion="canary", database_url=db_url)  # fmt: skip
    assert outcome["rollout"] == "rollout-v2" and not outcome["promoted"]
    with db.cursor() as cur:
        cur.execute("select model_version from serving_state")
        assert cur.fetchone()[0] == "v1"  # control serves; the candidate has its first stage
    db.rollback()
    experiment = design.get(db, "rollout-v2")
    assert experiment["state"] == "running" and experiment["stage"] == 0
    assert experiment["arms"]["candidate"] == {**experiment["arms"]["candidate"],
                                               "version": "v2", "from": 0, "to": 100}  # fmt: skip
    assert design.events(db, "rollout-v2")[0]["decided_by"] == "pipeline run run-1"


def test_a_failing_analysis_holds_its_rollout_and_the_tick_goes_on(db, monkeypatch):
    design.start_rollout(db, "v2", config=SMALL)

    def broken(conn, name, **kwargs):
        raise RuntimeError("the analysis broke")

    monkeypatch.setattr(rollout, "analyse", broken)
    (decision,) = rollout.tick(db)
    assert decision["action"] == "error" and "the analysis broke" in decision["reason"]
    assert design.get(db, "rollout-v2")["state"] == "running"
    assert [e["event"] for e in design.events(db, "rollout-v2")] == ["started"]
