"""An experiment's analysis: per-user sums from the logs, then SRM, effects and guardrails.

    result = analyse(conn, "ranker-b")          # now, over the experiment (a rollout: its stage)
    looks = history(conn, "ranker-b", looks=8)  # the same at evenly spaced times, for the report

The unit is the user (assignment is per user): analysis.sql sums each user's requests, served
items, swipes and sessions in the window, per arm. Then (swiperec.experiments.stats):

- sample ratio mismatch: users per arm against the arms' shares, decided by an always-valid
  test (an SRM invalidates the rest);
- per metric, treatment minus control: a ratio of sums by the delta method, the primary metric
  with CUPED on the user's like-rate before the experiment; a fixed-horizon CI and p-value, and
  the always-valid confidence sequence and p-value that stay valid however often one looks;
- per guardrail, a non-inferiority verdict against its margin (`non-inferior`, `breached`:
  significantly worse, or `inconclusive`), each at alpha / the number of guardrails;
- coverage, distinct videos per served item on equal-size samples of each arm, against its
  relative margin (a descriptive check, no test: it has a verdict only once the minimum sample
  is reached);
- the primary metric per user segment (`new`: first swipe within `new_user_days` of the start,
  or none; `returning`), reported beside the whole (the decisions use the whole).

A rollout is analysed over its current stage only (the arms' shares changed at the stage's
start); its CUPED covariate still comes from before the rollout began, so it is untouched by
the candidate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from swiperec.experiments import stats
from swiperec.experiments.design import BUCKETS, METRICS, ExperimentConfig, get

COVARIATES = {"like_rate": ("likes_pre", "answered_pre")}


@cache
def _query() -> str:
    return resources.files("swiperec.experiments").joinpath("analysis.sql").read_text()


def _now(conn) -> datetime:
    with conn.cursor() as cur:
        cur.execute("select now()")
        now = cur.fetchone()[0]
    conn.rollback()
    return now


def window(conn, experiment: dict, at: datetime | None = None) -> tuple[datetime, datetime]:
    """The time range analysed: the experiment's (a rollout's current stage's) start to `at`
    (default now; an ended experiment: its end)."""
    start = (
        experiment["stage_started_at"]
        if experiment["kind"] == "rollout"
        else (experiment["started_at"])
    )
    end = at or experiment["ended_at"] or _now(conn)
    return start, end


def slow_threshold(conn, name: str, start, end) -> float:
    """The control arm's p95 request time in the window (ms); +inf without requests."""
    with conn.cursor() as cur:
        cur.execute(
            "select percentile_cont(0.95) within group (order by q.duration_ms) "
            "from serving_requests q join experiment_arms a on a.route = q.route "
            "where a.experiment = %s and a.arm = 'control' and q.created_at >= %s "
            "and q.created_at < %s",
            (name, start, end),
        )
        value = cur.fetchone()[0]
    conn.rollback()
    return float(value) if value is not None else float("inf")


def per_user(conn, experiment: dict, start, end) -> tuple[pd.DataFrame, float]:
    """One row per (user, arm) in the window (analysis.sql), and the slow threshold used."""
    config = ExperimentConfig.from_dict(experiment["config"])
    slow_ms = slow_threshold(conn, experiment["name"], start, end)
    params = {
        "experiment": experiment["name"],
        "start": start,
        "end": end,
        "experiment_start": experiment["started_at"],
        "pre_start": experiment["started_at"] - timedelta(days=config.pre_days),
        "attribution": config.attribution_seconds,
        "session_gap": config.session_gap_seconds,
        "new_user_days": config.new_user_days,
        "slow_ms": slow_ms if np.isfinite(slow_ms) else 1e12,
    }
    with conn.cursor() as cur:
        cur.execute(_query(), params)
        columns = [c.name for c in cur.description]
        rows = cur.fetchall()
    conn.rollback()
    frame = pd.DataFrame(rows, columns=columns)
    for column in columns[3:]:
        frame[column] = pd.to_numeric(frame[column]).astype(float)
    return frame, slow_ms


def coverage(conn, name: str, start, end) -> dict[str, dict]:
    """Per arm: distinct videos among an equal-size sample of its served items (the smallest
    arm's count; the sample is fixed by a hash, so a re-run gives the same answer)."""
    with conn.cursor() as cur:
        cur.execute(
            """
            with served as (
                select a.arm, s.video_id,
                       row_number() over (partition by a.arm
                                          order by md5(s.request_id::text || s.position)) as n
                from served_recommendations s join experiment_arms a on a.route = s.route
                where a.experiment = %(name)s and s.created_at >= %(start)s
                  and s.created_at < %(end)s
            ),
            sample as (select min(c) as size from (select count(*) as c from served
                                                   group by arm) t)
            select arm, (select size from sample), count(distinct video_id)
            from served where n <= (select size from sample) group by arm
            """,
            {"name": name, "start": start, "end": end},
        )
        out = {
            arm: {"sample": int(size), "distinct": int(d), "per_item": d / size if size else None}
            for arm, size, d in cur.fetchall()
        }
    conn.rollback()
    return out


def _metric(frame, metric, arm, config, users, *, guardrail=None) -> dict:
    numer, denom, higher_is_better = METRICS[metric]
    covariate = COVARIATES.get(metric, (None, None))
    pair = frame[frame["arm"].isin(["control", arm])]
    out = {"metric": metric, "higher_is_better": higher_is_better}
    if covariate[1] is not None and not (pair.groupby("arm")[covariate[1]].sum() > 0).all():
        covariate = (None, None)  # no history in an arm (all new users): no CUPED
    try:
        effect = stats.ratio_effect(
            pair,
            numer,
            denom,
            control="control",
            treatment=arm,
            numer_pre=covariate[0],
            denom_pre=covariate[1],
            alpha=config.alpha,
        )
    except ValueError as e:
        return {**out, "status": "not enough data", "detail": str(e)}
    # Guardrails share alpha (Bonferroni): a rollout is rolled back when any one is breached,
    # so each is tested at alpha / their number to keep the chance of a false rollback at a
    # stage within alpha.
    alpha = config.alpha / len(config.guardrails) if guardrail is not None else config.alpha
    seq = stats.sequential(
        effect.effect,
        effect.se,
        n=min(users.get("control", 0), users.get(arm, 0)),
        planned_n=config.planned_users_per_arm,
        alpha=alpha,
    )
    out.update(
        status="ok",
        sequential_alpha=alpha,
        control=effect.control,
        treatment=effect.treatment,
        effect=effect.effect,
        se=effect.se,
        ci=[effect.ci_lower, effect.ci_upper],
        pvalue=effect.pvalue,
        relative_effect=effect.rel_effect,
        cuped=covariate[0] is not None,
        variance_reduction=effect.variance_reduction,
        sequential_ci=[seq.ci_lower, seq.ci_upper],
        sequential_pvalue=seq.pvalue,
        significant=seq.significant,
    )
    if guardrail is not None:
        margin = guardrail.margin * abs(effect.control) if guardrail.relative else guardrail.margin
        out["margin"] = margin
        out["verdict"] = stats.non_inferior(seq, margin, higher_is_better=higher_is_better)
    return out


def analyse(conn, name: str, *, at: datetime | None = None) -> dict:
    """The experiment's analysis now (or as of `at`): a JSON-ready dict (see the module)."""
    experiment = get(conn, name)
    config = ExperimentConfig.from_dict(experiment["config"])
    start, end = window(conn, experiment, at)
    frame, slow_ms = per_user(conn, experiment, start, end)
    arms = experiment["arms"]
    users = frame.groupby("arm")["user_id"].nunique().to_dict()
    crossovers = int(frame.groupby("user_id")["arm"].nunique().gt(1).sum())
    shares = {
        a: (info["to"] - info["from"]) / BUCKETS
        for a, info in arms.items()
        if info["to"] > info["from"]
    }
    srm = stats.srm(
        {a: int(users.get(a, 0)) for a in shares}, shares, threshold=config.srm_threshold
    )
    sums = frame.groupby("arm")[["requests", "served", "answered", "likes"]].sum()
    result = {
        "experiment": name,
        "kind": experiment["kind"],
        "state": experiment["state"],
        "stage": experiment["stage"],
        "window": [start.astimezone(UTC).isoformat(), end.astimezone(UTC).isoformat()],
        "users": {a: int(users.get(a, 0)) for a in arms},
        "totals": {
            a: {k: int(v) for k, v in sums.loc[a].items()} if a in sums.index else {} for a in arms
        },
        "crossovers": crossovers,
        "srm": {
            "chi2": srm.chi2,
            "pvalue": srm.pvalue,
            "sequential_pvalue": srm.sequential_pvalue,
            "mismatch": srm.mismatch,
            "expected_shares": srm.expected_shares,
        },
        "slow_ms": slow_ms if np.isfinite(slow_ms) else None,
        "comparisons": {},
    }
    cover = coverage(conn, name, start, end)
    result["coverage"] = cover
    for arm, info in arms.items():
        if arm == "control" or not info["analysed"] or arm not in shares:
            continue
        ready = (
            users.get(arm, 0) >= config.min_users_per_arm
            and users.get("control", 0) >= config.min_users_per_arm
            and result["totals"].get(arm, {}).get("answered", 0) >= config.min_answered_per_arm
            and result["totals"].get("control", {}).get("answered", 0)
            >= config.min_answered_per_arm
        )
        primary = _metric(frame, config.primary, arm, config, users)
        guardrails = [
            _metric(frame, g.metric, arm, config, users, guardrail=g) for g in config.guardrails
        ]
        # Coverage has no test, so it has a verdict only with the minimum sample: on a few
        # hundred items any arm covers less than the other by chance.
        covered = {"metric": "coverage", "margin": config.coverage_margin,
                   "verdict": "inconclusive"}  # fmt: skip
        if cover.get(arm, {}).get("per_item") and cover.get("control", {}).get("per_item"):
            ratio = cover[arm]["per_item"] / cover["control"]["per_item"]
            covered["ratio"] = ratio
            if ready:
                covered["verdict"] = (
                    "breached" if ratio < 1 - config.coverage_margin else "non-inferior"
                )
        segments = {}
        for segment in ("new", "returning"):
            part = frame[frame["segment"] == segment]
            counts = part.groupby("arm")["user_id"].nunique().to_dict()
            segments[segment] = {
                "users": {a: int(counts.get(a, 0)) for a in ("control", arm)},
                **_metric(part, config.primary, arm, config, counts),
            }
        result["comparisons"][arm] = {
            "min_sample_reached": bool(ready),
            "primary": primary,
            "guardrails": guardrails,
            "coverage": covered,
            "segments": segments,
        }
    return result


def history(conn, name: str, *, looks: int = 8) -> list[dict]:
    """`analyse` at `looks` evenly spaced times from the window's start to its end, as someone
    looking at each would have seen it: every metric's always-valid p-value is the running
    minimum over the looks so far and its confidence sequence the running intersection (both
    stay valid: Johari et al. 2017, section 3; Howard et al. 2021, section 3). The last look is
    the analysis now, with those running values."""
    experiment = get(conn, name)
    start, end = window(conn, experiment)
    step = (end - start) / looks
    return as_seen([analyse(conn, name, at=start + step * (i + 1)) for i in range(looks)])


def as_seen(looks: list[dict]) -> list[dict]:
    """The analyses of successive looks (oldest first), changed in place so that each metric's
    always-valid p-value is its running minimum, its confidence sequence the running
    intersection, and a guardrail's verdict follows from that; returns them."""
    running: dict[tuple, dict] = {}
    for look in looks:
        for arm, comparison in look["comparisons"].items():
            rows = [("", comparison["primary"])]
            rows += [(f"guardrail:{r['metric']}", r) for r in comparison["guardrails"]]
            rows += [(f"segment:{s}", r) for s, r in comparison["segments"].items()]
            for key, row in rows:
                if row.get("status") != "ok":
                    continue
                seen = running.setdefault((arm, key, row["metric"]), {})
                if seen:
                    row["sequential_pvalue"] = min(row["sequential_pvalue"], seen["p"])
                    low = max(row["sequential_ci"][0], seen["ci"][0])
                    high = min(row["sequential_ci"][1], seen["ci"][1])
                    if low <= high:
                        row["sequential_ci"] = [low, high]
                    else:  # empty only when the plug-in se moved: this look's, flagged
                        row["sequence_reset"] = True
                    row["significant"] = row["sequential_pvalue"] < row["sequential_alpha"]
                    if "verdict" in row:
                        seq = stats.Sequential(row["sequential_pvalue"], *row["sequential_ci"],
                                               row["significant"])  # fmt: skip
                        row["verdict"] = stats.non_inferior(
                            seq, row["margin"], higher_is_better=row["higher_is_better"]
                        )
                seen.update(p=row["sequential_pvalue"], ci=row["sequential_ci"])
    return looks
