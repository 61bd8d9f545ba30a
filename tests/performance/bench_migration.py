"""Experiment: does the staged migration from pseudo-users to real users train better models than
fixed mixes, at several points of the app's life?

    python -m tests.performance.bench_migration                       # a temporary home
    python -m tests.performance.bench_migration --home H --work W     # keep both (resumable)
    python -m tests.performance.bench_migration --points 0.5,0.7,0.9 --window-days 45

The data: a synthetic timeline data set (`SyntheticConfig(...).with_timeline()`; --videos,
--users, --pseudo-users) loaded into the embedded PostgreSQL under --home: app users sign up few
at first and many later, reviews cover the whole span, reviewers' tastes and rating habits
differ from app users'. The app's life runs from the first real swipe to the last one; a point
T at fraction f of it (--points) trains on the snapshot with cutoff T and is judged on the real
users' swipes of the --window-days after T.

Four strategies, each a FeatureConfig mix, each trained as the pipeline does (snapshot with
cutoff T -> `steps.feature_transform` -> `steps.train`, TRAIN_CONFIG: a reduced model so the
run fits in about half an hour on 2 cores):

1. pseudo-only: `real_user_weight` 0 (real users' swipes still make their user features);
2. fixed mix: today's default (both weights 1, ratings 4 / 2);
3. real-only: `pseudo_user_weight` 0;
4. staged: `swiperec.migration.plan` applied as of each T. `PlanConfig.default()`'s stages
   (pseudo-user weight 1 -> 0.5 -> 0.25 -> 0; entry minimums times --entry-scale); stage 0
   reads ratings as today (4 / 2), a later stage as `calibrate(conn, until=T)` chose them (when
   it chose from data, else 4 / 2) at the point it was entered, and keeps them: a stage's mix
   changes only through a gated advance, as in a plan (`swiperec migration`). The stage starts
   at 0 and stays where the previous point left it unless (a) the next stage's entry condition
   holds on the plan's window before T (`entry_problems`) and (b) a candidate trained at the
   next stage's mix passes `gate_problems` against the current stage's model, both trained at
   T and compared by `compare_on_real_users` on their transform's own test split
   [test_start, T) (held out from both: training stops at the validation start). It may move
   on several stages at one point, one passed gate at a time. The staged model at T is the
   chosen stage's model.

Identical mixes at the same T are trained once (same snapshot, same config, same seeds: the
same model). All of a point's models are scored by one `compare_on_real_users` call on a
snapshot with cutoff T + window, from T on, against the fixed mix (AUC like vs nope, Recall@50,
bootstrap CIs of the differences); a second call against the staged model answers "is staged at
least as good as the best, within the bootstrap CI" (the best's CI lower bound <= 0).

Writes tests/performance/results/migration.json (--out: another file), after every point.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.performance.record import machine

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "migration.json"
# A reduced model (the product's default: hidden 512, bags 64, batch 1024, up to 15 epochs).
TRAIN_CONFIG = {"hidden_units": [256], "bag_dim": 32, "batch_size": 512, "epochs": 6, "patience": 2}
NAIVE = {"like_rating": 4, "nope_rating": 2}  # today's default ratings
FIXED = "fixed mix"
STAGED = "staged"
STRATEGIES = {  # name -> FeatureConfig overrides (the staged mix is decided per point)
    "pseudo-only": {"real_user_weight": 0.0},
    FIXED: {},
    "real-only": {"pseudo_user_weight": 0.0},
}
METRICS = ("auc_like_vs_nope", "recall@50")


def rank(value: float | None) -> float:
    """A figure for choosing the best (an undefined one, None, ranks last)."""
    return float("-inf") if value is None else value


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def with_ci(difference: float | None, ci: list[float] | None) -> str:
    """'+0.0012 [-0.0030, +0.0051]' (a dash for what is undefined)."""
    low, high = ci or (None, None)
    return f"{fmt(difference, '+.4f')} [{fmt(low, '+.4f')}, {fmt(high, '+.4f')}]"


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


# --- the data ------------------------------------------------------------------------------------


def load_data(conn, data_config) -> dict:
    """The timeline data set in the database (generated and loaded unless it is there already)."""
    from swiperec.data.load import generate_and_load, ground_truth_path

    marker = ground_truth_path().with_name("dataset.json")
    if marker.exists() and json.loads(marker.read_text()) == asdict(data_config):
        return {"loaded": False}
    started = time.perf_counter()
    counts = generate_and_load(conn, data_config, replace=True)
    return {"loaded": True, "rows": counts, "seconds": round(time.perf_counter() - started, 1)}


def app_life(conn) -> tuple[datetime, datetime]:
    """The first and the last real swipe."""
    with conn.cursor() as cur:
        cur.execute("select min(created_at), max(created_at) from user_video_decisions")
        first, last = cur.fetchone()
    conn.rollback()
    return first, last


def real_counts(conn, until: datetime, window_days: int | None = None) -> dict:
    """Real users who swiped and their swipes before `until` (within `window_days` of it)."""
    since = until - timedelta(days=window_days) if window_days else datetime(1970, 1, 1, tzinfo=UTC)
    with conn.cursor() as cur:
        cur.execute(
            "select count(distinct user_id), count(*) from user_video_decisions"
            " where created_at >= %s and created_at < %s",
            (since, until),
        )
        users, swipes = cur.fetchone()
    conn.rollback()
    return {"window_days": window_days, "real_users": int(users), "real_swipes": int(swipes)}


# --- models, each trained once per (cutoff, mix) -------------------------------------------------


class Models:
    """Snapshots and trained models under `work`, each made once (and reused by a later run
    with the same --work): `snapshot(cutoff)`, `model(cutoff, mix)`."""

    def __init__(self, work: Path, url: str):
        self.work, self.url = work, url
        self.timings: list[dict] = []  # one row per snapshot and per training actually run

    def snapshot(self, cutoff: datetime) -> str:
        from swiperec.pipeline.steps import ingest_snapshot

        path = self.work / f"snapshot-{cutoff:%Y%m%dT%H%M%S}"
        if not (path / "metadata.json").exists():
            started = time.perf_counter()
            ingest_snapshot(str(path), cutoff=cutoff.isoformat(), database_url=self.url)
            self.timings.append(
                {"snapshot": cutoff.isoformat(), "seconds": round(time.perf_counter() - started, 1)}
            )
        return str(path)

    def model(self, cutoff: datetime, mix: dict) -> dict:
        """{"dir", "test_start_us", "name", "feature_config"}: the model trained on the snapshot at
        `cutoff` with the FeatureConfig overrides `mix`."""
        from swiperec.features.config import FeatureConfig, datetime_to_us
        from swiperec.pipeline.steps import feature_transform, train

        config = FeatureConfig.from_dict(mix).to_dict()
        name = "model-{:%Y%m%dT%H%M%S}-pw{:g}-rw{:g}-r{}{}".format(
            cutoff,
            config["pseudo_user_weight"],
            config["real_user_weight"],
            config["like_rating"],
            config["nope_rating"],
        )
        folder = self.work / name
        if not (folder / "model" / "model_card.json").exists():
            snapshot = self.snapshot(cutoff)
            log(f"  training {name}")
            started = time.perf_counter()
            feature_transform(
                snapshot, str(folder / "transform"), str(folder / "examples"), feature_config=mix
            )
            transformed = time.perf_counter()
            train(
                str(folder / "transform"),
                str(folder / "examples"),
                str(folder / "model"),
                train_config=TRAIN_CONFIG,
                verbose=0,
            )
            self.timings.append(
                {
                    "model": name,
                    "transform_seconds": round(transformed - started, 1),
                    "train_seconds": round(time.perf_counter() - transformed, 1),
                }
            )
        meta = json.loads((folder / "examples" / "metadata.json").read_text())
        test_start = datetime.fromisoformat(meta["split_boundaries"]["test_start"])
        return {
            "dir": str(folder / "model"),
            "test_start_us": datetime_to_us(test_start),
            "name": name,
            "feature_config": mix,
        }


# --- the staged strategy -------------------------------------------------------------------------


def ratings_from(calibration: dict) -> dict:
    """The calibrated like / nope ratings when calibrate chose them from data, else today's."""
    if calibration["thresholds"]["source"] == "data":
        return {k: calibration["thresholds"][k] for k in ("like_rating", "nope_rating")}
    return dict(NAIVE)


def staged_mix(plan, stage: int, ratings: dict) -> dict:
    return {"pseudo_user_weight": float(plan.stages[stage].pseudo_user_weight), **ratings}


def stage_ratings(entered: dict[int, dict], stage: int) -> dict:
    """The ratings stage `stage` was entered with (stage 0: today's): a stage's mix changes
    only through a gated advance, never by a later calibration."""
    return entered.get(stage, NAIVE)


def move_stages(
    plan,
    stage: int,
    entry_counts: dict,
    ratings: dict,
    models: Models,
    cutoff: datetime,
    snapshot: str,
    entered: dict[int, dict],
) -> tuple[int, list[dict]]:
    """From `stage`, advance while the next stage's entry condition holds and its candidate
    (at the next stage's weight and today's calibrated `ratings`) passes the gate against the
    current stage's model; `entered` records the ratings each stage was entered with. Returns
    (stage, decisions)."""
    from swiperec.migration.plan import entry_problems, gate_problems
    from swiperec.migration.real_users import compare_on_real_users

    decisions = []
    while stage + 1 < len(plan.stages):
        target = plan.stages[stage + 1]
        decision = {"from": stage, "to": stage + 1, "entry_counts": entry_counts}
        decisions.append(decision)
        decision["entry_problems"] = entry_problems(target, entry_counts)
        if decision["entry_problems"]:
            decision["verdict"] = "refused: entry condition"
            break
        current = models.model(cutoff, staged_mix(plan, stage, stage_ratings(entered, stage)))
        candidate = models.model(cutoff, staged_mix(plan, stage + 1, ratings))
        if current["test_start_us"] != candidate["test_start_us"]:
            raise RuntimeError("the two transforms' test splits differ: not comparable")
        names = {"candidate": candidate["dir"], "current": current["dir"]}
        comparison = compare_on_real_users(
            snapshot, current["test_start_us"], names, reference="current"
        )
        decision["gate_comparison"] = comparison
        decision["gate_problems"] = gate_problems(target, comparison, "candidate", "current")
        if decision["gate_problems"]:
            decision["verdict"] = "refused: gate"
            break
        decision["verdict"] = "advanced"
        stage += 1
        entered[stage] = dict(ratings)
    return stage, decisions


# --- one point -----------------------------------------------------------------------------------


def run_point(conn, models: Models, plan, stage: int, cutoff: datetime, window_days: int,
              entered: dict[int, dict]) -> dict:  # fmt: skip
    """Everything about one point T: the data before it, the calibration, the staged decisions,
    the four strategies' models and their comparison on real users from T on."""
    from swiperec.features.config import datetime_to_us
    from swiperec.migration.calibrate import calibrate, render_text
    from swiperec.migration.real_users import compare_on_real_users

    started = time.perf_counter()
    calibration = calibrate(conn, until=cutoff)
    print(render_text(calibration), flush=True)
    ratings = ratings_from(calibration)
    entry_counts = real_counts(conn, cutoff, plan.window_days)
    snapshot = models.snapshot(cutoff)
    stage_before = stage
    stage, decisions = move_stages(
        plan, stage, entry_counts, ratings, models, cutoff, snapshot, entered
    )

    chosen = {name: models.model(cutoff, mix) for name, mix in STRATEGIES.items()}
    staged_ratings = stage_ratings(entered, stage)
    chosen[STAGED] = models.model(cutoff, staged_mix(plan, stage, staged_ratings))
    evaluation = models.snapshot(cutoff + timedelta(days=window_days))
    dirs = {name: model["dir"] for name, model in chosen.items()}
    comparison = compare_on_real_users(evaluation, datetime_to_us(cutoff), dirs, reference=FIXED)
    staged_check = check_staged(comparison, evaluation, cutoff, dirs)
    return {
        "T": cutoff.isoformat(),
        "evaluation_until": (cutoff + timedelta(days=window_days)).isoformat(),
        "before_T": real_counts(conn, cutoff),
        "calibration": calibration,
        "staged": {
            "ratings": staged_ratings,
            "calibrated_ratings_now": ratings,
            "stage_before": stage_before,
            "stage": stage,
            "pseudo_user_weight": plan.stages[stage].pseudo_user_weight,
            "decisions": decisions,
        },
        "models": {name: model["name"] for name, model in chosen.items()},
        "comparison": comparison,
        "winner": {
            m: max(comparison["models"], key=lambda n: rank(comparison["models"][n][m]))
            for m in METRICS
        },
        "staged_vs_best": staged_check,
        "seconds": round(time.perf_counter() - started, 1),
    }


def check_staged(comparison: dict, snapshot: str, cutoff: datetime, dirs: dict) -> dict:
    """Per metric: the best strategy, and whether staged is at least as good within the bootstrap
    CI (the CI of best - staged reaches 0), from a second comparison against the staged model."""
    from swiperec.features.config import datetime_to_us
    from swiperec.migration.real_users import compare_on_real_users

    scores = comparison["models"]
    best = {
        m: max((n for n in scores if n != STAGED), key=lambda n: rank(scores[n][m]))
        for m in METRICS
    }
    others = {best[m]: dirs[best[m]] for m in METRICS if dirs[best[m]] != dirs[STAGED]}
    versus = {}
    if others:
        versus = compare_on_real_users(
            snapshot, datetime_to_us(cutoff), {**others, STAGED: dirs[STAGED]}, reference=STAGED
        )["differences"]
    out = {}
    for m in METRICS:
        if best[m] not in versus:  # the same model as staged
            out[m] = {
                "best": best[m],
                "best_minus_staged": 0.0,
                "ci95": [0.0, 0.0],
                "ok": True,
                "note": "staged is the same model",
            }
            continue
        difference = versus[best[m]][m]
        out[m] = {
            "best": best[m],
            "best_minus_staged": difference["difference"],
            "ci95": difference["ci95"],
            "ok": difference["ci95"] is not None and difference["ci95"][0] <= 0,
            "strictly_ok": rank(difference["difference"]) <= 0,
        }
    return out


# --- output --------------------------------------------------------------------------------------


def print_point(point: dict) -> None:
    comparison, staged = point["comparison"], point["staged"]
    before = point["before_T"]
    print(
        f"\nT = {point['T'][:10]}: {before['real_users']} real users, {before['real_swipes']:,} "
        f"swipes before T; evaluated on {comparison['users']} users, {comparison['swipes']:,} "
        f"swipes until {point['evaluation_until'][:10]}"
    )
    print(
        f"  {'strategy':<12} {'AUC':>7} {'vs fixed [95% CI]':>26} {'R@50':>7} "
        f"{'vs fixed [95% CI]':>26}"
    )
    for name, scores in comparison["models"].items():
        cells = []
        for metric in METRICS:
            diff = comparison["differences"].get(name, {}).get(metric)
            text = "" if diff is None else with_ci(diff["difference"], diff["ci95"])
            cells.append(f"{fmt(scores[metric], '.4f'):>7} {text:>26}")
        print(f"  {name:<12} {cells[0]} {cells[1]}")
    for d in staged["decisions"]:
        why = "; ".join(d.get("gate_problems") or d["entry_problems"])
        gate = d.get("gate_comparison")
        if gate:
            c, s = gate["models"]["candidate"], gate["models"]["current"]
            why = (why + "; " if why else "") + (
                f"gate on {gate['users']} users: AUC {fmt(c['auc_like_vs_nope'], '.4f')} vs "
                f"{fmt(s['auc_like_vs_nope'], '.4f')}, R@50 {fmt(c['recall@50'], '.4f')} vs "
                f"{fmt(s['recall@50'], '.4f')}"
            )
        print(f"  staged {d['from']} -> {d['to']}: {d['verdict']} ({why})")
    print(
        f"  staged: stage {staged['stage']} (pseudo weight {staged['pseudo_user_weight']:g}, "
        f"ratings {staged['ratings']['like_rating']}/{staged['ratings']['nope_rating']}); "
        f"winner AUC {point['winner']['auc_like_vs_nope']}, R@50 {point['winner']['recall@50']}"
    )
    for metric, check in point["staged_vs_best"].items():
        print(
            f"  staged vs best by {metric} ({check['best']}): best - staged "
            f"{with_ci(check['best_minus_staged'], check['ci95'])} -> "
            f"{'ok' if check['ok'] else 'WORSE'}"
        )


def print_summary(points: list[dict]) -> None:
    print(f"\n{'T':<11} {'before T':>15} " + " ".join(f"{n:>18}" for n in (*STRATEGIES, STAGED))
          + "  stage  winner (AUC)   staged >= best (AUC, R@50)")  # fmt: skip
    for p in points:
        models = p["comparison"]["models"]
        cells = " ".join(
            f"{fmt(models[n][METRICS[0]], '.4f'):>8} {fmt(models[n][METRICS[1]], '.4f'):>9}"
            for n in (*STRATEGIES, STAGED)
        )
        before = f"{p['before_T']['real_users']}u/{p['before_T']['real_swipes'] // 1000}k"
        check = p["staged_vs_best"]
        verdict = ", ".join("yes" if check[m]["ok"] else "no" for m in METRICS)
        print(
            f"{p['T'][:10]:<11} {before:>15} {cells}  {p['staged']['stage']:>5}  "
            f"{p['winner']['auc_like_vs_nope']:<13} {verdict}"
        )
    print("(per strategy: AUC like vs nope, Recall@50, on real users' swipes after T)")


def save(figures: dict, models: Models, started: float, out: Path) -> None:
    figures["timings"] = {
        "total_seconds": round(time.perf_counter() - started, 1),
        "steps": models.timings,
    }
    figures["machine"] = machine()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1, default=str))


def main(argv=None) -> int:
    from swiperec.cli.common import ready_connection
    from swiperec.data.synthetic import SyntheticConfig
    from swiperec.db import database_url
    from swiperec.migration.plan import PlanConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", help="SWIPEREC_HOME (default: a temporary one)")
    parser.add_argument("--work", help="folder for snapshots and models (default: temporary)")
    parser.add_argument("--points", default="0.5,0.7,0.9", help="fractions of the app's life")
    parser.add_argument("--window-days", type=int, default=45, help="evaluation after each T")
    parser.add_argument("--videos", type=int, default=4000)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--pseudo-users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=OUT, help=f"results file (default {OUT})")
    parser.add_argument(
        "--entry-scale",
        type=float,
        default=1.0,
        help="factor on PlanConfig.default()'s entry minimums (real users, swipes)",
    )
    args = parser.parse_args(argv)
    fractions = [float(f) for f in args.points.split(",")]
    started = time.perf_counter()
    temporary = []
    for name in ("home", "work"):
        if getattr(args, name) is None:
            temporary.append(tempfile.TemporaryDirectory(prefix=f"swiperec-migration-{name}-"))
            setattr(args, name, temporary[-1].name)
    os.environ["SWIPEREC_HOME"] = args.home
    os.environ.pop("DATABASE_URL", None)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    data_config = SyntheticConfig(
        videos=args.videos, users=args.users, pseudo_users=args.pseudo_users, seed=args.seed
    ).with_timeline()
    conn = ready_connection()
    log(f"data: {data_config}")
    loading = load_data(conn, data_config)
    default = PlanConfig.default()
    stages = tuple(
        replace(
            s,
            min_real_users=round(s.min_real_users * args.entry_scale),
            min_real_swipes=round(s.min_real_swipes * args.entry_scale),
        )
        for s in default.stages
    )
    plan = PlanConfig(stages=stages)
    first, last = app_life(conn)
    models = Models(work, database_url())
    figures = {
        "what": "pseudo-only / fixed mix / real-only / staged migration on real users after T",
        "command": " ".join(["python -m tests.performance.bench_migration", *sys.argv[1:]]),
        "data": {
            **asdict(data_config),
            **loading,
            "app_life": [first.isoformat(), last.isoformat()],
        },
        "window_days": args.window_days,
        "train_config": TRAIN_CONFIG,
        "plan": plan.to_dict(),
        "entry_scale": args.entry_scale,
        "gate_comparison": "each candidate vs the current stage's model, both trained at T, on "
        "their transform's own test split [test_start, T)",
        "points": [],
    }
    stage, entered = 0, {}
    for fraction in fractions:
        cutoff = (first + (last - first) * fraction).astimezone(UTC).replace(microsecond=0)
        log(f"point {fraction:g}: T = {cutoff.isoformat()} (stage {stage} so far)")
        point = {
            "fraction": fraction,
            **run_point(conn, models, plan, stage, cutoff, args.window_days, entered),
        }
        stage = point["staged"]["stage"]
        figures["points"].append(point)
        print_point(point)
        save(figures, models, started, args.out)  # after every point: a failure keeps the rest
    print_summary(figures["points"])
    print(f"\nsaved {args.out} ({figures['timings']['total_seconds']:.0f} s)")
    conn.close()
    if temporary:  # the server of a temporary home stops before its folder goes
        from swiperec.db.embedded import EmbeddedServer

        EmbeddedServer(args.home).stop()
    for folder in temporary:
        folder.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
