"""Benchmark: the Beam steps with 1, 2 and 4 SDK worker processes (the cluster rehearsal).

    python -m tests.performance.bench_workers --model DIR                  # the default data
    python -m tests.performance.bench_workers --model DIR --scale large    # 200k videos, 10k users
    python -m tests.performance.bench_workers --workers 1,2 --videos 2000 --users 200 \\
        --pseudo-users 400                                                 # no --model: no refresh

The feature transform and the embedding refresh run on PortableRunner against this machine's
job service and worker pool (`swiperec.beam_local_cluster`: the Fn API path Flink and Dataflow
take), with N SDK worker processes each. The baseline in the same run: the same step on Beam's
in-process runner (one worker, what `swiperec transform` and `swiperec embeddings write` use
by default). Per N: seconds, the speed-up over one worker, the ratio to the in-process run, the
driver's and the workers' peak RSS (sampled every 0.2 s; each run's driver is a fresh
process), and for the transform its two job
graphs' size (`job_graph_bytes`, the same for every N). On two cores expect the curve to
flatten from two workers. The refresh needs a trained model (`--model`; any: its towers embed
any catalogue); without one only the transform runs. `--steps refresh` (or `transform`) runs
one step and keeps the other's figures from the results file already there, each step with
the machine and calibration of its own run. A worker count whose run fails (a worker killed
when memory runs out, say) is recorded with its error, and the next count runs. Writes
tests/performance/results/workers_<scale>.json.

    python -m tests.performance.bench_workers --model DIR --scale large --steps refresh
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import pickle
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from queue import Empty

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.performance.bench_transform import SCALES, write_snapshot
from tests.performance.record import RESULTS, add_out_argument, machine, save


class PeakRss:
    """The peak RSS (MB) of this process and, separately, of all its descendants together
    (the job service, the worker pool and its workers), sampled while in the block."""

    def __init__(self, every: float = 0.2):
        self.every, self.driver_mb, self.workers_mb = every, 0.0, 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.every):
            try:
                children = me.children(recursive=True)
                workers = sum(c.memory_info().rss for c in children if c.is_running())
            except psutil.Error:
                continue  # a worker ended between the listing and the reading
            self.driver_mb = max(self.driver_mb, me.memory_info().rss / 2**20)
            self.workers_mb = max(self.workers_mb, workers / 2**20)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def figures(self) -> dict:
        return {"driver_peak_rss_mb": round(self.driver_mb), "workers_peak_rss_mb":
                round(self.workers_mb)}  # fmt: skip


def isolated(step, *args, workers: int = 0) -> dict:
    """`step(*args, pipeline_args)` in a fresh process (spawned: nothing inherited), as its
    driver; with `workers`, on a local portable cluster of that many SDK workers started in it.
    Its figures plus the driver's and the workers' peak RSS."""
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    process = spawn.Process(target=_run_as_driver, args=(queue, step, args, workers))
    process.start()
    while True:
        try:
            outcome = queue.get(timeout=5)
            break
        except Empty:
            if process.is_alive():
                continue
            try:  # it may have put its outcome just before it ended
                outcome = queue.get(timeout=5)
                break
            except Empty:
                raise RuntimeError(
                    f"the driver process ended without a result (exit code {process.exitcode}: "
                    "a negative code is the signal that killed it, e.g. -9 when out of memory)"
                ) from None
    process.join()
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def recorded(step, *args, workers: int) -> dict:
    """`isolated(step, *args, workers=workers)`, or `{"failed": why}` when the run fails (a
    worker killed for memory, say): one worker count's failure is a figure too, and the counts
    measured before it are kept. The in-process baseline is not run through this: without it
    there is nothing to compare."""
    try:
        return isolated(step, *args, workers=workers)
    except Exception as error:
        return {"failed": f"{type(error).__name__}: {str(error)[-2000:]}"}


def _run_as_driver(queue, step, args, workers: int) -> None:
    from swiperec.beam_local_cluster import local_portable_cluster

    try:
        with contextlib.ExitStack() as stack:
            pipeline_args = []
            if workers:
                pipeline_args = stack.enter_context(local_portable_cluster(workers=workers))
            with PeakRss() as rss:
                figures = step(*args, pipeline_args)
        queue.put({**figures, **rss.figures()})
    except BaseException as error:  # the parent re-raises it
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:  # e.g. a gRPC error: the queue's feeder thread would drop it
            error = RuntimeError("".join(traceback.format_exception(error)))
        queue.put(error)


def transform_step(snapshot: Path, out: Path, pipeline_args: list[str]) -> dict:
    from swiperec.features.config import FeatureConfig
    from swiperec.features.transform import run_transform

    start = time.perf_counter()
    result = run_transform(str(snapshot), str(out / "transform"), str(out / "examples"),
                           FeatureConfig(), pipeline_args)  # fmt: skip
    seconds = time.perf_counter() - start
    examples = sum(c["examples"] for c in result.metadata["counts"].values())
    return {"seconds": round(seconds, 1), "examples": examples}


def refresh_step(model: str, version: str, snapshot: Path, url: str, pipeline_args) -> dict:
    from swiperec.embeddings.writer import write_embeddings

    result = write_embeddings(model, version, str(snapshot), database_url=url,
                              pipeline_args=pipeline_args)  # fmt: skip
    beam_seconds = result.seconds["embed_videos"] + result.seconds["embed_users"]
    return {"seconds": result.seconds["total"], "beam_seconds": beam_seconds, "rows": result.rows}


def with_ratios(runs: dict, baseline: dict, key: str = "seconds") -> dict:
    one = runs.get("1", {}).get(key)
    for run in runs.values():
        if "failed" in run:
            continue
        run["vs_in_process"] = round(run[key] / baseline[key], 2)
        if one:
            run["speedup_over_1_worker"] = round(one / run[key], 2)
    return runs


def _write_snapshot(data, snapshot: Path) -> None:
    from swiperec.data.synthetic import generate

    write_snapshot(generate(data), snapshot)


def main(argv=None) -> int:
    from swiperec.data.synthetic import SyntheticConfig
    from swiperec.features.transform import job_graph_bytes

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--videos", type=int, help="instead of the scale's")
    parser.add_argument("--users", type=int, help="instead of the scale's")
    parser.add_argument("--pseudo-users", type=int, help="instead of the scale's")
    parser.add_argument("--model", help="a trained model folder: also the refresh")
    parser.add_argument(
        "--steps", default="transform,refresh", help="comma-separated: transform, refresh"
    )
    add_out_argument(parser, "workers_<scale or videos>.json")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    steps = set(args.steps.split(","))
    if not steps or steps - {"transform", "refresh"}:
        parser.error(f"--steps: transform and/or refresh, got {args.steps!r}")
    if steps == {"refresh"} and not args.model:
        parser.error("--steps refresh needs --model")

    sizes = {"videos": args.videos, "users": args.users, "pseudo_users": args.pseudo_users}
    data = SyntheticConfig(
        **{**SCALES[args.scale], **{k: v for k, v in sizes.items() if v is not None}}
    )
    figures: dict = {"scale": args.scale, "data": data.__dict__, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="swiperec-bench-") as tmp:
        snapshot = Path(tmp) / "snapshot"
        # In another process, so the driver's RSS below is the steps' alone.
        spawn = multiprocessing.get_context("spawn")
        writer = spawn.Process(target=_write_snapshot, args=(data, snapshot))
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            raise RuntimeError(f"writing the snapshot failed (exit code {writer.exitcode})")
        figures["job_graph_bytes"] = job_graph_bytes(str(snapshot))
        print(f"job graphs: {figures['job_graph_bytes']}", flush=True)

        if "transform" in steps:
            baseline = isolated(transform_step, snapshot, Path(tmp) / "in-process")
            print(f"transform in-process: {baseline}", flush=True)
            runs = {}
            for n in counts:
                runs[str(n)] = recorded(transform_step, snapshot, Path(tmp) / f"w{n}", workers=n)
                print(f"transform, {n} worker(s): {runs[str(n)]}", flush=True)
            figures["transform"] = {
                "in_process": baseline,
                "workers": with_ratios(runs, baseline),
                "machine": machine(),
            }
        if args.model and "refresh" in steps:
            figures["refresh"] = refresh_figures(args.model, snapshot, Path(tmp), counts)
            figures["refresh"]["machine"] = machine()

    name = args.scale if data == SyntheticConfig(**SCALES[args.scale]) else str(data.videos)
    default = f"workers_{name}.json"
    earlier = Path(args.out) if args.out else RESULTS / default
    if earlier.exists():  # keep the steps not run now, with their own machine records
        kept = json.loads(earlier.read_text())
        if kept.get("data") == json.loads(json.dumps(figures["data"], default=str)):
            for step in {"transform", "refresh"} - steps:
                if step in kept:
                    figures[step] = kept[step]
    path = save(figures, args.out, default)
    print_table(figures)
    print(f"saved {path}")
    return 0


def refresh_figures(model: str, snapshot: Path, tmp: Path, counts: list[int]) -> dict:
    from swiperec.db import connect
    from swiperec.db.connection import write_password_file
    from swiperec.db.embedded import EmbeddedServer
    from swiperec.db.migrate import migrate

    server = EmbeddedServer(tmp / "home")
    url = server.start().url
    # The job carries no password: the workers, which inherit this environment, read it from
    # a password file, as a task manager reads a mounted secret.
    write_password_file(url, tmp / "pgpass")
    os.environ["PGPASSFILE"] = str(tmp / "pgpass")
    try:
        conn = connect(url)
        migrate(conn, local_bootstrap=True)
        conn.close()
        baseline = isolated(refresh_step, model, "in-process", snapshot, url)
        print(f"refresh in-process: {baseline}", flush=True)
        runs = {}
        for n in counts:
            runs[str(n)] = recorded(refresh_step, model, f"workers-{n}", snapshot, url, workers=n)
            print(f"refresh, {n} worker(s): {runs[str(n)]}", flush=True)
        return {"in_process": baseline, "workers": with_ratios(runs, baseline, "beam_seconds")}
    finally:
        server.stop()


def print_table(figures: dict) -> None:
    data = figures["data"]
    print(f"\n{data['videos']:,} videos, {data['users']:,} users, {figures['cpu_count']} cpus; "
          f"job graphs {figures['job_graph_bytes']} bytes")  # fmt: skip
    for step, key in (("transform", "seconds"), ("refresh", "beam_seconds")):
        if step not in figures:
            continue
        base = figures[step]["in_process"]
        print(f"  {step} ({key}): in-process {base[key]} s, driver {base['driver_peak_rss_mb']} MB")
        for n, run in figures[step]["workers"].items():
            if "failed" in run:
                print(f"    {n} worker(s): failed: {run['failed'].splitlines()[-1][:200]}")
                continue
            speedup = run.get("speedup_over_1_worker", "-")
            print(f"    {n} worker(s): {run[key]:>8} s  {speedup}x over 1 worker, "
                  f"{run['vs_in_process']}x in-process; driver {run['driver_peak_rss_mb']} MB, "
                  f"workers {run['workers_peak_rss_mb']} MB")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
