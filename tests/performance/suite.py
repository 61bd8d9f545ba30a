"""The performance suite: every benchmark at one scale, one results file, one HTML summary.

    python -m tests.performance.suite                       # small: a few minutes
    python -m tests.performance.suite --scale default --repeats 3
    python -m tests.performance.suite --scale small --check # exit 1 on a regression
    make bench SCALE=large

Each step is one of the benchmark scripts beside this file, run as its own process (a fresh
interpreter, TensorFlow and embedded PostgreSQL each; the previous step's memory is gone) with
the scale's sizes and `--out` into the run's work folder:

    load -> transform -> train -> refresh -> serving -> realtime -> monitoring -> pipeline

`train` trains the model that `refresh`, `serving` and `realtime` embed with (at `large` and
`xl`, on the `default` data: a model embeds any catalogue at the real cost; `--steps` without
`train` embeds with the model an earlier run left in `--work`). Every figure the
suite keeps (`FIGURES`) comes with the baseline its script measured in the same run and their
ratio, and the target the project sets for it (at the catalogue size it is set for). With
`--repeats N` each step runs N times; the summary keeps every value and their min and median.

Results: `results/suite/<scale>.json` (the machine and its calibration at start and end, the
figures, and each step's own results file, whole) and `results/suite/<scale>.html` (the
figures beside the committed run of the same scale, and cost-vs-scale curves over every scale
with results); the steps' output goes to `results/suite/<scale>.log`. A run that failed, lacks
a figure or ran only some `--steps` writes `<scale>.partial.json` instead, so it never
replaces the committed results.

The regression check compares this run with the committed results of the same scale
(`--against FILE` for another), each figure twice: its ratio to its same-run baseline, and its
value (a time or a rate must be worse both as measured and once scaled by the two runs'
calibrations, each the median of its run's readings: a one-second reading says which way the
machine's speed moved, not by how much for every figure; memory as it is; a share such as a
recall by its miss rate). A figure worse than the committed one by more than the noise band in
either is flagged; the band is the larger of
`--band` (default 0.25: 25 %) and the spread (max / min - 1) of either run's repeats. A figure
at the edge of the machine's capacity (the real-time latency at 200 swipes/s) is compared but
never flagged. `--check` exits 1 on a flagged figure, a missing figure or a failed step; any
run exits 2 while another suite run holds this checkout's lock.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.performance.record import machine

ROOT = Path(__file__).resolve().parents[2]
SUITE = Path(__file__).parent / "results" / "suite"
STEPS = ("load", "transform", "train", "refresh", "serving", "realtime", "monitoring", "pipeline")


@dataclass(frozen=True)
class Scale:
    videos: int
    users: int
    pseudo_users: int
    train_videos: int  # the data the model is trained on (refresh and serving embed `videos`)
    train_users: int
    train_pseudo_users: int
    epochs: int | None  # None: the trainer's own (15, with early stopping)
    served_rows: int  # the monitoring pass's served rows
    serving_rounds: int
    http_seconds: int  # each load run over HTTP
    naive_sample: int  # the refresh baseline's upsert sample
    realtime_time_scale: float = 1.0  # bench_realtime's load phases (60 s a rate at 1.0)
    # the database's maintenance_work_mem for the HNSW builds ("": the embedded default, 2GB):
    # 1M videos' graph takes ~3.8 GB in memory (else pgvector builds it on disk, several times
    # slower); 6GB leaves headroom
    maintenance_work_mem: str = ""
    steps: tuple[str, ...] = STEPS


_DEFAULT_DATA = {"train_videos": 32_304, "train_users": 2_000, "train_pseudo_users": 5_000}
SCALES = {
    "small": Scale(
        videos=2_000, users=200, pseudo_users=400,
        train_videos=2_000, train_users=200, train_pseudo_users=400, epochs=2,
        served_rows=200_000, serving_rounds=2, http_seconds=5, naive_sample=200,
        realtime_time_scale=0.5,
    ),
    "default": Scale(
        videos=32_304, users=2_000, pseudo_users=5_000, **_DEFAULT_DATA, epochs=None,
        served_rows=1_000_000, serving_rounds=5, http_seconds=20, naive_sample=2_000,
        realtime_time_scale=0.5,
    ),
    # The pipeline's target is the default catalogue's; at 200k and 1M videos the model is the
    # default data's (it embeds any catalogue), and the pipeline does not run again.
    "large": Scale(
        videos=200_000, users=10_000, pseudo_users=20_000, **_DEFAULT_DATA, epochs=None,
        served_rows=10_000_000, serving_rounds=5, http_seconds=20, naive_sample=2_000,
        steps=STEPS[:-1],
    ),
    "xl": Scale(
        videos=1_000_000, users=10_000, pseudo_users=20_000, **_DEFAULT_DATA, epochs=None,
        served_rows=10_000_000, serving_rounds=5, http_seconds=20, naive_sample=2_000,
        maintenance_work_mem="6GB", steps=("train", "refresh", "serving"),
    ),
}  # fmt: skip


def step_command(step: str, scale: Scale, work: Path, out: Path) -> list[str]:
    """The benchmark script and its arguments for `step` at `scale`."""
    sizes = ["--videos", scale.videos, "--users", scale.users, "--pseudo-users", scale.pseudo_users]
    train_sizes = ["--videos", scale.train_videos, "--users", scale.train_users,
                   "--pseudo-users", scale.train_pseudo_users]  # fmt: skip
    epochs = ["--epochs", scale.epochs] if scale.epochs else []
    model = ["--model", work / "train" / "model"]
    memory = scale.maintenance_work_mem
    hnsw = ["--maintenance-work-mem", memory] if memory else []
    args = {
        "load": ("bench_synthetic_load", sizes),
        # the training data when it is the same: the train step reuses this transform
        "transform": ("bench_transform", [*sizes, *(["--keep", work / "train"]
                                                    if sizes[1::2] == train_sizes[1::2] else [])]),
        "train": ("bench_train", ["--work", work / "train", *train_sizes, *epochs]),
        "refresh": ("bench_embeddings", [*model, *hnsw, "--videos", scale.videos, "--users",
                                         scale.users, "--naive-sample", scale.naive_sample]),
        "serving": ("bench_serving", [*model, *hnsw, "--videos", scale.videos, "--users",
                                      min(scale.users, 1_000), "--rounds",
                                      scale.serving_rounds, "--http-seconds",
                                      scale.http_seconds]),
        # at least 1,000 users: at 200 swipes/s a few hundred have a swipe in flight
        "realtime": ("bench_realtime", [*model, "--videos", scale.videos, "--users",
                                        max(scale.users, 1_000), "--time-scale",
                                        scale.realtime_time_scale]),
        "monitoring": ("bench_monitoring", ["--served", scale.served_rows]),
        "pipeline": ("bench_pipeline", [*sizes, *epochs]),
    }  # fmt: skip
    script, rest = args[step]
    return [sys.executable, "-m", f"tests.performance.{script}", *map(str, rest), "--out", str(out)]


# --- the figures -------------------------------------------------------------------------------
#
# Each: name, step, unit, which way is better, the path to the value, the path to its same-run
# baseline and the baseline's name, a target (on the ratio value / baseline when there is a
# baseline, else on the value) and the catalogue size it holds from, whether the value is a
# share compared by its miss rate, and the calibration rate it scales with across machines.
# A path is a tuple of keys into the step's results file.


@dataclass(frozen=True)
class Figure:
    name: str
    step: str
    unit: str
    better: str  # "lower" or "higher"
    value: tuple
    baseline: tuple | None = None
    baseline_name: str = ""
    target: str | None = None  # on the ratio value / baseline, e.g. "<= 2"
    target_from: int = 0  # the target holds from this catalogue size (videos) up
    bounded: bool = False  # a share in [0, 1], higher better: compared as its miss rate 1 - x
    calibrate: str | None = None  # "python_mops" | "matmul_gflops": seconds scale with it
    unchecked: str = ""  # why the regression check reports this figure but never flags it


def _serving(group: str) -> list[Figure]:
    """Per user group: the handler's p95 in-process and over HTTP (one client), and for the
    groups with an embedding, exact search's p95 over the HTTP p95 (the target) and Recall@20."""
    http = ("http", "by_group", group)
    figures = [
        Figure(f"serving p95 in-process, {group} decisions", "serving", "ms", "lower",
               ("modes", "mmr_off", group, "p95_ms"), calibrate="python_mops"),
        Figure(f"serving p95 over HTTP, {group} decisions", "serving", "ms", "lower",
               (*http, "p95_ms"), calibrate="python_mops"),
    ]  # fmt: skip
    if group != "0":
        figures += [
            Figure(f"exact search p95 / HTTP p95, {group} decisions", "serving", "x", "higher",
                   ("baseline_exact_scan", group, "ratio_to_http_p95"),
                   target=">= 25", target_from=200_000),
            Figure(f"serving Recall@20 vs exact, {group} decisions", "serving", "", "higher",
                   (*http, "recall@20_vs_exact"), bounded=True),
        ]  # fmt: skip
    return figures


def _http_load(clients: str) -> list[Figure]:
    """The three groups mixed over HTTP with `clients` concurrent clients."""
    run = ("http", "mixed", clients)
    label = "1 client" if clients == "1" else f"{clients} clients"
    one = clients == "1"  # the others' baseline
    figures = [
        Figure(f"HTTP p95, {label}", "serving", "ms", "lower", (*run, "p95_ms"),
               None if one else ("http", "mixed", "1", "p95_ms"), "" if one else "one client",
               "<= 3" if clients == "32" else None, calibrate="python_mops"),
        Figure(f"HTTP p99, {label}", "serving", "ms", "lower", (*run, "p99_ms"),
               calibrate="python_mops"),
        Figure(f"HTTP requests per second, {label}", "serving", "/s", "higher",
               (*run, "requests_per_second"), calibrate="python_mops"),
        Figure(f"HTTP errors, {label}", "serving", "", "lower", (*run, "errors"),
               target="<= 0"),
    ]  # fmt: skip
    return figures


FIGURES = (
    Figure("load: decisions by binary COPY", "load", "s", "lower",
           ("decisions_binary_copy_keys_rebuilt_seconds",),
           ("decisions_baseline_csv_copy_keys_maintained_seconds",), "CSV COPY, keys kept",
           calibrate="python_mops"),
    Figure("load: whole data set", "load", "s", "lower", ("load_seconds",),
           calibrate="python_mops"),
    Figure("load: peak RSS", "load", "MB", "lower", ("peak_rss_mb_whole_run",)),
    Figure("transform (TFT on Beam)", "transform", "s", "lower", ("transform_seconds",),
           ("baseline_plain_python_seconds",), "plain Python build", "<= 2",
           calibrate="python_mops"),
    Figure("transform: examples pipeline", "transform", "s", "lower",
           ("examples_pipeline_seconds",), ("baseline_plain_python_seconds",),
           "plain Python build", calibrate="python_mops"),
    Figure("transform: TFT pipeline", "transform", "s", "lower", ("tft_pipeline_seconds",),
           ("baseline_plain_python_seconds",), "plain Python build", calibrate="python_mops"),
    Figure("transform: peak RSS", "transform", "MB", "lower", ("peak_rss_mb",)),
    Figure("training: seconds per epoch", "train", "s", "lower", ("fit_seconds_per_epoch",),
           ("baseline_input_pipeline_seconds_per_epoch",), "input pipeline alone",
           calibrate="matmul_gflops"),
    Figure("training: model FLOP utilisation", "train", "", "higher", ("flops", "utilisation"),
           target=">= 0.5", target_from=32_304),
    Figure("training: model FLOP utilisation, against TensorFlow's matmul", "train", "",
           "higher", ("flops", "utilisation_vs_tf_matmul"), target=">= 0.5",
           target_from=32_304),
    Figure("training: whole run", "train", "s", "lower", ("training_seconds",),
           calibrate="matmul_gflops"),
    Figure("training: peak RSS", "train", "MB", "lower", ("training_peak_rss_mb",)),
    Figure("user tower p95, raw features", "train", "ms", "lower",
           ("latency", "user_tower", "savedmodel_raw", "p95_ms"),
           ("latency", "user_tower", "keras_transformed", "p95_ms"), "Keras on transformed",
           calibrate="matmul_gflops"),
    Figure("refresh, end to end", "refresh", "s", "lower", ("refresh", "seconds"),
           ("baseline_naive_upsert", "extrapolated_seconds"), "naive upsert (extrapolated)",
           calibrate="python_mops"),
    Figure("refresh alone / its floor", "refresh", "s", "lower",
           ("first_refresh", "seconds", "total"), ("floor", "total"),
           "COPY alone + HNSW build alone", "<= 1.5", target_from=200_000,
           calibrate="python_mops"),
    Figure("refresh beside the reader / its floor", "refresh", "s", "lower",
           ("refresh", "seconds"), ("floor", "total"), "COPY alone + HNSW build alone",
           calibrate="python_mops"),
    Figure("refresh: video set keys, HNSW, attach", "refresh", "s", "lower",
           ("refresh", "stages", "index_video"), calibrate="python_mops"),
    Figure("refresh: query p95 during", "refresh", "ms", "lower", ("query_during", "p95_ms"),
           ("query_before", "p95_ms"), "query p95 before", "<= 1.2"),
    Figure("refresh: peak RSS", "refresh", "MB", "lower", ("refresh", "peak_rss_mb")),
    Figure("refresh: PostgreSQL peak RSS", "refresh", "MB", "lower",
           ("refresh", "postgres_peak_rss_mb")),
    Figure("refresh: HNSW Recall@10", "refresh", "", "higher", ("hnsw_recall@10",),
           bounded=True),
    Figure("refresh: HNSW Recall@10 by distance", "refresh", "", "higher",
           ("hnsw_recall@10_by_distance",), bounded=True),
    Figure("halfvec HNSW build", "refresh", "s", "lower", ("halfvec", "halfvec", "build_seconds"),
           ("halfvec", "vector", "build_seconds"), "vector HNSW build", calibrate="python_mops"),
    Figure("halfvec HNSW size", "refresh", "MB", "lower", ("halfvec", "halfvec", "index_mb"),
           ("halfvec", "vector", "index_mb"), "vector HNSW size"),
    Figure("halfvec Recall@10", "refresh", "", "higher", ("halfvec", "halfvec", "recall@10"),
           ("halfvec", "vector", "recall@10"), "vector Recall@10", bounded=True),
    Figure("halfvec top-10 p95", "refresh", "ms", "lower", ("halfvec", "halfvec", "p95_ms"),
           ("halfvec", "vector", "p95_ms"), "vector top-10 p95"),
    *_serving("0"),
    *_serving("50"),
    *_serving("1000"),
    Figure("serving: HNSW Recall@100 of users' vectors", "serving", "", "higher",
           ("query_gap", "hnsw_recall@100", "users"), ("query_gap", "hnsw_recall@100", "videos"),
           "videos' vectors", bounded=True),
    *_http_load("1"),
    *_http_load("8"),
    *_http_load("32"),
    Figure("real-time: swipe to new vector served, p95 at 50 swipes/s", "realtime", "ms", "lower",
           ("event_to_visible", "50", "visible", "p95_ms"), target="< 100",
           target_from=200_000, calibrate="python_mops"),
    Figure("real-time: swipe to new vector served, p95 at 200 swipes/s", "realtime", "ms",
           "lower", ("event_to_visible", "200", "visible", "p95_ms"),
           ("event_to_visible", "50", "visible", "p95_ms"), "at 50 swipes/s",
           calibrate="python_mops",
           unchecked="200 swipes/s is near a 2-core machine's capacity (200-300/s): whether "
                     "the worker keeps up, not the code, decides it; the capacity is checked"),
    Figure("real-time: serving p95 while the worker embeds", "realtime", "ms", "lower",
           ("serving_while_embedding", "busy", "p95_ms"),
           ("serving_while_embedding", "idle", "p95_ms"), "worker idle", "<= 1.3",
           target_from=200_000, calibrate="python_mops"),
    Figure("real-time: burst of 5 swipes a user, users embedded per second", "realtime", "/s",
           "higher", ("burst", "keys_per_s"), calibrate="python_mops"),
    Figure("real-time: burst, users whose vector is not their recompute", "realtime", "",
           "lower", ("burst", "lost"), target="<= 0"),
    Figure("real-time: highest sustained swipes per second", "realtime", "/s", "higher",
           ("max_sustained", "max_sustained_per_s"), calibrate="python_mops"),
    Figure("monitoring: first pass", "monitoring", "s", "lower", ("full_pass", "seconds"),
           ("baseline_aggregate_seconds",), "one aggregate over every row",
           calibrate="python_mops"),
    Figure("monitoring: next pass", "monitoring", "s", "lower", ("incremental_pass", "seconds"),
           ("baseline_aggregate_seconds",), "one aggregate over every row",
           calibrate="python_mops"),
    Figure("pipeline: whole run", "pipeline", "s", "lower", ("run_seconds",),
           ("steps_seconds_sum",), "its steps' own seconds", "<= 1.05",
           target_from=32_304, calibrate="python_mops"),
)  # fmt: skip


def _get(results: dict, path: tuple):
    for key in path:
        if not isinstance(results, dict) or key not in results:
            return None
        results = results[key]
    return results if isinstance(results, int | float) and not isinstance(results, bool) else None


def _summary(values: list[float]) -> dict:
    return {"values": values, "min": min(values), "median": statistics.median(values)}


def _meets(ratio: float, target: str) -> bool:
    op, bound = target.split()
    compare = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}
    return compare[op](float(ratio), float(bound))


def collect(runs: dict[str, list[dict]], steps: tuple[str, ...], videos: int) -> dict:
    """Every figure of `steps` over the repeats (`runs[step]`: that step's results files), with
    the targets that hold at a catalogue of `videos` (an exact scan of a small catalogue is
    fast: the serving target is the 200k catalogue's).

    A figure its step's results lack is recorded as missing (`None`): the check counts it."""
    figures = {}
    for figure in FIGURES:
        if figure.step not in steps:
            continue
        values, baselines, ratios = [], [], []
        for results in runs.get(figure.step, []):
            value = _get(results, figure.value)
            if value is None:
                continue
            values.append(value)
            if figure.baseline:
                base = _get(results, figure.baseline)
                if base:
                    baselines.append(base)
                    ratios.append(round(value / base, 4))
        if not values:
            figures[figure.name] = None
            continue
        entry = {"step": figure.step, "unit": figure.unit, "better": figure.better,
                 **_summary(values)}  # fmt: skip
        if figure.calibrate:
            entry["calibrate"] = figure.calibrate
        if figure.bounded:
            entry["bounded"] = True
        if figure.unchecked:
            entry["unchecked"] = figure.unchecked
        if figure.baseline and ratios:
            entry["baseline"] = {"name": figure.baseline_name, **_summary(baselines)}
            entry["ratio"] = _summary(ratios)
        if figure.target and videos >= figure.target_from and (ratios or not figure.baseline):
            # Without a baseline the value is the ratio itself (e.g. exact search / serving).
            measured = entry["ratio"]["median"] if "ratio" in entry else entry["median"]
            entry["target"] = figure.target
            entry["meets_target"] = _meets(measured, figure.target)
        figures[figure.name] = entry
    return figures


# --- the regression check ----------------------------------------------------------------------


def run_calibration(report: dict) -> dict[str, float]:
    """The machine's speed over a run: per calibration rate, the median of the run's readings
    (at start, at end and in each step's results). One reading takes about a second, and a
    shared machine's speed moves by 1.5x within minutes: a run whose start caught a fast or a
    slow second would otherwise scale every figure by it."""
    machine = report.get("machine", {})
    readings = [machine.get("start", {}), machine.get("end", {})]
    for entry in report.get("steps", {}).values():
        readings += [r.get("machine", {}) for r in entry.get("results", [])
                     if isinstance(r, dict)]  # fmt: skip
    rates: dict[str, list[float]] = {}
    for reading in readings:
        for rate, value in (reading or {}).get("calibration", {}).items():
            if value:
                rates.setdefault(rate, []).append(value)
    return {rate: round(statistics.median(values), 2) for rate, values in rates.items()}


def calibrated(entry: dict, now: dict, then: dict) -> float:
    """The committed run's median `entry` in this run's machine terms (`now` and `then`: the two
    runs' `run_calibration`): a time (lower better) scales inversely with the calibration rate
    the figure depends on, a rate (higher better) with it; other figures are returned as they
    are."""
    rate = entry.get("calibrate")
    before = then.get(rate) if rate else None
    after = now.get(rate) if rate else None
    if not before or not after:
        return entry["median"]
    factor = before / after if entry["better"] == "lower" else after / before
    return entry["median"] * factor


def _spread(summary: dict) -> float:
    low, high = min(summary["values"]), max(summary["values"])
    return high / low - 1 if low > 0 else 0.0


MISS_FLOOR = 0.02  # a share's misses are relative to at least this (recall 1.0 -> 0.99: +50 %)


def _change(now: float, then: float, better: str, bounded: bool) -> float:
    """How much worse `now` is than `then`, relatively (0.5: 50 % worse; negative: better). A
    share in [0, 1] is compared by its miss rate (Recall 0.98 -> 0.96 doubles the misses),
    against at least MISS_FLOOR (an exact index's recall of 1.0 leaves no misses to divide by)."""
    if bounded:
        return ((1 - now) - (1 - then)) / max(1 - then, MISS_FLOOR)
    if then == 0 or now == 0:  # e.g. no errors then: any now is worse, infinitely
        worse = now > then if better == "lower" else now < then
        return float("inf") if worse else 0.0
    return now / then - 1 if better == "lower" else then / now - 1


def compare(current: dict, committed: dict, band: float) -> dict[str, dict]:
    """Per figure of `current`: the committed figure, the change and whether it is a regression.

    Two things are compared: the ratio to the same-run baseline, when both runs have one
    (machine-independent), and the value itself (memory and counts as they are; a time or a
    rate against the committed value as measured or scaled by the two runs' calibrations,
    whichever forgives more: see `run_calibration` and `calibrated`): a slower baseline must
    not hide a slower figure. `change` is how much worse (positive) the worse of the two is.
    Flagged (`regressed`) when it exceeds the band: max(`band`, either side's spread over its
    repeats). A figure missing now is flagged too; a figure marked `unchecked` is compared,
    never flagged."""
    out = {}
    now_machine = current.get("machine", {}).get("start", {})
    then_machine = committed.get("machine", {}).get("start", {})
    now_speed, then_speed = run_calibration(current), run_calibration(committed)
    note = ""
    if now_machine.get("cpu_count") != then_machine.get("cpu_count"):
        note = (f"; {now_machine.get('cpu_count')} cpus now, "
                f"{then_machine.get('cpu_count')} then: times compare loosely")  # fmt: skip
    # Another vector instruction set rounds the training's products otherwise: the figures of
    # the steps that train (train, pipeline) or embed with the model may compare two models.
    isas = now_machine.get("vector_isa"), then_machine.get("vector_isa")
    model_note = ""
    if not {None, "unknown"} & set(isas) and isas[0] != isas[1]:
        model_note = (f"; {isas[0]} now, {isas[1]} then: TensorFlow's kernels round "
                      "differently, so the two runs may have trained different models")  # fmt: skip
    model_figures = {f.name for f in FIGURES if f.step in ("train", "pipeline", *MODEL_STEPS)}
    for name, entry in current["figures"].items():
        before = committed.get("figures", {}).get(name)
        if entry is None:
            out[name] = {"regressed": True, "why": "missing from this run"}
            continue
        if before is None:
            out[name] = {"regressed": False, "why": "not in the committed results"}
            continue
        bounded = bool(entry.get("bounded"))
        scaled = calibrated(
            {**before, "better": entry["better"], "calibrate": entry.get("calibrate")},
            now_speed,
            then_speed,
        )
        # Worse only if worse both as measured and scaled: the calibration tells which way the
        # machine's speed moved, not by how much for every figure (one default run's loop rate
        # read 2.1x the committed run's, its times 1.3-1.5x as fast). The price: on a faster
        # day a figure may slow by up to the speed-up unflagged; a ratio to a same-run
        # baseline does not depend on the day.
        lenient = max if entry["better"] == "lower" else min
        pairs = [("value", entry, lenient(before["median"], scaled), before)]
        if "ratio" in entry and "ratio" in before:
            pairs.append(("ratio", entry["ratio"], before["ratio"]["median"], before["ratio"]))
        worst = None
        for what, now, then_value, then in pairs:
            change = _change(now["median"], then_value, entry["better"], bounded)
            allowed = max(band, _spread(now), _spread(then))
            if worst is None or change - allowed > worst["change"] - worst["band"]:
                worst = {"compared": what, "committed": round(then_value, 4),
                         "now": now["median"], "change": round(change, 3),
                         "band": round(allowed, 3)}  # fmt: skip
                if what == "value":
                    worst["committed_scaled"] = round(scaled, 4)
        out[name] = {
            **worst,
            "regressed": worst["change"] > worst["band"] and "unchecked" not in entry,
            "why": (f"not checked: {entry['unchecked']}" if "unchecked" in entry else
                    "compared" + note) + (model_note if name in model_figures else ""),
        }  # fmt: skip
    return out


# --- running ------------------------------------------------------------------------------------


MODEL_STEPS = ("refresh", "serving", "realtime")  # they embed with the train step's model
STEP_TIMEOUT_S = {"small": 1800, "default": 3 * 3600, "large": 6 * 3600, "xl": 12 * 3600}


def run_step(command: list[str], log: Path, timeout: float) -> tuple[int, float]:
    """Run one step's script, its output appended to `log`; (exit code, seconds). The step runs
    in its own session: on Ctrl-C or a timeout it gets SIGINT and 60 s to stop its embedded
    PostgreSQL and Deno, then SIGKILL (exit code -9 when it had to be killed)."""
    start = time.perf_counter()
    with log.open("a") as f:
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        process = subprocess.Popen(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        try:
            code = process.wait(timeout=timeout)
        except (KeyboardInterrupt, subprocess.TimeoutExpired) as stop:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if isinstance(stop, KeyboardInterrupt):
                raise
            f.write(f"timed out after {timeout:.0f} s\n")
            code = -9
    return code, round(time.perf_counter() - start, 1)


def _log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=list(SCALES), default="small")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each step")
    parser.add_argument("--steps", help="comma-separated subset of the scale's steps")
    parser.add_argument(
        "--work", type=Path,
        help="folder for the steps' data (kept: a later run with the same data set reuses its "
             "transform for training, whatever code made it)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path,
        help="results file (default: results/suite/<scale>.json for a whole run that "
             "succeeded, else <scale>.partial.json beside it)",
    )  # fmt: skip
    parser.add_argument(
        "--against", type=Path, help="results to compare with (default: results/suite/<scale>.json)"
    )
    parser.add_argument("--band", type=float, default=0.25, help="noise band (0.25: 25 %%)")
    parser.add_argument("--check", action="store_true", help="exit 1 on a regression or failure")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    wanted = set(args.steps.split(",")) if args.steps else set(scale.steps)
    unknown = wanted - set(scale.steps)
    if unknown:
        parser.error(f"not steps of {args.scale}: {', '.join(sorted(unknown))}")
    # Without the train step, the model steps embed with the one `--work` kept from a run
    # before (the same data's: training does not depend on the catalogue they embed).
    card_path = args.work / "train" / "model" / "model_card.json" if args.work else None
    trained = card_path is not None and card_path.exists()
    if wanted & set(MODEL_STEPS) and "train" not in wanted:
        if not trained:
            parser.error(f"{', '.join(sorted(wanted & set(MODEL_STEPS)))} embed with the model "
                         "the train step trains: add train to --steps, or pass the --work of a "
                         "run that trained it")  # fmt: skip
        card = json.loads(card_path.read_text())
        trained_on = card.get("training", {}).get("catalogue_videos")
        if trained_on != scale.train_videos:
            parser.error(f"the model in {card_path.parent} was trained on {trained_on} videos; "
                         f"{args.scale} trains on {scale.train_videos:,}")  # fmt: skip
    steps = tuple(step for step in scale.steps if step in wanted)  # in the suite's order
    against = args.against or SUITE / f"{args.scale}.json"
    committed = json.loads(against.read_text()) if against.exists() else None

    from tests.performance.suite_report import write_html

    # One suite run at a time in a checkout, whatever the scales: two would time each other's
    # load, and at one scale they would also share the log and results files.
    SUITE.mkdir(parents=True, exist_ok=True)
    lock = open(SUITE / "suite.lock", "w")  # noqa: SIM115 (held until the process exits)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        print("another suite run is running in this checkout: its figures and yours would "
              "both be wrong; wait for it", file=sys.stderr)  # fmt: skip
        return 2

    with tempfile.TemporaryDirectory(prefix="swiperec-suite-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        log = SUITE / f"{args.scale}.log"  # kept (not committed)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        report = {"scale": args.scale, "sizes": scale.__dict__, "repeats": args.repeats,
                  "commit": _commit(), "machine": {"start": machine()}, "steps": {}}  # fmt: skip
        print(f"suite, {args.scale} scale ({scale.videos:,} videos), log: {log}", flush=True)
        if "train" not in steps and set(steps) & set(MODEL_STEPS):
            report["model"] = {"kept_from_an_earlier_run": str(card_path.parent),
                               "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(
                                   card_path.stat().st_mtime)),
                               "trained_on_videos": trained_on}  # fmt: skip
        runs: dict[str, list[dict]] = {}
        for step in steps:
            if step in MODEL_STEPS and "train" in steps and not runs.get("train"):
                print(f"  {step:<11} not run: training failed, there is no model to embed with")
                report["steps"][step] = {"seconds": [], "exit_codes": ["no model"]}
                continue
            entry = report["steps"][step] = {"seconds": [], "exit_codes": [], "results": []}
            for repeat in range(args.repeats):
                result_file = work / f"{step}_{repeat}.json"
                command = step_command(step, scale, work, result_file)
                code, seconds = run_step(command, log, STEP_TIMEOUT_S[args.scale])
                entry["seconds"].append(seconds)
                entry["exit_codes"].append(code)
                if code == 0 and result_file.exists():
                    results = json.loads(result_file.read_text())
                    entry["results"].append(results)
                    runs.setdefault(step, []).append(results)
                print(f"  {step:<11} run {repeat + 1}/{args.repeats}: exit {code}, "
                      f"{seconds:.0f} s", flush=True)  # fmt: skip
                if code != 0:
                    print(f"  {step} failed; the log ends:\n{_log_tail(log)}", flush=True)
                    break
        report["machine"]["end"] = machine()
        report["figures"] = collect(runs, steps, scale.videos)
        if committed:
            report["against"] = {
                "file": str(against.relative_to(ROOT) if against.is_relative_to(ROOT) else against),
                "commit": committed.get("commit"),
                "machine": committed.get("machine", {}).get("start"),
                "calibration": run_calibration(committed),  # what its figures are scaled by
            }
            report["comparison"] = compare(report, committed, args.band)
    failed = [s for s, e in report["steps"].items() if any(c != 0 for c in e["exit_codes"])]
    missing = [n for n, f in report["figures"].items() if f is None]
    regressed = [n for n, c in report.get("comparison", {}).items() if c["regressed"]]
    # Only a whole run that succeeded replaces the committed results it is compared with.
    whole = steps == scale.steps and not failed and not missing
    out = args.out or SUITE / (f"{args.scale}.json" if whole else f"{args.scale}.partial.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    html = write_html(report, out.with_suffix(".html"), SUITE)
    print_summary(report)
    print(f"saved {out} and {html}")
    if failed:
        print(f"FAILED steps: {', '.join(failed)} (their output: {log})")
    if missing:
        print(f"MISSING figures: {'; '.join(missing)}")
    if regressed:
        print(f"REGRESSED beyond the noise band: {'; '.join(regressed)}")
    return 1 if args.check and (failed or missing or regressed) else 0


def _commit() -> str | None:
    """The checkout's commit (or Cloud Build's $COMMIT_SHA where there is no git)."""
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True)  # fmt: skip
    except FileNotFoundError:
        return os.environ.get("COMMIT_SHA") or None
    return result.stdout.strip() or os.environ.get("COMMIT_SHA") or None


def print_summary(report: dict) -> None:
    start = report["machine"]["start"]
    calibration = start.get("calibration", {})
    print(f"\nmachine: {start['cpu_count']} cpus, {start['cpu_model']}"
          f"{', ' + start['vector_isa'] if 'vector_isa' in start else ''}; "
          f"calibration {calibration} at start, "
          f"{run_calibration(report)} the median of the run's readings")  # fmt: skip
    comparison = report.get("comparison", {})
    for name, entry in report["figures"].items():
        if entry is None:
            print(f"  {name:<48} MISSING")
            continue
        text = f"  {name:<48} {entry['median']:>10.4g} {entry['unit']:<3}"
        if "ratio" in entry:
            text += f" {entry['ratio']['median']:>7.3g}x {entry['baseline']['name']}"
        if "target" in entry:
            text += f" (target {entry['target']}: {'met' if entry['meets_target'] else 'NOT met'})"
        check = comparison.get(name, {})
        if check.get("regressed"):
            text += f"  REGRESSED {check.get('change', '')}"
        print(text)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
