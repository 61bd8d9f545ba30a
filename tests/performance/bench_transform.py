"""Benchmark: the feature transform (TFT on Beam) on the default data and at 200k / 10k.

    python -m tests.performance.bench_transform                    # 32,304 videos (default data)
    python -m tests.performance.bench_transform --scale large      # 200k videos, 10k users
    python -m tests.performance.bench_transform --workers 2        # Beam multi-processing
    python -m tests.performance.bench_transform --keep DIR         # outputs kept for bench_train

The snapshot is written straight from the generator (the snapshot step has its own figures in
synthetic_load.json), then `run_transform` runs on Beam's local runner. Reports wall time,
examples per second and peak RSS (this process and, with workers, its children). The baseline
in the same run is the bare work without Beam or TFT: building every user's examples in a
plain Python loop; the ratio says what the pipeline (grouping, TFT analysis and transform,
TFRecord writing) costs on top of it, and each of its two Beam pipelines (the examples built
and written for the second; the TFT graphs analysed and applied, the TFRecords written) is timed
against it too. Writes tests/performance/results/transform_<scale>.json.
`--keep DIR` leaves the data set's snapshot, ground truth and transform outputs in DIR as
`bench_train --work DIR` reads them, so the suite transforms the default data once.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.performance.record import add_out_argument, save

SCALES = {
    "default": {},
    "large": {
        "videos": 200_000,
        "users": 10_000,
        "pseudo_users": 20_000,
        "decisions_per_user": 300.0,
    },
}


def rss_mb(who) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def write_snapshot(dataset, folder: Path) -> None:
    from swiperec.features.events import tables_from_synthetic
    from swiperec.snapshot import write_tables

    names = ("videos", "decisions", "reviews")
    write_tables(folder, dict(zip(names, tables_from_synthetic(dataset), strict=True)))


def plain_python_examples(snapshot: Path, config) -> tuple[int, float]:
    """The baseline: every user's examples built in one loop, no Beam, no TFT."""
    from swiperec.features.events import load_snapshot
    from swiperec.features.examples import NegativeSampler, build_user_examples, split_boundaries

    start = time.perf_counter()
    catalogue, events, _ = load_snapshot(snapshot, config)
    boundaries = split_boundaries(events, config)
    sampler = NegativeSampler(catalogue, events, boundaries, config)
    count = 0
    for key, is_pseudo, rows in events.user_slices():
        count += len(
            build_user_examples(
                key,
                is_pseudo,
                events.video_id[rows],
                events.label[rows],
                events.time_us[rows],
                catalogue,
                sampler,
                boundaries,
                config,
            )
        )
    return count, time.perf_counter() - start


def keep_for_training(tmp: Path, keep: Path, data) -> None:
    """Move the run's data and outputs to `keep` in `bench_train.prepare`'s layout, unless it
    already holds this data set transformed (a repeat run leaves the first run's). data.json,
    which `prepare` checks, is written last: an interrupted move leaves a folder it redoes."""
    recorded = keep / "data.json"
    wanted = json.loads(json.dumps(data.__dict__, default=str))
    if recorded.exists():
        if json.loads(recorded.read_text()) == wanted:
            return
        raise SystemExit(f"{keep} holds another data set ({recorded}): use another folder")
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("snapshot", "transform", "ground_truth.npz", "examples"):
        if (keep / name).exists():  # what an interrupted earlier run left
            shutil.rmtree(keep / name) if (keep / name).is_dir() else (keep / name).unlink()
        shutil.move(tmp / name, keep / name)
    recorded.write_text(json.dumps(wanted))


def main(argv=None) -> int:
    from swiperec.data.synthetic import SyntheticConfig, generate
    from swiperec.features.config import FeatureConfig
    from swiperec.features.transform import run_transform

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--workers", type=int, default=1, help="Beam worker processes")
    parser.add_argument("--videos", type=int, help="instead of the scale's")
    parser.add_argument("--users", type=int, help="instead of the scale's")
    parser.add_argument("--pseudo-users", type=int, help="instead of the scale's")
    parser.add_argument(
        "--keep", type=Path, help="leave the data and outputs here for bench_train --work"
    )
    add_out_argument(parser, "transform_<scale or videos>.json")
    args = parser.parse_args(argv)

    sizes = {"videos": args.videos, "users": args.users, "pseudo_users": args.pseudo_users}
    data = SyntheticConfig(
        **{**SCALES[args.scale], **{k: v for k, v in sizes.items() if v is not None}}
    )
    config = FeatureConfig()
    beam_args = []
    if args.workers > 1:
        beam_args = [
            f"--direct_num_workers={args.workers}",
            "--direct_running_mode=multi_processing",
        ]
    with tempfile.TemporaryDirectory(prefix="swiperec-bench-") as tmp:
        snapshot = Path(tmp) / "snapshot"
        dataset = generate(data)
        if args.keep:
            dataset.ground_truth.save(Path(tmp) / "ground_truth.npz")
        write_snapshot(dataset, snapshot)
        del dataset
        baseline_examples, baseline_s = plain_python_examples(snapshot, config)
        start = time.perf_counter()
        result = run_transform(
            str(snapshot), f"{tmp}/transform", f"{tmp}/examples", config, beam_args
        )
        transform_s = time.perf_counter() - start
        if args.keep:
            keep_for_training(Path(tmp), args.keep, data)

    counts = result.metadata["counts"]
    stages = result.metadata["seconds_by_pipeline"]
    examples = sum(c["examples"] for c in counts.values())
    figures = {
        "scale": args.scale,
        "data": data.__dict__,
        "beam_workers": args.workers,
        "examples": examples,
        "counts": counts,
        "vocabulary_sizes": result.metadata["vocabulary_sizes"],
        "transform_seconds": round(transform_s, 1),
        "examples_per_second": round(examples / transform_s),
        "peak_rss_mb": round(rss_mb(resource.RUSAGE_SELF)),
        "peak_rss_mb_children": round(rss_mb(resource.RUSAGE_CHILDREN)),
        "baseline_plain_python_examples": baseline_examples,
        "baseline_plain_python_seconds": round(baseline_s, 1),
        "pipeline_vs_baseline": round(transform_s / baseline_s, 2),
        # the two Beam pipelines apart: the examples built and written for the second, then the
        # TFT graphs analysed and applied and the TFRecords written
        "examples_pipeline_seconds": stages["examples"],
        "tft_pipeline_seconds": stages["tft"],
        "examples_pipeline_vs_baseline": round(stages["examples"] / baseline_s, 2),
        "tft_pipeline_vs_baseline": round(stages["tft"] / baseline_s, 2),
    }
    workers = "" if args.workers == 1 else f"_w{args.workers}"
    name = args.scale if data == SyntheticConfig(**SCALES[args.scale]) else str(data.videos)
    path = save(figures, args.out, f"transform_{name}{workers}.json")
    print(
        f"feature transform, {args.scale} data ({data.videos:,} videos, {data.users:,} users, "
        f"{data.pseudo_users:,} pseudo-users), {args.workers} Beam worker(s)"
    )
    print(f"  examples                      {examples:>12,}")
    print(
        f"  transform (Beam + TFT)        {transform_s:>10.1f} s   "
        f"{figures['examples_per_second']:,} examples/s"
    )
    print(
        f"  baseline: plain Python build  {baseline_s:>10.1f} s   "
        f"pipeline costs {figures['pipeline_vs_baseline']:.1f}x the bare build"
    )
    print(
        f"    examples pipeline           {stages['examples']:>10.1f} s   "
        f"{figures['examples_pipeline_vs_baseline']:.1f}x the bare build"
    )
    print(
        f"    TFT pipeline                {stages['tft']:>10.1f} s   "
        f"{figures['tft_pipeline_vs_baseline']:.1f}x the bare build"
    )
    print(
        f"  peak RSS                      {figures['peak_rss_mb']:>10,} MB "
        f"(+ {figures['peak_rss_mb_children']:,} MB in child processes)"
    )
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
