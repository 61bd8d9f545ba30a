"""Benchmark: the whole training pipeline on today's catalogue (32,304 videos), per step.

    python -m tests.performance.bench_pipeline              # the default synthetic data set
    python -m tests.performance.bench_pipeline --videos 5000 --users 500 --pseudo-users 1000

Loads the data set into a fresh embedded PostgreSQL, then runs the committed pipeline YAML with
KFP's local runner (`swiperec.pipeline.run.run_local`, as `swiperec demo --full` does) and
reports, per step, the wall time and peak RSS each step recorded about itself (the registry's
lineage holds them; `register`, which writes no artifact, by its execution's span from its
start to the end of its promotion, without its RSS), and the run's wall time.

Baseline in the same run: the steps' own time summed, against the run's wall time; the
difference is what the local runner costs (a subprocess per step, artifact bookkeeping).
Writes tests/performance/results/pipeline_default.json (or pipeline_<videos>.json); the
committed figures are the performance suite's (results/suite/<scale>.json), which runs this.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from tests.performance.record import add_out_argument, save

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    from swiperec.data.load import load_synthetic
    from swiperec.data.synthetic import SyntheticConfig, generate
    from swiperec.db import connect
    from swiperec.db.embedded import EmbeddedServer
    from swiperec.db.migrate import migrate
    from swiperec.pipeline.run import run_local
    from swiperec.registry.lineage import lineage, show_version

    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=defaults.videos)
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--pseudo-users", type=int, default=defaults.pseudo_users)
    parser.add_argument("--epochs", type=int, default=15)
    add_out_argument(parser, "pipeline_default.json")
    args = parser.parse_args(argv)
    config = SyntheticConfig(videos=args.videos, users=args.users, pseudo_users=args.pseudo_users)

    with tempfile.TemporaryDirectory(prefix="swiperec-bench-") as tmp:
        server = EmbeddedServer(Path(tmp) / "home")
        url = server.start().url
        try:
            conn = connect(url)
            migrate(conn, local_bootstrap=True)
            conn.close()
            conn = connect(url)
            start = time.perf_counter()
            dataset = generate(config)
            ground_truth = Path(tmp) / "ground_truth.npz"
            dataset.ground_truth.save(ground_truth)
            load_synthetic(conn, dataset, replace=True)
            del dataset
            load_s = time.perf_counter() - start

            arguments = {"database_url": url, "epochs": args.epochs,
                         "ground_truth_uri": str(ground_truth)}  # fmt: skip
            run = run_local(arguments, Path(tmp) / "runs", echo=sys.stdout)
            found = lineage(conn, run.model_version)
            summary = show_version(conn, run.model_version)
            conn.close()
        finally:
            server.stop()

    steps = {}
    for execution in found["executions"]:
        outputs = [found["artifacts"][i]["metadata"] for i in execution["outputs"]]
        record = outputs[0] if outputs else {}
        seconds = record.get("step/seconds")
        if seconds is None and execution["started_at"] and execution["finished_at"]:
            # register writes no artifact: its time is its execution's span
            span = execution["finished_at"] - execution["started_at"]
            seconds = round(span.total_seconds(), 2)
        steps[execution["step"]] = {
            "seconds": seconds,
            "peak_rss_mb": record.get("step/peak_rss_mb"),
        }
    timed = [s["seconds"] for s in steps.values() if s["seconds"] is not None]
    figures = {
        "data": {
            "videos": args.videos,
            "users": args.users,
            "pseudo_users": args.pseudo_users,
            "load_seconds": round(load_s, 1),
        },
        "model_version": run.model_version,
        "run_seconds": run.seconds,
        "steps": steps,
        "steps_seconds_sum": round(sum(timed), 1),
        "runner_overhead_seconds": round(run.seconds - sum(timed), 1),
        "runner_overhead_ratio": round(run.seconds / sum(timed), 3),
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "evaluation": summary["evaluation"],
        "blessed": (summary["blessing"] or {}).get("blessed"),
        "stage": summary["stage"],
    }
    name = "default" if args.videos == defaults.videos else str(args.videos)
    path = save(figures, args.out, f"pipeline_{name}.json")

    print(f"training pipeline (KFP local runner), {args.videos:,} videos, 2 cores")
    print(f"  data generated and loaded   {load_s:8.1f} s")
    print(f"  {'step':<22} {'seconds':>9} {'peak RSS MB':>12}")
    for step, s in steps.items():
        seconds = "-" if s["seconds"] is None else f"{s['seconds']:.1f}"
        rss = "-" if s["peak_rss_mb"] is None else f"{s['peak_rss_mb']:,}"
        print(f"  {step:<22} {seconds:>9} {rss:>12}")
    overhead, ratio = figures["runner_overhead_seconds"], figures["runner_overhead_ratio"]
    print(f"  whole run                   {run.seconds:8.1f} s; steps' own time "
          f"{figures['steps_seconds_sum']} s, runner overhead {overhead} s (x{ratio})")  # fmt: skip
    evaluation = summary["evaluation"] or {}
    print(f"  model AUC {evaluation.get('auc')}, popularity {evaluation.get('popularity_auc')}, "
          f"oracle {evaluation.get('oracle_auc')}; stage {summary['stage']}")  # fmt: skip
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
