"""A migration plan: the training mix moves from pseudo-users to real users stage by stage.

    create(conn, "to-real-users", PlanConfig.default(like_rating=3, nope_rating=2), actor="ana")
    status(conn)                       # the plan, its stages, where it is, what happened
    advance(conn, actor="ana")         # the next stage, if the current one is live and the
                                       # next one's entry condition holds; else refused, why
    mix = training_mix(conn)           # FeatureConfig overrides a training run uses now
    gate = check_gate(conn, mix, version, model_dir, snapshot, test_start_us)  # vs serving,
    record_gate(conn, mix, version, gate)                                      # real users

A stage is a training mix (`pseudo_user_weight`; the ratings that read as like / nope come from
the plan, chosen by `swiperec migration calibrate`) with:

- an **entry condition**: the last `window_days` hold at least `min_real_users` real users who
  swiped and `min_real_swipes` real swipes (a mix that leans on real users needs them);
- a **gate** a candidate trained at the mix must pass before it may serve: on the real users of
  its test period, against the version serving (`swiperec.migration.real_users`), neither its
  AUC like vs nope more than `max_auc_drop` below nor its Recall@50 more than `max_recall_drop`
  (relative) below and significantly worse (`gate_problems`). Pooled metrics could hide a
  real-user regression behind pseudo-user gains.

The plan's `stage` is the mix training uses now. A stage is **live** when the version serving
was trained at it (the `planned` event names the version serving when the plan was made, for
stage 0; each `gate_passed` event names a candidate). `advance` moves to the next stage only
when the current one is live (its exit condition) and the next one's entry condition holds; a
candidate that fails its gate is not blessed, so the service keeps the last good mix, and the
stage stays not live until a later candidate passes. With a canary promotion the candidate goes
live through a staged rollout (`swiperec.experiments`), and the stage with it.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field

from swiperec.errors import SwiperecError

ACTOR_PIPELINE = "training pipeline"


class MigrationError(SwiperecError):
    """A plan or an advance that cannot be: the message says why."""


@dataclass(frozen=True)
class Stage:
    pseudo_user_weight: float
    like_rating: int | None = None  # None: the plan's
    nope_rating: int | None = None
    min_real_users: int = 0
    min_real_swipes: int = 0
    max_auc_drop: float = 0.01  # absolute AUC points, real users, vs the version serving
    max_recall_drop: float = 0.05  # relative: 0.05 = Recall@50 at most 5 % lower

    def problems(self, i: int) -> list[str]:
        out = []
        w = self.pseudo_user_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            out.append(f"stage {i}: pseudo_user_weight must be a number >= 0, got {w!r}")
        for name in ("min_real_users", "min_real_swipes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                out.append(f"stage {i}: {name} must be an int >= 0, got {value!r}")
        for name in ("max_auc_drop", "max_recall_drop"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < 1:
                out.append(f"stage {i}: {name} must be in [0, 1), got {value!r}")
        if (self.like_rating is None) != (self.nope_rating is None):
            out.append(f"stage {i}: give both like_rating and nope_rating, or neither")
        elif self.like_rating is not None and not 1 <= self.nope_rating < self.like_rating <= 5:
            out.append(f"stage {i}: ratings must satisfy 1 <= nope_rating < like_rating <= 5")
        return out

    def describe(self) -> str:
        ratings = (
            ""
            if self.like_rating is None
            else (f", like >= {self.like_rating}, nope <= {self.nope_rating}")
        )
        return f"pseudo-user weight {self.pseudo_user_weight:g}{ratings}"


@dataclass(frozen=True)
class PlanConfig:
    stages: tuple[Stage, ...]
    like_rating: int = 4  # a review with rating >= this is a like (a stage may set its own)
    nope_rating: int = 2  # <= this a nope; ratings between are left out
    window_days: int = 90  # the entry conditions count real users and swipes over these days
    calibration: dict = field(default_factory=dict)  # what chose the ratings (for the record)

    def __post_init__(self) -> None:
        problems = []
        if len(self.stages) < 2:
            problems.append("a plan needs at least two stages (today's mix and a next one)")
        for i, stage in enumerate(self.stages):
            problems += stage.problems(i)
        if not 1 <= self.nope_rating < self.like_rating <= 5:
            problems.append(
                "ratings must satisfy 1 <= nope_rating < like_rating <= 5, got "
                f"{self.nope_rating} / {self.like_rating}"
            )
        if not isinstance(self.window_days, int) or self.window_days < 1:
            problems.append(f"window_days must be a positive int, got {self.window_days!r}")
        weights = [s.pseudo_user_weight for s in self.stages]
        if not problems and any(b > a for a, b in itertools.pairwise(weights)):
            problems.append(f"pseudo-user weights must not grow from stage to stage: {weights}")
        if problems:
            raise MigrationError("invalid migration plan: " + "; ".join(problems))

    @classmethod
    def default(cls, **fields_) -> PlanConfig:
        """Pseudo-user weight 1 -> 0.5 -> 0.25 -> 0, each step needing more real users."""
        stages = (
            Stage(1.0),
            Stage(0.5, min_real_users=200, min_real_swipes=10_000),
            Stage(0.25, min_real_users=500, min_real_swipes=25_000),
            Stage(0.0, min_real_users=1_000, min_real_swipes=50_000),
        )
        return cls(stages=stages, **fields_)

    def mix(self, stage: int) -> dict:
        """Stage `stage`'s training mix: FeatureConfig fields."""
        s = self.stages[stage]
        return {
            "pseudo_user_weight": float(s.pseudo_user_weight),
            "like_rating": self.like_rating if s.like_rating is None else s.like_rating,
            "nope_rating": self.nope_rating if s.nope_rating is None else s.nope_rating,
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PlanConfig:
        values = dict(values)
        values["stages"] = tuple(Stage(**s) for s in values.get("stages", ()))
        return cls(**values)


# --- the plan's record ---------------------------------------------------------------------------


def _record(cur, plan: str, event: str, stage: int, *, actor: str, reason: str | None = None,
            model_version: str | None = None, evidence: dict | None = None) -> None:  # fmt: skip
    cur.execute(
        "insert into migration_events (plan, event, stage, model_version, decided_by, reason,"
        " evidence) values (%s, %s, %s, %s, %s, %s, %s)",
        (plan, event, stage, model_version, actor, reason, json.dumps(evidence or {}, default=str)),
    )


def _serving(cur) -> str | None:
    cur.execute("select model_version from serving_state")
    row = cur.fetchone()
    return row[0] if row else None


def _serving_mix(conn) -> tuple[str | None, dict | None, str | None]:
    """(version serving, the mix its model was trained at or None, why it is unknown)."""
    with conn.cursor() as cur:
        cur.execute(
            "select s.model_version, v.model_uri from serving_state s"
            " left join model_versions v using (model_version)"
        )
        row = cur.fetchone()
    conn.rollback()
    if row is None:
        return None, None, None
    version, uri = row
    try:
        from swiperec.model.train import read_model_card

        trained = read_model_card(uri)["input"]["feature_config"]
    except Exception as e:  # a model folder gone or unreadable: nothing to check against
        return version, None, f"its model card could not be read ({e.__class__.__name__})"
    return version, {k: trained.get(k) for k in ("pseudo_user_weight", "like_rating",
                                                  "nope_rating")}, None  # fmt: skip


def create(conn, name: str, config: PlanConfig, *, actor: str) -> dict:
    """Start a plan at stage 0, today's mix: the version serving now must have been trained at
    it (checked on its model card when it can be read), and counts as stage 0's. Refused
    while another plan is active."""
    from psycopg2 import errors

    serving, trained, unknown = _serving_mix(conn)
    if trained is not None and trained != config.mix(0):
        raise MigrationError(
            f"stage 0 must be the mix the version serving ({serving}) was trained at, "
            f"{trained}; the plan's stage 0 is {config.mix(0)}"
        )
    reason = f"{len(config.stages)} stages"
    if unknown:
        reason += f"; the version serving is taken as stage 0's: {unknown}"
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "insert into migration_plans (name, config, created_by) values (%s, %s, %s)",
                (name, json.dumps(config.to_dict()), actor),
            )
            _record(cur, name, "planned", 0, actor=actor, model_version=serving, reason=reason,
                    evidence=config.to_dict())  # fmt: skip
    except errors.UniqueViolation as e:
        conn.rollback()
        if get(conn, name) is not None:
            raise MigrationError(f"a plan named {name!r} exists") from e
        active = get(conn)
        raise MigrationError(
            f"plan {active['name'] if active else '?'!r} is active: finish or abandon it first"
        ) from e
    return get(conn, name)


def get(conn, name: str | None = None) -> dict | None:
    """The plan `name` (default: the active one) with its events, or None."""
    with conn.cursor() as cur:
        if name is None:
            cur.execute(
                "select name, state, config, stage, created_by, created_at, updated_at"
                " from migration_plans where state = 'active'"
            )
        else:
            cur.execute(
                "select name, state, config, stage, created_by, created_at, updated_at"
                " from migration_plans where name = %s",
                (name,),
            )
        row = cur.fetchone()
        if row is None:
            conn.rollback()
            return None
        columns = ("name", "state", "config", "stage", "created_by", "created_at", "updated_at")
        plan = dict(zip(columns, row, strict=True))
        cur.execute(
            "select at, event, stage, model_version, decided_by, reason, evidence"
            " from migration_events where plan = %s order by id",
            (plan["name"],),
        )
        columns = ("at", "event", "stage", "model_version", "decided_by", "reason", "evidence")
        plan["events"] = [dict(zip(columns, r, strict=True)) for r in cur.fetchall()]
        plan["serving"] = _serving(cur)
    conn.rollback()
    plan["config"] = PlanConfig.from_dict(plan["config"])
    plan["live_stage"] = live_stage(plan)
    return plan


def latest(conn) -> dict | None:
    """The most recently created plan, whatever its state, or None."""
    with conn.cursor() as cur:
        cur.execute("select name from migration_plans order by created_at desc limit 1")
        row = cur.fetchone()
    conn.rollback()
    return get(conn, row[0]) if row else None


def live_stage(plan: dict) -> int | None:
    """The stage the version serving was trained at (None: a version from outside the plan)."""
    for event in reversed(plan["events"]):
        if (
            event["event"] in ("planned", "gate_passed")
            and event["model_version"] == plan["serving"]
        ):
            return event["stage"]
    return None


def real_data(conn, window_days: int) -> dict:
    """Real users who swiped and their swipes over the last `window_days`."""
    with conn.cursor() as cur:
        cur.execute(
            "select count(distinct user_id), count(*) from user_video_decisions"
            " where created_at >= now() - %s * interval '24 hours'",
            (window_days,),
        )
        users, swipes = cur.fetchone()
    conn.rollback()
    return {"window_days": window_days, "real_users": int(users), "real_swipes": int(swipes)}


# --- decisions (pure) ----------------------------------------------------------------------------


def entry_problems(stage: Stage, data: dict) -> list[str]:
    """Why `stage` may not be entered with `data` (`real_data`'s counts); [] when it may."""
    out = []
    if data["real_users"] < stage.min_real_users:
        out.append(
            f"{data['real_users']} real users in the last {data['window_days']} days, the stage "
            f"needs {stage.min_real_users}"
        )
    if data["real_swipes"] < stage.min_real_swipes:
        out.append(
            f"{data['real_swipes']} real swipes in the last {data['window_days']} days, the "
            f"stage needs {stage.min_real_swipes}"
        )
    return out


def gate_problems(stage: Stage, comparison: dict, candidate: str, serving: str) -> list[str]:
    """Why a candidate trained at `stage` may not serve, from `compare_on_real_users` with both
    (`serving` the reference); [] when it may.

    A metric refuses the candidate when it is below the serving version's by more than the
    stage's margin (AUC: `max_auc_drop` points; Recall@50: `max_recall_drop`, relative) and
    the candidate is significantly worse on it (the bootstrap interval of the difference lies
    below 0). A drop within the margin never refuses; one beyond it that the real users cannot
    tell from noise does not either (with few real users the point estimates swing by more
    than the margins; the canary rollout's live guardrails are the check after this one).
    Without an interval the point estimate decides alone. A limit is met at its boundary."""
    from swiperec.migration.real_users import AUC, RECALL

    if comparison["users"] == 0:
        return ["no real users in the test period: the candidate cannot be compared"]
    mine, theirs = comparison["models"][candidate], comparison["models"][serving]
    undefined = [m for m in (AUC, RECALL) if mine[m] is None or theirs[m] is None]
    if undefined:
        return [
            f"{', '.join(undefined)} undefined on the test period's real users (all their "
            "swipes likes, or all nopes, or no likes): the candidate cannot be compared"
        ]
    differences = comparison.get("differences", {}).get(candidate, {})
    floors = {
        AUC: (theirs[AUC] - stage.max_auc_drop, f"{stage.max_auc_drop:g}"),
        RECALL: (theirs[RECALL] * (1 - stage.max_recall_drop), f"{stage.max_recall_drop:.0%}"),
    }
    names = {AUC: "AUC like vs nope", RECALL: "Recall@50"}
    out = []
    for metric, (floor, margin) in floors.items():
        if mine[metric] >= floor - 1e-12:
            continue
        ci = (differences.get(metric) or {}).get("ci95")
        if ci is not None and not ci[1] < 0:
            continue  # beyond the margin, but not significantly worse
        shown = "" if ci is None else f" (difference {ci[0]:+.4f} to {ci[1]:+.4f}, 95 %)"
        out.append(
            f"real users' {names[metric]} {mine[metric]:.4f} is more than {margin} below the "
            f"serving version's {theirs[metric]:.4f}{shown}"
        )
    return out


# --- moving on -----------------------------------------------------------------------------------


def advance(conn, *, actor: str, name: str | None = None) -> dict:
    """Move the active plan (or `name`) to its next stage when the current stage is live and
    the next one's entry condition holds; else record a refusal with the reasons. The last
    stage live completes the plan. Returns {"result": "advanced" | "refused" | "completed",
    "stage", "reasons", "evidence"}. Under the plan's row lock: two advances at once move it
    one stage."""
    plan = get(conn, name)
    if plan is None:
        raise MigrationError(f"no plan {name!r}" if name else "no active migration plan")
    config = plan["config"]
    data = real_data(conn, config.window_days)
    with conn, conn.cursor() as cur:
        cur.execute(
            "select stage, state from migration_plans where name = %s for update", (plan["name"],)
        )
        stage, state = cur.fetchone()
        if state != "active":
            raise MigrationError(f"plan {plan['name']!r} is {state}")
        plan = {**plan, "serving": _serving(cur), "stage": stage}
        live = live_stage(plan)
        evidence = {**data, "serving": plan["serving"], "live_stage": live}
        reasons = []
        if live != stage:
            reasons.append(
                f"stage {stage} is not live yet: the version serving ({plan['serving']}) was "
                + ("not trained under this plan" if live is None else f"trained at stage {live}")
                + f"; a candidate trained at stage {stage}'s mix must pass its gate and serve"
            )
        elif stage + 1 == len(config.stages):
            cur.execute(
                "update migration_plans set state = 'completed', updated_at = now()"
                " where name = %s",
                (plan["name"],),
            )
            _record(cur, plan["name"], "completed", stage, actor=actor, evidence=evidence,
                    reason="the last stage is live")  # fmt: skip
            return {"result": "completed", "stage": stage, "reasons": [], "evidence": evidence}
        if not reasons:
            reasons = entry_problems(config.stages[stage + 1], data)
        if reasons:
            _record(cur, plan["name"], "refused", stage, actor=actor, evidence=evidence,
                    reason="; ".join(reasons))  # fmt: skip
            return {"result": "refused", "stage": stage, "reasons": reasons, "evidence": evidence}
        cur.execute(
            "update migration_plans set stage = %s, updated_at = now() where name = %s",
            (stage + 1, plan["name"]),
        )
        _record(cur, plan["name"], "advanced", stage + 1, actor=actor, evidence=evidence,
                reason=config.stages[stage + 1].describe())  # fmt: skip
    return {"result": "advanced", "stage": stage + 1, "reasons": [], "evidence": evidence}


def abandon(conn, *, actor: str, reason: str, name: str | None = None) -> None:
    """End the active plan (or `name`) where it is; refused once it is not active."""
    plan = get(conn, name)
    if plan is None:
        raise MigrationError(f"no plan {name!r}" if name else "no active migration plan")
    with conn, conn.cursor() as cur:
        cur.execute(
            "update migration_plans set state = 'abandoned', updated_at = now()"
            " where name = %s and state = 'active' returning stage",
            (plan["name"],),
        )
        row = cur.fetchone()
        if row is None:
            raise MigrationError(f"plan {plan['name']!r} is not active")
        _record(cur, plan["name"], "abandoned", row[0], actor=actor, reason=reason)


# --- what training uses --------------------------------------------------------------------------


def training_mix(conn) -> dict | None:
    """The active plan's current mix: {"plan", "stage", "feature_config": FeatureConfig
    overrides}, or None without an active plan."""
    plan = get(conn)
    if plan is None:
        return None
    return {
        "plan": plan["name"],
        "stage": plan["stage"],
        "feature_config": plan["config"].mix(plan["stage"]),
    }


def check_gate(conn, mix: dict, version: str, candidate_dir: str, snapshot: str,
               test_start_us: int) -> dict:  # fmt: skip
    """A candidate trained at `mix` (`training_mix`'s) against the version serving, on real
    users from `test_start_us`: {"passed", "reasons", "serving", "comparison"}. With nothing
    serving there is nothing to regress from: passed."""
    from swiperec.migration.real_users import compare_on_real_users

    plan = get(conn, mix["plan"])
    if plan is None:
        raise MigrationError(f"no plan {mix['plan']!r}")
    stage = plan["config"].stages[mix["stage"]]
    serving = plan["serving"]
    comparison, reasons = None, []
    if serving is not None:
        with conn.cursor() as cur:
            cur.execute("select model_uri from model_versions where model_version = %s",
                        (serving,))  # fmt: skip
            row = cur.fetchone()
        conn.rollback()
        if row is None or not row[0]:
            reasons = [f"the serving version {serving} has no model in the registry to compare"]
        else:
            comparison = compare_on_real_users(
                snapshot, test_start_us, {version: candidate_dir, serving: row[0]},
                reference=serving,
            )  # fmt: skip
            reasons = gate_problems(stage, comparison, version, serving)
    return {"passed": not reasons, "reasons": reasons, "serving": serving,
            "comparison": comparison}  # fmt: skip


def record_gate(conn, mix: dict, version: str, gate: dict, *, actor: str = ACTOR_PIPELINE) -> None:
    """Record `check_gate`'s verdict on `version` in the plan's events."""
    event = "gate_passed" if gate["passed"] else "gate_failed"
    evidence = {"serving": gate["serving"], "comparison": gate["comparison"]}
    with conn, conn.cursor() as cur:
        _record(cur, mix["plan"], event, mix["stage"], actor=actor, model_version=version,
                reason="; ".join(gate["reasons"]) or None, evidence=evidence)  # fmt: skip
