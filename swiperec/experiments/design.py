"""Experiments as data: start an A/B test or a staged rollout, move a rollout's stage, end it.

    start(conn, "ranker-b", control="v6", arms={"treatment": "v7"}, shares={"treatment": 50})
    start_rollout(conn, "v7")                     # candidate on 1 % of users, then 5, 25, 50, 100
    set_stage(conn, "rollout-v7", 1, ...)         # the candidate's share widens (sticky)
    end(conn, "ranker-b", "stopped", reason=...)  # every user back on the serving version

Assignment is in the database (`serving_route_for`, migration `..._experiments.sql`): an
experiment holds a range of the global user buckets (its traffic; two running experiments never
overlap, which an exclusion constraint enforces), and each arm is a route that takes the users
of that traffic whose salted arm bucket falls in the arm's range. A user keeps their arm for the
experiment's life: the buckets are hashes of the user id, and the route pins the arm's version,
so a serving switch does not move them. A rollout's candidate range only widens, so a user only
ever moves from control to candidate. Served recommendations record the route
('<experiment>/<arm>'), which names the experiment and the arm.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field

from swiperec.errors import SwiperecError

BUCKETS = 10_000
DEFAULT_STAGES = (1, 5, 25, 50, 100)


class ExperimentError(SwiperecError):
    """An experiment that cannot start, move or end as asked."""


@dataclass(frozen=True)
class Guardrail:
    """A metric that must not get worse than control by more than `margin` (absolute, in the
    metric's units; `relative`: a fraction of control's value)."""

    metric: str
    margin: float
    relative: bool = False


# metric -> (numerator, denominator, higher is better); the per-user columns of analysis.sql
METRICS = {
    "like_rate": ("likes", "answered", True),
    "error_rate": ("errors", "requests", False),
    "slow_rate": ("slow", "requests", False),
    "genre_diversity": ("diversity_sum", "lists", True),
    "swipes_per_session": ("answered", "sessions", True),
}


def _default_guardrails() -> tuple[Guardrail, ...]:
    return (
        Guardrail("like_rate", 0.05, relative=True),
        Guardrail("error_rate", 0.01),
        # p95 latency, as a share: control's p95 leaves 5 % of its requests slower; the
        # treatment may leave at most 5 + 2.5 % slower than that same threshold.
        Guardrail("slow_rate", 0.025),
        Guardrail("genre_diversity", 0.05, relative=True),
        Guardrail("swipes_per_session", 0.10, relative=True),
    )


@dataclass(frozen=True)
class ExperimentConfig:
    """What an experiment measures and when it may decide. Stored with the experiment."""

    primary: str = "like_rate"
    guardrails: tuple[Guardrail, ...] = field(default_factory=_default_guardrails)
    coverage_margin: float = 0.2  # distinct videos per served item may drop by 20 % at most
    alpha: float = 0.05
    srm_threshold: float = 0.001
    min_users_per_arm: int = 100
    min_answered_per_arm: int = 1000
    planned_users_per_arm: int = 1000  # where the confidence sequences are tightest
    max_hours: float = 14 * 24
    stage_max_hours: float = 48  # a rollout stage still inconclusive after this: rolled back
    stages: tuple[int, ...] = DEFAULT_STAGES
    attribution_seconds: int = 1800
    session_gap_seconds: int = 1800
    pre_days: float = 14  # the CUPED covariate: the user's like-rate this long before the start
    new_user_days: float = 7  # segment "new": first swipe this recent at the start (or none)

    def __post_init__(self) -> None:
        problems = []
        for g in self.guardrails:
            if g.metric not in METRICS:
                problems.append(f"guardrail metric {g.metric!r} is not one of {sorted(METRICS)}")
            if not g.margin > 0:
                problems.append(f"guardrail {g.metric}: the margin must be positive")
        if self.primary not in METRICS:
            problems.append(f"primary metric {self.primary!r} is not one of {sorted(METRICS)}")
        if not 0 < self.alpha < 0.5:
            problems.append(f"alpha must be in (0, 0.5), got {self.alpha}")
        if not 0 < self.srm_threshold < 0.5:
            problems.append(f"srm_threshold must be in (0, 0.5), got {self.srm_threshold}")
        if (
            not self.stages
            or list(self.stages) != sorted(set(self.stages))
            or not (self.stages[0] > 0 and self.stages[-1] == 100)
        ):
            problems.append(f"stages must rise from above 0 to 100, got {list(self.stages)}")
        if self.min_users_per_arm < 2 or self.min_answered_per_arm < 1:
            problems.append("min_users_per_arm must be at least 2, min_answered_per_arm 1")
        if not (self.max_hours > 0 and self.stage_max_hours > 0):
            problems.append("max_hours and stage_max_hours must be positive")
        if problems:
            raise ExperimentError("; ".join(problems))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> ExperimentConfig:
        data = dict(data)
        data["guardrails"] = tuple(Guardrail(**g) for g in data.get("guardrails", ()))
        data["stages"] = tuple(data.get("stages", DEFAULT_STAGES))
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


def _check_version(cur, version: str) -> None:
    """A version an arm may serve: registered, with both embedding sets ready."""
    cur.execute("select 1 from model_versions where model_version = %s", (version,))
    if cur.fetchone() is None:
        raise ExperimentError(f"model version {version!r} is not registered")
    cur.execute(
        "select count(*) from embedding_sets where model_version = %s and state = 'ready'",
        (version,),
    )
    if cur.fetchone()[0] != 2:
        raise ExperimentError(
            f"model version {version!r} has no ready embedding sets for both videos and users "
            "(swiperec embeddings write MODEL --version V)"
        )


def _insert_route(
    cur, route: str, version: str, traffic: tuple[int, int], salt: str, arm_range: tuple[int, int]
) -> None:
    cur.execute(
        "insert into serving_routes (route, model_version, bucket_from, bucket_to, salt, "
        "arm_from, arm_to) values (%s, %s, %s, %s, %s, %s, %s)",
        (route, version, *traffic, salt, *arm_range),
    )


def start(
    conn,
    name: str,
    *,
    control: str,
    arms: dict[str, str],
    shares: dict[str, float],
    holdout: float = 0.0,
    traffic: tuple[int, int] = (0, BUCKETS),
    config: ExperimentConfig | None = None,
    kind: str = "ab",
    actor: str | None = None,
) -> dict:
    """Start an A/B test: `arms` {arm: version} besides `control`, each with a share (percent of
    the experiment's traffic); `holdout` percent stays on the control version, reported but not
    analysed; the rest of the traffic is the control arm. Returns the experiment's row."""
    config = config or ExperimentConfig()
    if set(arms) != set(shares):
        raise ExperimentError("every arm needs a share, and every share an arm")
    if "control" in arms or "holdout" in arms:
        raise ExperimentError("'control' and 'holdout' are the names of the built-in arms")
    if any(s <= 0 for s in shares.values()) or holdout < 0:
        raise ExperimentError("arm shares must be positive and the holdout not negative")
    total = sum(shares.values()) + holdout
    if total >= 100:
        raise ExperimentError(
            f"the arms and holdout take {total} % of the traffic: control needs the rest"
        )
    lo, hi = traffic
    if not 0 <= lo < hi <= BUCKETS:
        raise ExperimentError(
            f"traffic must be a bucket range within [0, {BUCKETS}), got {traffic}"
        )
    salt = secrets.token_hex(8)
    layout = [
        (arm, version, share, True) for arm, version in arms.items() for share in [shares[arm]]
    ]
    if holdout:
        layout.append(("holdout", control, holdout, False))
    layout.append(("control", control, 100 - total, True))
    with conn, conn.cursor() as cur:
        # Starts take turns (two inserts racing on the exclusion constraint can deadlock); the
        # constraint still refuses an overlap.
        cur.execute("select pg_advisory_xact_lock(hashtext('swiperec: experiment starts'))")
        for _, version, _, _ in layout:
            _check_version(cur, version)
        try:
            cur.execute(
                "insert into experiments (name, kind, traffic_from, traffic_to, salt, "
                "control_version, config, stage, ended_by) values (%s, %s, %s, %s, %s, %s, %s, %s, "
                "null) returning started_at",
                (
                    name,
                    kind,
                    lo,
                    hi,
                    salt,
                    control,
                    config.to_json(),
                    0 if kind == "rollout" else None,
                ),
            )
        except Exception as e:
            _explain_start_failure(e, name, traffic)
            raise
        edge = 0
        for arm, version, share, analysed in layout:
            width = round(share * BUCKETS / 100) if arm != "control" else BUCKETS - edge
            if width < 1:
                raise ExperimentError(f"arm {arm!r} would get no users ({share} % of the "
                                      f"traffic rounds to 0 of {BUCKETS} buckets)")  # fmt: skip
            route = f"{name}/{arm}"
            _insert_route(cur, route, version, traffic, salt, (edge, edge + width))
            cur.execute(
                "insert into experiment_arms (experiment, arm, route, analysed) "
                "values (%s, %s, %s, %s)",
                (name, arm, route, analysed),
            )
            edge += width
        record(
            cur,
            name,
            "started",
            stage=0 if kind == "rollout" else None,
            actor=actor,
            evidence={
                "arms": {a: v for a, v, _, _ in layout},
                "shares": {a: s for a, _, s, _ in layout},
                "traffic": list(traffic),
            },
        )
    return get(conn, name)


def _explain_start_failure(error: Exception, name: str, traffic) -> None:
    import psycopg2.errors

    if isinstance(error, psycopg2.errors.UniqueViolation):
        raise ExperimentError(f"an experiment named {name!r} exists already") from error
    if isinstance(error, psycopg2.errors.ExclusionViolation):
        raise ExperimentError(
            f"the traffic {list(traffic)} overlaps a running experiment's: experiments run on "
            "disjoint buckets of users (swiperec experiment list shows theirs)"
        ) from error


def start_rollout(
    conn,
    candidate: str,
    *,
    name: str | None = None,
    config: ExperimentConfig | None = None,
    actor: str | None = None,
) -> dict:
    """Start a staged rollout of `candidate` against the serving version, on all users: the
    candidate arm takes the first stage's share; `swiperec rollout tick` moves it on."""
    config = config or ExperimentConfig()
    with conn.cursor() as cur:
        cur.execute("select model_version from serving_state")
        row = cur.fetchone()
        cur.execute("select blessed, stage from model_versions where model_version = %s",
                    (candidate,))  # fmt: skip
        blessed = cur.fetchone()
    conn.rollback()
    if row is None:
        raise ExperimentError("nothing serves yet: promote a first version instead of rolling out")
    if row[0] == candidate:
        raise ExperimentError(f"{candidate!r} serves already")
    if not blessed or not blessed[0]:
        raise ExperimentError(f"{candidate!r} is not blessed: only a blessed version rolls out")
    if blessed[1] == "rolled_back":
        raise ExperimentError(f"{candidate!r} was rolled back (swiperec registry show "
                              f"{candidate} says why)")  # fmt: skip
    if len(config.stages) < 2:
        raise ExperimentError(
            "a rollout needs a stage below 100 (to go straight to 100 %, "
            "promote: swiperec embeddings activate V)"
        )
    name = name or f"rollout-{candidate}"
    return start(
        conn,
        name,
        control=row[0],
        arms={"candidate": candidate},
        shares={"candidate": config.stages[0]},
        config=config,
        kind="rollout",
        actor=actor,
    )


def set_stage(cur, experiment: dict, stage: int) -> None:
    """Widen a rollout's candidate arm to `stage` (an index into its stages), inside the
    caller's transaction. Users only move from control to candidate."""
    config = ExperimentConfig.from_dict(experiment["config"])
    width = round(config.stages[stage] * BUCKETS / 100)
    name = experiment["name"]
    cur.execute(
        "update serving_routes set arm_to = %s where route = %s", (width, f"{name}/candidate")
    )
    cur.execute(
        "update serving_routes set arm_from = %s where route = %s", (width, f"{name}/control")
    )
    cur.execute(
        "update experiments set stage = %s, stage_started_at = now() where name = %s", (stage, name)
    )


def end(cur, name: str, state: str, *, actor: str | None, reason: str, evidence=None) -> None:
    """End a running experiment inside the caller's transaction: its routes stop (every user
    is back on the serving version), the state and reason are recorded."""
    cur.execute(
        "update experiments set state = %s, ended_at = now(), ended_by = coalesce(%s, "
        "current_user), end_reason = %s where name = %s and state = 'running'",
        (state, actor, reason, name),
    )
    if cur.rowcount != 1:
        raise ExperimentError(f"no running experiment named {name!r}")
    cur.execute(
        "update serving_routes set active = false where route in "
        "(select route from experiment_arms where experiment = %s)",
        (name,),
    )
    record(cur, name, state, actor=actor, reason=reason, evidence=evidence)  # the event: the state


def stop(conn, name: str, *, reason: str, actor: str | None = None) -> None:
    """Stop an experiment by hand: every user goes back to the serving version."""
    with conn, conn.cursor() as cur:
        end(cur, name, "stopped", actor=actor, reason=reason)


def record(cur, name, event, *, stage=None, actor=None, reason=None, evidence=None) -> None:
    """One decision about experiment `name` in `experiment_events`, inside the caller's
    transaction: the event, who decided (default the database user), why, and the evidence."""
    cur.execute(
        "insert into experiment_events (experiment, event, stage, decided_by, reason, evidence) "
        "values (%s, %s, %s, coalesce(%s, current_user), %s, %s)",
        (name, event, stage, actor, reason,
         json.dumps(evidence, default=str) if evidence else None),
    )  # fmt: skip


_COLUMNS = (
    "name",
    "kind",
    "state",
    "traffic_from",
    "traffic_to",
    "salt",
    "control_version",
    "config",
    "stage",
    "started_at",
    "stage_started_at",
    "ended_at",
    "ended_by",
    "end_reason",
)


def get(conn, name: str, *, lock: bool = False) -> dict:
    """The experiment's row and its arms ({arm: {version, route, analysed, from, to}})."""
    with conn.cursor() as cur:
        cur.execute(
            f"select {', '.join(_COLUMNS)} from experiments where name = %s"
            + (" for update" if lock else ""),
            (name,),
        )
        row = cur.fetchone()
        if row is None:
            conn.rollback()
            raise ExperimentError(f"no experiment named {name!r}")
        experiment = dict(zip(_COLUMNS, row, strict=True))
        cur.execute(
            "select a.arm, r.model_version, a.route, a.analysed, r.arm_from, r.arm_to, r.active "
            "from experiment_arms a join serving_routes r using (route) "
            "where a.experiment = %s order by r.arm_from",
            (name,),
        )
        experiment["arms"] = {
            arm: {
                "version": v,
                "route": route,
                "analysed": analysed,
                "from": lo,
                "to": hi,
                "active": active,
            }
            for arm, v, route, analysed, lo, hi, active in cur.fetchall()
        }
    if not lock:
        conn.rollback()
    return experiment


def list_experiments(conn) -> list[dict]:
    with conn.cursor() as cur:
        cur.execute("select name from experiments order by started_at")
        names = [r[0] for r in cur.fetchall()]
    conn.rollback()
    return [get(conn, n) for n in names]


def events(conn, name: str) -> list[dict]:
    with conn.cursor() as cur:
        cur.execute(
            "select event, stage, decided_by, reason, evidence, created_at "
            "from experiment_events where experiment = %s order by id",
            (name,),
        )
        keys = ("event", "stage", "decided_by", "reason", "evidence", "at")
        out = [dict(zip(keys, r, strict=True)) for r in cur.fetchall()]
    conn.rollback()
    return out
