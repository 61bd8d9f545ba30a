"""Experiment: do A/B tests and rollouts decide right on simulated traffic through the real
Edge Function?

    python -m tests.performance.bench_experiments                   # runs `swiperec demo` first
    python -m tests.performance.bench_experiments --home .swiperec  # a home where the demo ran
    python -m tests.performance.bench_experiments --home H --only aa,srm

A home with the demo's data set, its ground truth and a blessed model serving (the script runs
`swiperec demo --simulate-seconds 0` in a fresh one unless --home is given). Traffic is
`swiperec.simulate` (the data set's users with their ground truth, over HTTP through the Edge
Function under Deno); the analysis is `swiperec.experiments.analysis.analyse`, the controller
`swiperec.experiments.rollout.tick`. Time is compressed: outcomes are attributed within 30 s
(simulated users swipe within a second of a response) and sessions end after 5 minutes idle.

1. aa: --aa-rounds rounds of N A/A experiments at once on disjoint user buckets (both arms
   serve the production version), one simulation of --aa-minutes per round, `analyse` of every
   experiment every --look-seconds; pooled over the rounds: how many were ever declared
   significant by the always-valid p-value (the goal: at most alpha), by the naive
   fixed-horizon p-value at any look and at the last look, and how many sample ratio mismatch
   alarms (the goal: none).
2. ab: a weaker model (the repo's trainer on the demo run's transform output, one short epoch)
   against the production model, 50/50, until the always-valid test declares a winner or
   --ab-minutes pass: the sign, the effect and its confidence sequence, the served items and
   users it needed, CUPED's variance reduction.
3. rollback: a staged rollout (10, 50, 100 %) of a broken version (bench_alerts': the
   production model with its video vectors shuffled, blessed as if it had passed the gate),
   `rollout.tick` every 10 s: after how many served items and seconds the controller rolled it
   back on its own, that every user is back on control, that no served logs were lost.
4. srm: an A/A test whose treatment arm loses the logs of 30 % of its users (their rows in
   serving_requests and served_recommendations deleted for the window, as a broken logger
   would drop them): the SRM p-value and `mismatch` before and after the loss.

5. healthy (only with --only healthy, not in a full run): the control of 3, the same rollout of
   a candidate as good as production (its model's embeddings written again under another
   version): the goal is no rollback. Serving goes back to the demo's version afterwards.

Writes tests/performance/results/experiments.json (each section replaces its own part).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import scipy.stats

from tests.performance.bench_alerts import BROKEN, make_broken_version
from tests.performance.record import machine

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "experiments.json"
SECTIONS = ("aa", "ab", "rollback", "srm")
EXTRA = ("healthy",)  # not in a full run (time): --only healthy
ATTRIBUTION_SECONDS = 30
SESSION_GAP_SECONDS = 300
DEFAULT_AA_EXPERIMENTS = 20
DEFAULT_AA_ROUNDS = 3
DEFAULT_AA_MIN_USERS = 50  # per arm (the product's default is 100: the demo has few users)
DEFAULT_AA_SEED = 11  # the A/A simulation's; another seed: a replication, saved beside
DEFAULT_COVERAGE_MARGIN = 0.2  # ExperimentConfig's
LOST_SHARE = 30  # percent of the SRM test's treatment users whose logs are lost


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def config(**overrides):
    """Compressed time: outcomes within 30 s, sessions split by 5 idle minutes."""
    from swiperec.experiments.design import ExperimentConfig

    values = {
        "attribution_seconds": ATTRIBUTION_SECONDS,
        "session_gap_seconds": SESSION_GAP_SECONDS,
    }
    return ExperimentConfig(**{**values, **overrides})


class Traffic(threading.Thread):
    """`simulate` in a thread, stoppable; keeps its report (or the error)."""

    running: ClassVar[list[Traffic]] = []  # main() stops them when a section fails

    def __init__(self, url: str, truth, options):
        super().__init__(daemon=True)
        Traffic.running.append(self)
        self.url, self.truth, self.options = url, truth, options
        self.stop = threading.Event()
        self.report = None
        self.error: BaseException | None = None
        self.started_at = time.monotonic()

    def run(self) -> None:
        from swiperec.simulate import simulate

        try:
            self.report = simulate(self.url, self.truth, self.options, stop=self.stop)
        except BaseException as error:
            self.error = error

    def finish(self) -> dict:
        self.join()
        if self.error is not None:
            raise self.error
        return compact(self.report)

    def users(self) -> list[str]:
        """Every user who took part: the sampled truth users and the new sign-ups."""
        report = self.report
        return list(report.participants) + list(report.new_user_truth)


def compact(report) -> dict:
    """The simulation report without the per-user and per-video maps."""
    data = report.to_dict()
    for key in ("new_user_truth", "new_video_truth", "function_log_tail"):
        data.pop(key, None)
    return data


def options(args, minutes: float, seed: int, **overrides):
    from swiperec.simulate import SimulationOptions

    values = {
        "rate": args.rate,
        "duration": minutes * 60,
        "users": args.users,
        "seed": seed,
        "new_videos_per_minute": 2,
        "new_users_per_minute": args.new_users_per_minute,
        "session_requests": tuple(int(x) for x in args.session_requests.split(",")),
    }
    return SimulationOptions(**{**values, **overrides})


def end_running(conn, reason: str) -> list[str]:
    """Stop experiments a previous (interrupted) run left running: their traffic would overlap."""
    from swiperec.experiments import design

    with conn.cursor() as cur:
        cur.execute("select name from experiments where state = 'running'")
        names = [r[0] for r in cur.fetchall()]
    conn.rollback()
    for name in names:
        design.stop(conn, name, reason=reason, actor="bench_experiments")
    return names


def scalar(conn, sql: str, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        value = cur.fetchone()[0]
    conn.rollback()
    return value


def primary_of(result: dict, arm: str) -> dict:
    comparison = result["comparisons"].get(arm)
    return comparison["primary"] if comparison else {"status": "no comparison"}


# --- 1. A/A ------------------------------------------------------------------------------------


def section_aa(conn, url, truth, serving: str, args, tag: str) -> dict:
    """--aa-rounds rounds, each of --aa-experiments A/A experiments at once on disjoint buckets
    under one simulation; the verdicts pooled over every experiment of every round."""
    from swiperec.experiments import analysis, design

    n = args.aa_experiments
    width = design.BUCKETS // n
    expected_per_arm = max(2, args.users // (2 * n))
    cfg = config(
        min_users_per_arm=args.aa_min_users,
        min_answered_per_arm=10 * args.aa_min_users,
        planned_users_per_arm=expected_per_arm,
    )
    seen: dict[str, list[dict]] = {}  # per experiment: its entry at each look
    looks: list[dict] = []  # per look of every round: when, how long, how many significant
    simulations = []
    for round_ in range(args.aa_rounds):
        names = [f"aa-{round_}-{i}-{tag}" for i in range(n)]
        for i, name in enumerate(names):
            design.start(
                conn,
                name,
                control=serving,
                arms={"treatment": serving},
                shares={"treatment": 50},
                traffic=(i * width, (i + 1) * width),
                config=cfg,
                actor="bench_experiments",
            )
            seen[name] = []
        log(
            f"aa round {round_ + 1}/{args.aa_rounds}: {n} A/A experiments of {width} buckets "
            f"each on {serving}; traffic for {args.aa_minutes:g} min at {args.rate:g} requests/s"
        )
        traffic = Traffic(
            url, truth, options(args, args.aa_minutes, seed=args.aa_seed + 1000 * round_)
        )
        traffic.start()

        def look(traffic, names, round_, final: bool) -> None:
            started = time.perf_counter()
            at = time.monotonic() - traffic.started_at
            for name in names:
                result = analysis.analyse(conn, name)
                primary = primary_of(result, "treatment")
                comparison = result["comparisons"].get("treatment", {})
                seen[name].append(
                    {
                        "users": result["users"],
                        "answered": {a: t.get("answered", 0) for a, t in result["totals"].items()},
                        "srm_pvalue": result["srm"]["sequential_pvalue"],
                        "srm_mismatch": result["srm"]["mismatch"],
                        "srm_chi2_pvalue": result["srm"]["pvalue"],
                        "status": primary.get("status"),
                        "min_sample_reached": comparison.get("min_sample_reached", False),
                        "effect": primary.get("effect"),
                        "pvalue": primary.get("pvalue"),
                        "sequential_pvalue": primary.get("sequential_pvalue"),
                        "sequential_ci": primary.get("sequential_ci"),
                        "cuped": primary.get("cuped"),
                    }
                )
            seconds = time.perf_counter() - started
            now = [seen[name][-1] for name in names]
            ok = [e for e in now if e["status"] == "ok" and e["min_sample_reached"]]
            looks.append(
                {
                    "round": round_ + 1,
                    "at_seconds": round(at, 1),
                    "final": final,
                    "analyse_all_seconds": round(seconds, 2),
                    "analysable": sum(1 for e in now if e["status"] == "ok"),
                    "min_sample_reached": len(ok),
                    "significant_always_valid": sum(
                        1 for e in ok if e["sequential_pvalue"] < cfg.alpha
                    ),
                    "significant_naive": sum(1 for e in ok if e["pvalue"] < cfg.alpha),
                    "srm_alarms": sum(1 for e in now if e["srm_mismatch"]),
                    "median_users_per_arm": float(
                        np.median([u for e in now for u in e["users"].values()] or [0])
                    ),
                }
            )
            low = min((e["sequential_pvalue"] for e in ok), default=None)
            log(
                f"aa look {len(looks)} at {at:.0f} s: {len(ok)}/{n} at min sample, min "
                f"always-valid p {low if low is None else round(low, 3)}, {seconds:.1f} s for "
                f"{n} analyses"
            )

        next_look = time.monotonic() + args.look_seconds
        while traffic.is_alive():
            traffic.join(timeout=max(0.0, next_look - time.monotonic()))
            if traffic.is_alive():
                look(traffic, names, round_, final=False)
                next_look += args.look_seconds
        simulations.append(traffic.finish())
        time.sleep(3)  # the last swipes are committed
        look(traffic, names, round_, final=True)
        for name in names:
            design.stop(conn, name, reason="bench_experiments: A/A done", actor="bench_experiments")

    alpha = cfg.alpha
    names = list(seen)
    total = len(names)

    def share(pred) -> dict:
        hits = [name for name in names if pred(name)]
        ci = scipy.stats.binomtest(len(hits), total).proportion_ci(0.95)
        return {
            "count": len(hits),
            "share": round(len(hits) / total, 4),
            "share_ci95_clopper_pearson": [round(ci.low, 4), round(ci.high, 4)],
            "experiments": hits,
        }

    def counted(entry, key, with_min_sample=True) -> bool:
        return (
            entry["status"] == "ok"
            and entry.get(key) is not None
            and (entry["min_sample_reached"] or not with_min_sample)
        )

    def ever(key, with_min_sample=True):
        return share(
            lambda m: any(e[key] < alpha for e in seen[m] if counted(e, key, with_min_sample))
        )

    last = {m: seen[m][-1] for m in names}
    users_per_arm = [u for e in last.values() for u in e["users"].values()]
    answered_per_arm = [a for e in last.values() for a in e.get("answered", {}).values()]
    final_p = [last[m]["pvalue"] for m in names if counted(last[m], "pvalue")]
    return {
        "what": "rounds of N A/A experiments (the production version in both arms, 50/50) at "
        "once on disjoint user buckets, one simulation per round; analyse() of each at every "
        "look; a look counts when the primary metric (like_rate) is analysable and the "
        "experiment's minimum sample is reached (min_users_per_arm, min_answered_per_arm of the "
        "config); 'significant': p < alpha; pooled over every experiment of every round",
        "serving_version": serving,
        "rounds": args.aa_rounds,
        "experiments_per_round": n,
        "experiments": total,
        "buckets_per_experiment": width,
        "config": json.loads(cfg.to_json()),
        "simulations": simulations,
        "look_every_seconds": args.look_seconds,
        "looks": len(looks),
        "alpha": alpha,
        "users_per_arm_at_last_look": {
            "min": int(min(users_per_arm)),
            "median": float(np.median(users_per_arm)),
            "max": int(max(users_per_arm)),
        },
        "answered_items_per_arm_at_last_look": {
            "min": int(min(answered_per_arm)),
            "median": float(np.median(answered_per_arm)),
            "max": int(max(answered_per_arm)),
        },
        "experiments_with_min_sample_at_last_look": sum(
            1 for e in last.values() if e.get("min_sample_reached")
        ),
        "significant_always_valid_at_any_look": ever("sequential_pvalue"),
        "significant_always_valid_at_any_look_goal": f"share <= alpha = {alpha}",
        "significant_naive_at_any_look": ever("pvalue"),
        "significant_naive_at_last_look": share(
            lambda m: counted(last[m], "pvalue") and last[m]["pvalue"] < alpha
        ),
        "without_the_min_sample_rule": {
            "note": "every look where the metric was computable, however few users",
            "significant_always_valid_at_any_look": ever("sequential_pvalue", False),
            "significant_naive_at_any_look": ever("pvalue", False),
        },
        "naive_pvalue_at_last_look": {
            "count": len(final_p),
            "mean": round(float(np.mean(final_p)), 3) if final_p else None,
            "share_below_0.5": round(float(np.mean(np.array(final_p) < 0.5)), 3)
            if final_p
            else None,
            "kolmogorov_smirnov_vs_uniform_pvalue": round(
                float(scipy.stats.kstest(final_p, "uniform").pvalue), 4
            )
            if len(final_p) > 1
            else None,
            "goal": "uniform: mean 0.5, half below 0.5",
        },
        "srm_alarms": {
            "looks_with_alarm": sum(1 for m in names for e in seen[m] if e["srm_mismatch"]),
            "experiments": share(lambda m: any(e["srm_mismatch"] for e in seen[m])),
            "goal": 0,
            "threshold": cfg.srm_threshold,
        },
        "srm_alarms_of_a_one_look_chi_square_test_at_every_look": {
            "looks_with_alarm": sum(
                1 for m in names for e in seen[m] if e["srm_chi2_pvalue"] < cfg.srm_threshold
            ),
            "experiments": share(
                lambda m: any(e["srm_chi2_pvalue"] < cfg.srm_threshold for e in seen[m])
            ),
            "note": "what the chi-square test alone would have flagged at the same looks",
        },
        "min_srm_pvalue": min(
            (e["srm_pvalue"] for m in names for e in seen[m] if e["srm_pvalue"] is not None),
            default=None,
        ),
        "analyse_seconds_per_look_of_all": [lk["analyse_all_seconds"] for lk in looks],
        "per_look": looks,
        "experiments_at_last_look": last,
    }


# --- 2. A real difference ---------------------------------------------------------------------


def demo_run(home: str) -> Path:
    """The newest pipeline run folder of the demo under HOME/runs."""
    runs = sorted(p for p in (Path(home) / "runs").glob("*") if (p / "feature-transform").is_dir())
    if not runs:
        sys.exit(f"no pipeline run with a feature-transform under {home}/runs")
    return runs[-1]


def version_ready(conn, version: str) -> bool:
    return bool(
        scalar(
            conn,
            "select count(*) = 2 from embedding_sets where model_version = %s and state = 'ready'",
            (version,),
        )
        and scalar(conn, "select count(*) from model_versions where model_version = %s", (version,))
    )


def make_weak_version(conn, url: str, home: str, steps: int, weak: str) -> dict:
    """`weak`: the repo's trainer on the demo run's transform output for one epoch of `steps`
    batches (the production model trains up to 15 epochs of a full pass, early-stopped); its
    embedding sets written by the pipeline step, its evaluation recorded and blessed."""
    from swiperec.data.load import ground_truth_path
    from swiperec.pipeline import steps as pipeline
    from swiperec.registry.versions import record_evaluation

    run = demo_run(home)
    transform = run / "feature-transform"
    snapshot = run / "ingest-snapshot" / "snapshot"
    out = Path(home) / "bench-experiments" / weak
    model, evaluation = out / "model", out / "evaluation"
    timings = {}
    started = time.perf_counter()
    trained = pipeline.train(
        str(transform / "transform_graph"),
        str(transform / "examples"),
        str(model),
        train_config={"epochs": 1, "steps_per_epoch": steps},
        verbose=0,
    )
    timings["train"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    evaluated = pipeline.evaluate(
        str(model),
        str(transform / "examples"),
        str(transform / "transform_graph"),
        str(snapshot),
        str(evaluation),
        ground_truth_uri=str(ground_truth_path()),
        database_url=url,
    )
    timings["evaluate"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    pipeline.write_embeddings(str(model), str(snapshot), model_version=weak, database_url=url)
    timings["write_embeddings"] = round(time.perf_counter() - started, 1)
    gate = evaluated["blessing"]
    record_evaluation(
        conn,
        weak,
        str(model),
        evaluated["results"],
        {
            **gate,
            "blessed": True,
            "gate_verdict": gate["blessed"],
            "reasons": [
                "bench_experiments: blessed by hand to take part in an A/B test",
                *gate.get("reasons", []),
            ],
        },
    )
    card = trained["card"]
    return {
        "how": f"swiperec.pipeline.steps.train on {transform} with epochs=1, "
        f"steps_per_epoch={steps} (batch {card['hyperparameters']['batch_size']})",
        "seconds": timings,
        "training": card["training"],
        "gate_verdict_blessed": gate["blessed"],
        "gate_reasons": gate.get("reasons"),
        "metrics": evaluated["metrics"],
    }


def model_quality(conn, version: str) -> dict:
    """The recorded evaluation's headline test numbers (AUC, recall@50) of `version`."""
    evaluation = scalar(
        conn, "select evaluation from model_versions where model_version = %s", (version,)
    )
    if not evaluation:
        return {}
    out = {}
    like = evaluation.get("classification", {}).get("model", {})
    for task, values in like.items():
        if isinstance(values, dict) and values.get("roc_auc") is not None:
            out[f"auc/{task}"] = values["roc_auc"]
    for name, value in evaluation.get("retrieval", {}).get("model", {}).items():
        if "@" in name and value is not None:
            out[name] = value
    return out


def history_users(conn) -> int:
    """Users with served items in the last 14 days (what CUPED's covariate needs)."""
    return int(
        scalar(
            conn,
            "select count(distinct user_id) from served_recommendations "
            "where created_at > now() - interval '14 days'",
        )
    )


def section_ab(conn, url, truth, serving: str, args, tag: str) -> dict:
    from swiperec.experiments import analysis, design

    weak, built = f"weak-{args.weak_steps}steps", None
    if not version_ready(conn, weak):
        log(f"ab: training the weaker model {weak} ({args.weak_steps} steps, one epoch)")
        built = make_weak_version(conn, url, os.environ["SWIPEREC_HOME"], args.weak_steps, weak)
        log(
            f"ab: {weak} ready: {built['seconds']}, "
            f"gate verdict blessed={built['gate_verdict_blessed']}"
        )
    warmup = None
    with_history = history_users(conn)
    if with_history < args.users // 2:
        log(
            f"ab: {with_history} users with served history: {args.ab_pre_minutes:g} min of "
            "traffic first, for CUPED's pre-experiment covariate"
        )
        pre = Traffic(url, truth, options(args, args.ab_pre_minutes, seed=21))
        pre.start()
        warmup = pre.finish()
        with_history = history_users(conn)
    cfg = config(min_users_per_arm=50, min_answered_per_arm=500, planned_users_per_arm=300)
    name = f"ab-{tag}"
    design.start(
        conn,
        name,
        control=serving,
        arms={"treatment": weak},
        shares={"treatment": 50},
        config=cfg,
        actor="bench_experiments",
    )
    log(f"ab: {name}: control {serving} vs treatment {weak}, traffic up to {args.ab_minutes:g} min")
    traffic = Traffic(url, truth, options(args, args.ab_minutes, seed=22))
    traffic.start()
    looks, decision = [], None
    next_look = time.monotonic() + args.ab_look_seconds
    while traffic.is_alive():
        traffic.join(timeout=max(0.0, next_look - time.monotonic()))
        if not traffic.is_alive():
            break
        next_look += args.ab_look_seconds
        at = time.monotonic() - traffic.started_at
        try:
            result = analysis.analyse(conn, name)
        except TypeError as error:  # an arm with one user
            conn.rollback()
            looks.append({"at_seconds": round(at, 1), "status": f"analyse raised: {error}"})
            continue
        primary = primary_of(result, "treatment")
        ready = result["comparisons"].get("treatment", {}).get("min_sample_reached", False)
        looks.append(
            {
                "at_seconds": round(at, 1),
                "users": result["users"],
                "answered": {a: t.get("answered", 0) for a, t in result["totals"].items()},
                "min_sample_reached": ready,
                **{
                    k: primary.get(k)
                    for k in ("status", "effect", "sequential_ci", "sequential_pvalue", "pvalue")
                },
            }
        )
        log(
            f"ab look at {at:.0f} s: users {result['users']}, effect {primary.get('effect')}, "
            f"always-valid p {primary.get('sequential_pvalue')}"
        )
        if primary.get("status") == "ok" and primary["significant"] and ready:
            decision = {"at_seconds": round(at, 1), "result": result}
            traffic.stop.set()
    report = traffic.finish()
    final = analysis.analyse(conn, name)
    design.stop(conn, name, reason="bench_experiments: A/B done", actor="bench_experiments")
    decided = decision["result"] if decision else final
    primary = primary_of(decided, "treatment")
    totals = decided["totals"]
    served = sum(t.get("served", 0) for t in totals.values())
    answered = sum(t.get("answered", 0) for t in totals.values())
    winner = None
    if primary.get("significant"):
        winner = "control (production)" if primary["effect"] < 0 else "treatment (weaker)"
    return {
        "what": "the production model (control) against a weaker model (treatment), 50/50 of "
        "all users, until the always-valid test of like_rate is significant with the minimum "
        "sample reached (looked at every ab_look_seconds) or the time is up",
        "weaker_model": {
            "version": weak,
            "kind": "trained: the repo's trainer, one short epoch (not a degraded copy)",
            "built_now": built,
            "test_metrics": model_quality(conn, weak),
        },
        "production_model": {"version": serving, "test_metrics": model_quality(conn, serving)},
        "config": json.loads(cfg.to_json()),
        "users_with_pre_experiment_history": with_history,
        "warmup_simulation": warmup,
        "simulation": report,
        "decided": decision is not None,
        "seconds_to_decision": decision["at_seconds"] if decision else None,
        "winner": winner,
        "production_won": winner == "control (production)",
        "at_decision": {
            "users": decided["users"],
            "totals": totals,
            "served_items": served,
            "answered_items_swipes": answered,
            "like_rate": {"control": primary.get("control"), "treatment": primary.get("treatment")},
            "effect_treatment_minus_control": primary.get("effect"),
            "relative_effect": primary.get("relative_effect"),
            "se": primary.get("se"),
            "fixed_horizon_ci": primary.get("ci"),
            "fixed_horizon_pvalue": primary.get("pvalue"),
            "confidence_sequence": primary.get("sequential_ci"),
            "always_valid_pvalue": primary.get("sequential_pvalue"),
            "cuped": primary.get("cuped"),
            "cuped_variance_reduction": primary.get("variance_reduction"),
            "srm_pvalue": decided["srm"]["pvalue"],
            "guardrails": {
                g["metric"]: {"verdict": g.get("verdict"), "effect": g.get("effect")}
                for g in decided["comparisons"].get("treatment", {}).get("guardrails", [])
            },
            "coverage": decided["comparisons"].get("treatment", {}).get("coverage"),
        },
        "final_after_traffic_stopped": {
            "users": final["users"],
            "primary": {
                k: primary_of(final, "treatment").get(k)
                for k in (
                    "effect",
                    "sequential_ci",
                    "sequential_pvalue",
                    "pvalue",
                    "variance_reduction",
                )
            },
        },
        "looks": looks,
    }


# --- 3. automatic rollback ---------------------------------------------------------------------


def make_broken_candidate(conn, serving: str) -> dict:
    """BROKEN (bench_alerts' helper: `serving` with its video vectors shuffled), then serving
    back on `serving` (the helper promotes BROKEN by force), and BROKEN recorded with
    `serving`'s evaluation and blessed: a broken embedding write behind a model that passed
    the gate."""
    from swiperec.registry.versions import promote, record_evaluation

    make_broken_version(conn, serving)
    promote(conn, serving, reason="bench_experiments: back from the broken version")
    with conn.cursor() as cur:
        cur.execute(
            "select model_uri, evaluation from model_versions where model_version = %s",
            (serving,),
        )
        uri, evaluation = cur.fetchone()
    conn.rollback()
    record_evaluation(
        conn,
        BROKEN,
        uri,
        evaluation or {},
        {
            "blessed": True,
            "reasons": [
                "bench_experiments: the production model's "
                "evaluation, its video vectors shuffled when written"
            ],
        },
    )
    return {
        "from": serving,
        "how": "tests.performance.bench_alerts.make_broken_version, then "
        "production promoted back and the broken version blessed by record_evaluation",
    }


def log_counts(conn) -> dict:
    with conn.cursor() as cur:
        cur.execute(
            "select now(), (select count(*) from served_recommendations), "
            "(select count(*) from serving_requests)"
        )
        at, served, requests = cur.fetchone()
    conn.rollback()
    return {"at": at, "served_recommendations": int(served), "serving_requests": int(requests)}


def section_rollback(conn, url, truth, serving: str, args, tag: str) -> dict:
    from swiperec.experiments import design, rollout

    made = None
    if not version_ready(conn, BROKEN):
        log(f"rollback: building {BROKEN} from {serving}")
        made = make_broken_candidate(conn, serving)
    stages = tuple(int(s) for s in args.stages.split(","))
    cfg = config(
        stages=stages,
        min_users_per_arm=20,
        min_answered_per_arm=200,
        planned_users_per_arm=100,
        coverage_margin=args.rollback_coverage_margin,
    )
    name = f"rollout-{BROKEN}-{tag}"
    before_start = log_counts(conn)
    experiment = design.start_rollout(
        conn, BROKEN, name=name, config=cfg, actor="bench_experiments"
    )
    started_at = experiment["started_at"]
    log(
        f"rollback: {name} on stages {stages}; tick every {args.tick_seconds:g} s, traffic up to "
        f"{args.rollback_minutes:g} min"
    )
    traffic = Traffic(url, truth, options(args, args.rollback_minutes, seed=31))
    traffic.start()
    ticks, rolled_back, before, stop_at, tick_errors = [], None, None, None, []
    next_tick = time.monotonic() + args.tick_seconds
    while traffic.is_alive():
        traffic.join(timeout=max(0.0, next_tick - time.monotonic()))
        if not traffic.is_alive():
            break
        next_tick += args.tick_seconds
        if stop_at is not None:
            if time.monotonic() >= stop_at:
                traffic.stop.set()
            continue
        counts = log_counts(conn)
        started = time.perf_counter()
        try:
            decisions = [d for d in rollout.tick(conn) if d["experiment"] == name]
        except TypeError as error:  # an arm with one user: see tick_errors
            conn.rollback()
            tick_errors.append(f"{time.monotonic() - traffic.started_at:.0f} s: {error}")
            log(f"rollback tick raised TypeError: {error}")
            continue
        seconds = time.perf_counter() - started
        at = time.monotonic() - traffic.started_at
        for d in decisions:
            ticks.append({"at_seconds": round(at, 1), "tick_seconds": round(seconds, 2), **d})
            log(
                f"rollback tick at {at:.0f} s: {d['action']} ({d['reason']}) stage {d.get('stage')}"
            )
            if d["action"] == "rollback":
                rolled_back, before = {"at_seconds": round(at, 1), **d}, counts
                stop_at = time.monotonic() + args.after_rollback_seconds
    report = traffic.finish()
    users = traffic.users()
    time.sleep(2)
    after = log_counts(conn)
    out = {
        "what": "a staged rollout of a broken version (video vectors shuffled) on all users; "
        "rollout.tick every tick_seconds decides alone",
        "candidate": BROKEN,
        "control": serving,
        "built_now": made,
        "config": json.loads(cfg.to_json()),
        "simulation": report,
        "ticks": ticks,
        "tick_errors": tick_errors,
        "rolled_back": rolled_back is not None,
    }
    exp = design.get(conn, name)
    if exp["state"] == "running":
        design.stop(conn, name, reason="bench_experiments: not rolled back in time")
    if rolled_back is None:
        out["note"] = "the controller did not roll back within the simulation"
        return out
    events = design.events(conn, name)
    event = next(e for e in events if e["event"] == "rolled_back")
    at = event["at"]
    with conn.cursor() as cur:
        cur.execute(
            "select count(*) filter (where route = %(c)s), count(*) "
            "filter (where route like %(p)s), count(*) from served_recommendations "
            "where created_at >= %(s)s and created_at <= %(t)s",
            {"c": f"{name}/candidate", "p": f"{name}/%", "s": started_at, "t": at},
        )
        candidate_items, rollout_items, all_items = cur.fetchone()
        cur.execute(
            "select count(distinct user_id) filter (where route = %(c)s), "
            "count(distinct user_id) from served_recommendations "
            "where created_at >= %(s)s and created_at <= %(t)s",
            {"c": f"{name}/candidate", "s": started_at, "t": at},
        )
        candidate_users, all_users = cur.fetchone()
        cur.execute(
            "select count(*) from served_recommendations where route like %s and created_at > %s",
            (f"{name}/%", at),
        )
        served_on_routes_after = cur.fetchone()[0]
        cur.execute(
            "select count(*), count(distinct user_id) from served_recommendations "
            "where created_at > %s",
            (at,),
        )
        after_items, after_users = cur.fetchone()
        cur.execute(
            "select u, public.serving_route_for(u::uuid) from unnest(%s::text[]) u", (users,)
        )
        routes = cur.fetchall()
        cur.execute("select model_version from serving_state")
        serving_now = cur.fetchone()[0]
        cur.execute("select stage from model_versions where model_version = %s", (BROKEN,))
        candidate_stage = cur.fetchone()[0]
        cur.execute(
            "select count(*) from served_recommendations where created_at <= %s", (before["at"],)
        )
        served_up_to_before = cur.fetchone()[0]
        cur.execute("select count(*) from serving_requests where created_at <= %s", (before["at"],))
        requests_up_to_before = cur.fetchone()[0]
    conn.rollback()
    not_default = [u for u, r in routes if r != "default"]
    out.update(
        rolled_back_at=at.isoformat(),
        seconds_after_start=round((at - started_at).total_seconds(), 1),
        reason=event["reason"],
        decided_by=event["decided_by"],
        stage_at_rollback=rolled_back.get("stage"),
        stage_share_percent=stages[rolled_back.get("stage") or 0],
        served_items_before_rollback={
            "candidate_arm": int(candidate_items),
            "rollout_routes_candidate_and_control": int(rollout_items),
            "overall": int(all_items),
        },
        users_served_before_rollback={
            "candidate_arm": int(candidate_users),
            "overall": int(all_users),
        },
        evidence=event["evidence"],
        after_rollback={
            "traffic_seconds": args.after_rollback_seconds,
            "served_items": int(after_items),
            "users_served": int(after_users),
            "served_items_on_the_rollouts_routes": int(served_on_routes_after),
        },
        users_checked=len(routes),
        users_not_on_default_route=len(not_default),
        every_user_on_control=not not_default and serving_now == serving,
        serving_state=serving_now,
        candidate_registry_stage=candidate_stage,
        logs={
            "at_rollout_start": {k: v for k, v in before_start.items() if k != "at"},
            "just_before_the_rollback_tick": {k: v for k, v in before.items() if k != "at"},
            "after": {k: v for k, v in after.items() if k != "at"},
            "rows_up_to_the_pre_rollback_count_counted_after": {
                "served_recommendations": int(served_up_to_before),
                "serving_requests": int(requests_up_to_before),
            },
            "nothing_lost": served_up_to_before >= before["served_recommendations"]
            and requests_up_to_before >= before["serving_requests"]
            and after["served_recommendations"] >= before["served_recommendations"]
            and after["serving_requests"] >= before["serving_requests"],
        },
    )
    return out


def make_copy_candidate(conn, url: str, home: str, serving: str, copy: str) -> dict:
    """`copy`: the production model's embeddings written again under another version (the
    pipeline's write step on the demo run's snapshot), with production's evaluation, blessed:
    a candidate exactly as good as production."""
    from swiperec.pipeline import steps as pipeline
    from swiperec.registry.versions import record_evaluation

    with conn.cursor() as cur:
        cur.execute(
            "select model_uri, evaluation from model_versions where model_version = %s",
            (serving,),
        )
        uri, evaluation = cur.fetchone()
    conn.rollback()
    snapshot = demo_run(home) / "ingest-snapshot" / "snapshot"
    started = time.perf_counter()
    pipeline.write_embeddings(uri, str(snapshot), model_version=copy, database_url=url)
    seconds = round(time.perf_counter() - started, 1)
    record_evaluation(
        conn,
        copy,
        uri,
        evaluation or {},
        {"blessed": True, "reasons": ["bench_experiments: production's model written again"]},
    )
    return {"model_uri": uri, "write_embeddings_seconds": seconds}


def section_healthy(conn, url, truth, serving: str, args, tag: str) -> dict:
    """The control of section 3: the same rollout of a candidate as good as production (its
    model's embeddings written again); the goal is no rollback. Serving is restored after."""
    from swiperec.experiments import design, rollout
    from swiperec.registry.versions import promote

    copy, built = "production-copy", None
    if not version_ready(conn, copy):
        log(f"healthy: writing {copy} from {serving}'s model")
        built = make_copy_candidate(conn, url, os.environ["SWIPEREC_HOME"], serving, copy)
    stages = tuple(int(s) for s in args.stages.split(","))
    cfg = config(
        stages=stages, min_users_per_arm=20, min_answered_per_arm=200, planned_users_per_arm=100
    )
    name = f"rollout-{copy}-{tag}"
    design.start_rollout(conn, copy, name=name, config=cfg, actor="bench_experiments")
    log(f"healthy: {name}; tick every {args.tick_seconds:g} s for {args.healthy_minutes:g} min")
    traffic = Traffic(url, truth, options(args, args.healthy_minutes, seed=51))
    traffic.start()
    ticks, errors = [], []
    next_tick = time.monotonic() + args.tick_seconds
    while traffic.is_alive():
        traffic.join(timeout=max(0.0, next_tick - time.monotonic()))
        if not traffic.is_alive():
            break
        next_tick += args.tick_seconds
        at = time.monotonic() - traffic.started_at
        try:
            decisions = [d for d in rollout.tick(conn) if d["experiment"] == name]
        except TypeError as error:
            conn.rollback()
            errors.append(f"{at:.0f} s: {error}")
            continue
        for d in decisions:
            ticks.append({"at_seconds": round(at, 1), **d})
            log(f"healthy tick at {at:.0f} s: {d['action']} ({d['reason']}) stage {d.get('stage')}")
        if design.get(conn, name)["state"] != "running":
            traffic.stop.set()
    report = traffic.finish()
    state = design.get(conn, name)["state"]
    if state == "running":
        design.stop(conn, name, reason="bench_experiments: healthy rollout time up")
    events = [
        {k: e[k] for k in ("event", "stage", "decided_by", "reason", "at")}
        for e in design.events(conn, name)
    ]
    serving_after = scalar(conn, "select model_version from serving_state")
    restored = None
    if serving_after != serving:
        promote(conn, serving, reason="bench_experiments: back to the demo's version")
        restored = serving
    return {
        "what": "the control of the rollback section: the same staged rollout of a candidate "
        "exactly as good as production (its model's embeddings written again under another "
        "version); the goal: no rollback",
        "candidate": copy,
        "built_now": built,
        "config": json.loads(cfg.to_json()),
        "simulation": report,
        "ticks": ticks,
        "tick_errors": errors,
        "events": events,
        "state_at_end": state,
        "rolled_back": state == "rolled_back",
        "serving_after": serving_after,
        "serving_restored_to": restored,
    }


# --- 4. sample ratio mismatch ------------------------------------------------------------------


def section_srm(conn, url, truth, serving: str, args, tag: str) -> dict:
    from swiperec.experiments import analysis, design

    cfg = config(min_users_per_arm=20, min_answered_per_arm=100, planned_users_per_arm=300)
    name = f"srm-{tag}"
    design.start(
        conn,
        name,
        control=serving,
        arms={"treatment": serving},
        shares={"treatment": 50},
        config=cfg,
        actor="bench_experiments",
    )
    log(f"srm: {name} (A/A on all users), traffic for {args.srm_minutes:g} min")
    traffic = Traffic(url, truth, options(args, args.srm_minutes, seed=41))
    traffic.start()
    report = traffic.finish()
    time.sleep(3)
    experiment = design.get(conn, name)
    at = datetime.now(UTC)
    before = analysis.analyse(conn, name, at=at)
    lost = {
        "route": f"{name}/treatment",
        "start": experiment["started_at"],
        "end": at,
        "share": LOST_SHARE,
        "salt": f"lost-logs-{tag}",
    }
    picked = (
        "user_id in (select distinct user_id from serving_requests where route = %(route)s "
        "and created_at >= %(start)s and created_at < %(end)s "
        "and abs(hashtext(user_id::text || %(salt)s)) %% 100 < %(share)s)"
    )
    with conn, conn.cursor() as cur:
        cur.execute(
            "select count(distinct user_id) from serving_requests where route = %(route)s "
            "and created_at >= %(start)s and created_at < %(end)s",
            lost,
        )
        treatment_users = cur.fetchone()[0]
        cur.execute(f"select count(distinct user_id) from serving_requests where {picked}", lost)
        lost_users = cur.fetchone()[0]
        cur.execute(
            f"delete from served_recommendations where route = %(route)s and created_at >= "
            f"%(start)s and created_at < %(end)s and {picked}",
            lost,
        )
        served_deleted = cur.rowcount
        cur.execute(
            f"delete from serving_requests where route = %(route)s and created_at >= %(start)s "
            f"and created_at < %(end)s and {picked}",
            lost,
        )
        requests_deleted = cur.rowcount
    after = analysis.analyse(conn, name, at=at)
    design.stop(conn, name, reason="bench_experiments: SRM done", actor="bench_experiments")

    def srm_of(result):
        return {"users": result["users"], **result["srm"]}

    log(
        f"srm: always-valid p before the loss {before['srm']['sequential_pvalue']:.3g}, after "
        f"{after['srm']['sequential_pvalue']:.3g} mismatch={after['srm']['mismatch']}"
    )
    return {
        "what": f"an A/A test (the production version in both arms, 50/50, all users); after "
        f"the traffic, the logs (serving_requests and served_recommendations rows in the "
        f"window) of {LOST_SHARE} % of the treatment arm's users are deleted, as a logger that "
        f"drops a share of one arm's users would lose them; the same window analysed before "
        f"and after",
        "injection": {
            "treatment_users": int(treatment_users),
            "users_whose_logs_were_lost": int(lost_users),
            "served_rows_deleted": int(served_deleted),
            "request_rows_deleted": int(requests_deleted),
            "chosen_by": f"abs(hashtext(user_id || salt)) % 100 < {LOST_SHARE}",
        },
        "config": json.loads(cfg.to_json()),
        "simulation": report,
        "srm_before_the_loss": srm_of(before),
        "srm_after_the_loss": srm_of(after),
        "detected": bool(after["srm"]["mismatch"]),
        "false_alarm_before": bool(before["srm"]["mismatch"]),
    }


# --- main --------------------------------------------------------------------------------------


def main(argv=None) -> int:
    from swiperec.data.load import ground_truth_path
    from swiperec.data.synthetic_truth import GroundTruth
    from swiperec.db import connect, database_url
    from swiperec.embeddings.store import serving_version

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--home",
        help="a SWIPEREC_HOME where `swiperec demo` ran (else the demo runs there first; "
        "default: a temporary one, deleted at the end)",
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    parser.add_argument("--rate", type=float, default=12.0, help="requests per second")
    parser.add_argument("--users", type=int, default=800, help="truth users taking part")
    parser.add_argument(
        "--new-users-per-minute",
        type=float,
        default=0,
        help="sign-ups during each simulation (default none: a new user alone in an arm of the "
        "'new' segment makes analyse() raise, see the report)",
    )
    parser.add_argument(
        "--session-requests",
        default="1,3",
        help="fewest,most requests of a session (short sessions spread the traffic over more "
        "users, which are the experiments' unit)",
    )
    parser.add_argument(
        "--aa-experiments", type=int, default=DEFAULT_AA_EXPERIMENTS, help="at once, per round"
    )
    parser.add_argument("--aa-rounds", type=int, default=DEFAULT_AA_ROUNDS)
    parser.add_argument("--aa-minutes", type=float, default=4)
    parser.add_argument("--aa-seed", type=int, default=DEFAULT_AA_SEED)
    parser.add_argument(
        "--aa-min-users", type=int, default=DEFAULT_AA_MIN_USERS, help="per arm, before a verdict"
    )
    parser.add_argument("--look-seconds", type=float, default=30)
    parser.add_argument("--ab-minutes", type=float, default=6)
    parser.add_argument("--ab-pre-minutes", type=float, default=1.5)
    parser.add_argument("--ab-look-seconds", type=float, default=15)
    parser.add_argument("--weak-steps", type=int, default=15, help="batches of the weaker model")
    parser.add_argument("--rollback-minutes", type=float, default=4)
    parser.add_argument("--stages", default="10,50,100")
    parser.add_argument("--tick-seconds", type=float, default=10)
    parser.add_argument(
        "--rollback-coverage-margin",
        type=float,
        default=DEFAULT_COVERAGE_MARGIN,
        help="the broken rollout's coverage margin (0.99: in effect only the guardrails decide)",
    )
    parser.add_argument("--after-rollback-seconds", type=float, default=20)
    parser.add_argument("--srm-minutes", type=float, default=3)
    parser.add_argument("--healthy-minutes", type=float, default=3)
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS) - set(EXTRA))
    if unknown:
        parser.error(f"unknown sections {unknown}: choose from {','.join(SECTIONS + EXTRA)}")

    temporary = None
    started = time.perf_counter()
    demo_seconds = None
    if args.home is None:
        temporary = tempfile.TemporaryDirectory(prefix="swiperec-experiments-")
        args.home = temporary.name
    if not (Path(args.home) / "synthetic" / "ground_truth.npz").exists():
        log(f"running `swiperec demo --simulate-seconds 0` in {args.home}")
        subprocess.run(
            [sys.executable, "-m", "swiperec.cli", "demo", "--simulate-seconds", "0"],
            check=True,
            env={**os.environ, "SWIPEREC_HOME": args.home},
        )
        demo_seconds = round(time.perf_counter() - started, 1)
    os.environ["SWIPEREC_HOME"] = args.home
    os.environ.pop("DATABASE_URL", None)
    url = database_url()
    conn = connect(url)
    serving = serving_version(conn)
    if serving is None:
        sys.exit(f"nothing serves in {args.home}: run `swiperec demo` there first")
    truth = GroundTruth.load(ground_truth_path())
    demo_users = len(truth.user_ids)
    if args.users > demo_users:
        args.users = demo_users
    left = end_running(conn, "bench_experiments: left running by an earlier run")
    if left:
        log(f"stopped experiments left running: {left}")

    figures = json.loads(OUT.read_text()) if OUT.exists() else {}
    figures["runs"] = figures.get("runs", {})
    run = {
        "started_at": datetime.now(UTC).isoformat(),
        "command": "python -m tests.performance.bench_experiments "
        + " ".join(argv or sys.argv[1:]),
        "machine_at_start": machine(),
        "demo_seconds": demo_seconds,
        "serving_version": serving,
        "demo_app_users": demo_users,
        "simulated_users": args.users,
        "rate_requests_per_second": args.rate,
        "time_compression": f"outcomes attributed within {ATTRIBUTION_SECONDS} s, sessions "
        f"split after {SESSION_GAP_SECONDS} s idle (simulated users swipe within a second)",
        "sections": only,
    }
    tag = datetime.now(UTC).strftime("%m%d%H%M%S")
    sections = {
        "aa": section_aa,
        "ab": section_ab,
        "rollback": section_rollback,
        "srm": section_srm,
        "healthy": section_healthy,
    }
    RESULTS.mkdir(exist_ok=True)
    try:
        for section in only:
            t0 = time.perf_counter()
            key = section  # a variant's figures go beside the default's
            aa_variant = (args.aa_rounds, args.aa_experiments, args.aa_min_users, args.aa_seed)
            defaults = (DEFAULT_AA_ROUNDS, DEFAULT_AA_EXPERIMENTS, DEFAULT_AA_MIN_USERS,
                        DEFAULT_AA_SEED)  # fmt: skip
            if section == "aa" and aa_variant != defaults:
                key = "aa_{}x{}_min{}_seed{}".format(*aa_variant)
            if section == "rollback" and args.rollback_coverage_margin != DEFAULT_COVERAGE_MARGIN:
                key = f"rollback_coverage_margin_{args.rollback_coverage_margin:g}"
            out = sections[section](conn, url, truth, serving, args, tag)
            out["seconds"] = round(time.perf_counter() - t0, 1)
            out["machine_after"] = machine()
            out["run"] = run
            figures[key] = out
            OUT.write_text(json.dumps(figures, indent=2, default=str))
            log(f"{key} done in {out['seconds']} s; saved {OUT}")
    finally:
        for traffic in Traffic.running:  # a failed section: its simulation and Deno stop too
            traffic.stop.set()
            traffic.join(timeout=60)
        run["seconds"] = round(time.perf_counter() - started, 1)
        run["machine_at_end"] = machine()
        figures["runs"] = {**figures.get("runs", {}), tag: run}
        OUT.write_text(json.dumps(figures, indent=2, default=str))
        conn.close()
    summary(figures, only)
    print(f"saved {OUT}")
    if temporary is not None:
        subprocess.run([sys.executable, "-m", "swiperec.cli", "db", "stop"], check=False)
        temporary.cleanup()
    return 0


def summary(figures: dict, only: list[str]) -> None:
    for key in [k for k in figures if k.startswith("aa")] if "aa" in only else []:
        a = figures[key]
        print(
            f"A/A ({key}): {a['experiments']} experiments, {a['looks']} looks, users per arm "
            f"{a['users_per_arm_at_last_look']}; significant at any look: always-valid "
            f"{a['significant_always_valid_at_any_look']['count']}, naive "
            f"{a['significant_naive_at_any_look']['count']} (last look "
            f"{a['significant_naive_at_last_look']['count']}); SRM alarms "
            f"{a['srm_alarms']['looks_with_alarm']}"
            + (
                f" (one-look chi-square at every look: "
                f"{a['srm_alarms_of_a_one_look_chi_square_test_at_every_look']['looks_with_alarm']})"
                if "srm_alarms_of_a_one_look_chi_square_test_at_every_look" in a
                else ""
            )
        )
    if "ab" in only and "ab" in figures:
        b = figures["ab"]
        d = b["at_decision"]
        print(
            f"A/B: decided={b['decided']} after {b['seconds_to_decision']} s, winner "
            f"{b['winner']}, effect {d['effect_treatment_minus_control']}, CS "
            f"{d['confidence_sequence']}, {d['answered_items_swipes']} swipes, users "
            f"{d['users']}, CUPED variance reduction {d['cuped_variance_reduction']}"
        )
    for key in [k for k in figures if k.startswith("rollback")] if "rollback" in only else []:
        r = figures[key]
        if r["rolled_back"]:
            print(
                f"rollback: after {r['seconds_after_start']} s, "
                f"{r['served_items_before_rollback']} served items ({r['reason']}); every "
                f"user on control: {r['every_user_on_control']}; nothing lost: "
                f"{r['logs']['nothing_lost']}"
            )
        else:
            print("rollback: not rolled back")
    if "healthy" in only and "healthy" in figures:
        h = figures["healthy"]
        print(f"healthy rollout: ended {h['state_at_end']}, rolled back: {h['rolled_back']}")
    if "srm" in only and "srm" in figures:
        s = figures["srm"]
        print(
            f"SRM: always-valid p before the loss "
            f"{s['srm_before_the_loss']['sequential_pvalue']:.3g}; after "
            f"{s['srm_after_the_loss']['sequential_pvalue']:.3g}, mismatch {s['detected']}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
