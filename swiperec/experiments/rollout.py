"""The rollout controller: one `tick` decides, for every running rollout, whether to hold,
move to the next stage, complete or roll back; and the same moves by hand.

    tick(conn)                        # safe every minute, and from two places at once
    advance(conn, name, actor=..., reason=...)
    rollback(conn, name, actor=..., reason=...)

What a tick decides for a rollout, on the analysis of its current stage (analysis.analyse):

1. roll back on a sample ratio mismatch (the assignment is broken, so nothing else is valid);
2. roll back when any guardrail is `breached` (its always-valid confidence sequence lies wholly
   on the bad side: significantly worse, at any look) or coverage fell beyond its margin;
3. roll back when the stage has run `stage_max_hours` without a verdict (a candidate that
   cannot show it is no worse does not go further);
4. advance when the minimum sample is reached and every guardrail is `non-inferior`; from the
   last stage below 100 %, complete: the candidate is promoted through the registry (it must
   be blessed) and the rollout's routes end, in one transaction;
5. otherwise hold.

An analysis or a decision that fails (a bug, a candidate that can no longer be promoted) holds
that rollout and is reported as `error`; the other experiments are still decided. An A/B test
is only ended by a tick when it reaches `max_hours` (state `completed`); its verdict is read in
its report, not acted on.

Every decision is one transaction that re-reads the experiment under a row lock and acts only
if it is still running at the stage that was analysed, so a tick racing a person (or another
tick) cannot act twice. A rollback ends the routes (every user is on the control version, which
still serves), marks the candidate `rolled_back` in the registry and records who decided, why,
and the analysis it saw in `experiment_events`; served logs are not touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from swiperec.experiments import design
from swiperec.experiments.analysis import analyse
from swiperec.experiments.design import ExperimentConfig, ExperimentError
from swiperec.registry.versions import promote_in

log = logging.getLogger("swiperec.experiments")
CONTROLLER = "swiperec rollout tick"


@dataclass(frozen=True)
class Decision:
    action: str  # hold, advance, complete, rollback, end
    reason: str


def decide(experiment: dict, result: dict, stage_hours: float) -> Decision:
    """What the controller does with a rollout's stage analysis (pure: tested at each
    boundary)."""
    config = ExperimentConfig.from_dict(experiment["config"])
    if result["srm"]["mismatch"]:
        p = result["srm"]["sequential_pvalue"]
        return Decision("rollback", f"sample ratio mismatch (always-valid p = {p:.2g})")
    comparison = result["comparisons"].get("candidate")
    if comparison is None:
        return Decision("hold", "no candidate arm to compare")
    checks = [*comparison["guardrails"], comparison["coverage"]]
    breached = [g["metric"] for g in checks if g.get("verdict") == "breached"]
    if breached:
        return Decision("rollback", "guardrail breached: " + ", ".join(breached))
    if stage_hours >= config.stage_max_hours:
        return Decision(
            "rollback",
            f"stage {experiment['stage']} ran {stage_hours:.1f} h "
            f"(limit {config.stage_max_hours} h) without a verdict",
        )
    if not comparison["min_sample_reached"]:
        return Decision("hold", "minimum sample not reached")
    pending = [g["metric"] for g in checks if g.get("verdict") != "non-inferior"]
    if pending:
        return Decision("hold", "not yet non-inferior: " + ", ".join(pending))
    if config.stages[experiment["stage"] + 1] >= 100:
        return Decision("complete", "every guardrail non-inferior at the last stage")
    return Decision("advance", "every guardrail non-inferior with the minimum sample")


def _stage_hours(conn, experiment: dict) -> float:
    with conn.cursor() as cur:
        cur.execute(
            "select extract(epoch from now() - %s) / 3600", (experiment["stage_started_at"],)
        )
        hours = float(cur.fetchone()[0])
    conn.rollback()
    return hours


def _locked_running(cur, name: str, stage) -> dict | None:
    """The experiment under a row lock, if it is still running at `stage`; else None."""
    cur.execute(
        "select kind, state, stage, config from experiments where name = %s for update", (name,)
    )
    row = cur.fetchone()
    if row is None or row[1] != "running" or row[2] != stage:
        return None
    return {"name": name, "kind": row[0], "stage": row[2], "config": row[3]}


def _candidate(experiment: dict) -> str:
    return experiment["arms"]["candidate"]["version"]


def apply(conn, experiment: dict, decision: Decision, *, actor: str, evidence=None) -> bool:
    """Carry out `decision` in one transaction; False when the experiment moved meanwhile."""
    name, stage = experiment["name"], experiment["stage"]
    with conn, conn.cursor() as cur:
        current = _locked_running(cur, name, stage)
        if current is None:
            return False
        if decision.action == "advance":
            design.set_stage(cur, current, stage + 1)
            design.record(
                cur,
                name,
                "advanced",
                stage=stage + 1,
                actor=actor,
                reason=decision.reason,
                evidence=evidence,
            )
        elif decision.action == "complete":
            design.end(
                cur, name, "completed", actor=actor, reason=decision.reason, evidence=evidence
            )
            promote_in(cur, _candidate(experiment), actor=actor)
        elif decision.action == "rollback":
            design.end(
                cur, name, "rolled_back", actor=actor, reason=decision.reason, evidence=evidence
            )
            cur.execute(
                "update model_versions set stage = 'rolled_back', updated_at = now() "
                "where model_version = %s",
                (_candidate(experiment),),
            )
        elif decision.action == "end":
            design.end(
                cur, name, "completed", actor=actor, reason=decision.reason, evidence=evidence
            )
        else:
            raise ValueError(f"unknown action {decision.action!r}")
    return True


def tick(conn, *, actor: str = CONTROLLER) -> list[dict]:
    """One pass over the running experiments; returns what was decided for each."""
    with conn.cursor() as cur:
        cur.execute("select name, kind from experiments where state = 'running' order by name")
        running = cur.fetchall()
    conn.rollback()
    out = []
    for name, kind in running:
        experiment = design.get(conn, name)
        if experiment["state"] != "running":
            continue
        config = ExperimentConfig.from_dict(experiment["config"])
        if kind == "ab":
            hours = _hours_since(conn, experiment["started_at"])
            if hours < config.max_hours:
                out.append({"experiment": name, "action": "hold", "reason": "running"})
                continue
            decision = Decision("end", f"reached its maximum duration ({config.max_hours} h)")
        else:
            try:
                result = analyse(conn, name)
            except Exception as e:  # one experiment's failure must not stop the others' ticks
                conn.rollback()
                log.exception("%s: the analysis failed; holding", name)
                out.append({"experiment": name, "action": "error", "reason": repr(e),
                            "stage": experiment["stage"]})  # fmt: skip
                continue
            decision = decide(experiment, result, _stage_hours(conn, experiment))
        try:
            done = decision.action == "hold" or apply(
                conn,
                experiment,
                decision,
                actor=actor,
                evidence=None if kind == "ab" else _evidence(result),
            )
        except Exception as e:  # e.g. the candidate cannot be promoted: the others go on
            conn.rollback()
            log.exception("%s: %s failed", name, decision.action)
            out.append({"experiment": name, "action": "error", "stage": experiment["stage"],
                        "reason": f"{decision.action} failed: {e!r}"})  # fmt: skip
            continue
        if decision.action != "hold":
            log.info(
                "%s: %s (%s)%s",
                name,
                decision.action,
                decision.reason,
                "" if done else " - it moved meanwhile, nothing done",
            )
        out.append(
            {
                "experiment": name,
                "action": decision.action if done else "none",
                "reason": decision.reason,
                "stage": experiment["stage"],
            }
        )
    return out


def _hours_since(conn, moment) -> float:
    with conn.cursor() as cur:
        cur.execute("select extract(epoch from now() - %s) / 3600", (moment,))
        hours = float(cur.fetchone()[0])
    conn.rollback()
    return hours


def _evidence(result: dict) -> dict:
    """What the decision saw, compactly: SRM, users, and each check of the candidate."""
    comparison = result["comparisons"].get("candidate", {})
    keep = (
        "metric",
        "control",
        "treatment",
        "effect",
        "sequential_ci",
        "margin",
        "verdict",
        "ratio",
        "status",
    )
    return {
        "window": result["window"],
        "users": result["users"],
        "totals": result["totals"],
        "srm": result["srm"],
        "checks": [
            {k: g[k] for k in keep if k in g}
            for g in [*comparison.get("guardrails", []), comparison.get("coverage", {})]
        ],
    }


def _running_rollout(conn, name: str) -> dict:
    experiment = design.get(conn, name)
    if experiment["kind"] != "rollout" or experiment["state"] != "running":
        raise ExperimentError(f"{name!r} is not a running rollout")
    return experiment


def advance(conn, name: str, *, actor: str | None = None, reason: str) -> str:
    """Move a rollout to its next stage by hand (from the last: complete it). Returns the
    action taken."""
    experiment = _running_rollout(conn, name)
    config = ExperimentConfig.from_dict(experiment["config"])
    action = "complete" if config.stages[experiment["stage"] + 1] >= 100 else "advance"
    if not apply(conn, experiment, Decision(action, reason), actor=actor or _user()):
        raise ExperimentError(f"{name!r} moved while this ran: look again (rollout status)")
    return action


def rollback(conn, name: str, *, actor: str | None = None, reason: str) -> None:
    """Roll a rollout back by hand: every user on the control version, the reason recorded."""
    experiment = _running_rollout(conn, name)
    if not apply(conn, experiment, Decision("rollback", reason), actor=actor or _user()):
        raise ExperimentError(f"{name!r} moved while this ran: look again (rollout status)")


def _user() -> str:
    import getpass

    return getpass.getuser()
