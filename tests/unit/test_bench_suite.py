"""The performance suite's bookkeeping: figures from the steps' results files, and the regression
check against committed results (no timing here: the suite itself measures)."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

from tests.performance import suite
from tests.performance.suite import FIGURES, SCALES, collect, compare, step_command
from tests.performance.suite_report import CURVES, scale_reports, write_html

RESULTS = Path(__file__).parents[1] / "performance" / "results"


def _transform(seconds: float, baseline: float) -> dict:
    return {"transform_seconds": seconds, "baseline_plain_python_seconds": baseline,
            "peak_rss_mb": 1000}  # fmt: skip


def _report(runs: dict, calibration: dict | None = None) -> dict:
    calibration = calibration or {"python_mops": 20.0, "matmul_gflops": 100.0}
    machine = {"cpu_count": 2, "cpu_model": "cpu", "memory_gb": 24, "load_average": [0, 0, 0],
               "calibration": calibration}  # fmt: skip
    steps = tuple(runs)
    return {"scale": "small", "sizes": SCALES["small"].__dict__, "repeats": 1, "commit": "x",
            "machine": {"start": machine, "end": machine},
            "steps": {s: {"seconds": [1.0], "exit_codes": [0]} for s in steps},
            "figures": collect(runs, steps, 2_000)}  # fmt: skip


def test_collect_keeps_each_figure_with_its_same_run_baseline_and_target():
    runs = {"transform": [_transform(30, 10), _transform(20, 10)]}
    figures = collect(runs, ("transform",), 2_000)
    pipeline = figures["transform (TFT on Beam)"]
    assert pipeline["values"] == [30, 20]
    assert pipeline["min"] == 20 and pipeline["median"] == 25
    assert pipeline["ratio"]["values"] == [3.0, 2.0]
    assert pipeline["target"] == "<= 2" and pipeline["meets_target"] is False
    assert figures["transform: peak RSS"]["median"] == 1000
    # Only the steps that ran are collected; a step's figure its results lack is missing.
    assert not any(name.startswith("serving") for name in figures)
    assert collect({"transform": [{}]}, ("transform",), 2_000)["transform: peak RSS"] is None


def test_the_serving_target_holds_from_the_200k_catalogue_up():
    results = {"baseline_exact_scan": {"50": {"ratio_to_http_p95": 3.0}}}
    name = "exact search p95 / HTTP p95, 50 decisions"
    assert "target" not in collect({"serving": [results]}, ("serving",), 2_000)[name]
    large = collect({"serving": [results]}, ("serving",), 200_000)[name]
    assert large["target"] == ">= 25" and large["meets_target"] is False


def test_compare_flags_a_ratio_worse_than_the_band_and_not_one_within_it():
    committed = _report({"transform": [_transform(20, 10)]})  # ratio 2
    within = compare(_report({"transform": [_transform(22, 10)]}), committed, band=0.25)
    assert within["transform (TFT on Beam)"]["regressed"] is False
    worse = compare(_report({"transform": [_transform(30, 10)]}), committed, band=0.25)
    assert worse["transform (TFT on Beam)"]["change"] == 0.5
    assert worse["transform (TFT on Beam)"]["regressed"] is True


def test_compare_scales_absolute_times_by_the_two_runs_calibrations():
    committed = _report({"train": [{"training_seconds": 100}]})  # matmul 100 GFLOP/s
    half_as_fast = {"python_mops": 20.0, "matmul_gflops": 50.0}
    same = compare(_report({"train": [{"training_seconds": 200}]}, half_as_fast), committed, 0.25)
    assert same["training: whole run"]["committed"] == 200.0
    assert same["training: whole run"]["regressed"] is False
    slower = compare(_report({"train": [{"training_seconds": 200}]}), committed, 0.25)
    assert slower["training: whole run"]["regressed"] is True


def test_a_time_is_worse_only_if_worse_both_as_measured_and_scaled():
    committed = _report({"train": [{"training_seconds": 100}]})  # matmul 100 GFLOP/s
    # The machine read twice as fast and the run took 70 s: better than the committed 100 s
    # as measured, 40 % worse than the 50 s the calibration scales it to. Not flagged.
    twice_as_fast = {"python_mops": 20.0, "matmul_gflops": 200.0}
    faster = compare(_report({"train": [{"training_seconds": 70}]}, twice_as_fast), committed,
                     0.25)["training: whole run"]  # fmt: skip
    assert faster["committed_scaled"] == 50.0 and faster["committed"] == 100.0
    assert faster["change"] == -0.3 and faster["regressed"] is False
    # 140 s is worse either way: flagged by the lesser of the two changes (40 %, as measured).
    slow = compare(_report({"train": [{"training_seconds": 140}]}, twice_as_fast), committed,
                   0.25)["training: whole run"]  # fmt: skip
    assert slow["change"] == 0.4 and slow["regressed"] is True
    # A rate (higher better) the same way: 60 requests/s where 50 were committed, at twice the
    # loop rate (100 once scaled), is not worse as measured.
    http = {"http": {"mixed": {"32": {"requests_per_second": 50}}}}
    committed = _report({"serving": [http]})
    http["http"]["mixed"]["32"]["requests_per_second"] = 60
    now = _report({"serving": [http]}, {"python_mops": 40.0, "matmul_gflops": 100.0})
    rate = compare(now, committed, 0.25)["HTTP requests per second, 32 clients"]
    assert rate["committed_scaled"] == 100.0 and rate["regressed"] is False


def _readings(report: dict, start: float, rest: float) -> dict:
    """`report` with a matmul reading of `start` at start and `rest` at end and in its step."""
    machine = report["machine"]["start"]
    report["machine"] = {"start": {**machine, "calibration": {"matmul_gflops": start}},
                         "end": {**machine, "calibration": {"matmul_gflops": rest}}}  # fmt: skip
    for entry in report["steps"].values():
        entry["results"] = [{"machine": {"calibration": {"matmul_gflops": rest}}}]
    return report


def test_compare_scales_by_the_median_of_each_runs_calibration_readings():
    # Each run caught a second at start unlike the rest of it: the committed run a slow one
    # (50, then 100 throughout), this run a fast one (200, then 50, half as fast). Its 200 s
    # is the committed 100 s.
    committed = _readings(_report({"train": [{"training_seconds": 100}]}), 50.0, 100.0)
    current = _readings(_report({"train": [{"training_seconds": 200}]}), 200.0, 50.0)
    assert suite.run_calibration(committed) == {"matmul_gflops": 100.0}
    assert suite.run_calibration(current) == {"matmul_gflops": 50.0}
    result = compare(current, committed, 0.25)["training: whole run"]
    assert result["committed_scaled"] == 200.0 and result["regressed"] is False
    # Were either run's start reading taken alone, the committed 100 s would scale to 50 s (by
    # this run's fast start) or stay 100 s (by the committed run's slow start): 200 s is then
    # worse both as measured and scaled, and flagged.
    for report, start, scaled in ((current, 200.0, 50.0), (committed, 50.0, 100.0)):
        saved = report["steps"]["train"].pop("results"), report["machine"]["end"]
        report["machine"]["end"] = report["machine"]["start"]
        assert suite.run_calibration(report) == {"matmul_gflops": start}
        check = compare(current, committed, 0.25)["training: whole run"]
        assert check["committed_scaled"] == scaled and check["regressed"] is True
        report["steps"]["train"]["results"], report["machine"]["end"] = saved


def test_compare_widens_the_band_to_the_repeats_spread_and_flags_missing_figures():
    committed = _report({"transform": [_transform(20, 10), _transform(40, 10)]})  # ratio 2, 4
    result = compare(_report({"transform": [_transform(40, 10)]}), committed, band=0.1)
    assert result["transform (TFT on Beam)"]["band"] == 1.0  # 4 / 2 - 1
    assert result["transform (TFT on Beam)"]["regressed"] is False
    missing = compare(_report({"transform": [{}]}), committed, band=0.1)
    assert missing["transform (TFT on Beam)"]["regressed"] is True


def test_the_vector_instructions_are_the_hosts_or_onednns_narrower_cap(monkeypatch):
    from tests.performance import record
    from tests.performance.record import vector_isa

    host = "flags\t\t: fpu sse2 sse4_1 avx avx2 fma avx512f avx512bw avx512vl avx512dq"
    assert vector_isa(host, "") == "AVX-512"
    assert vector_isa("flags : sse4_1 avx avx2 fma avx512f", "") == "AVX2"  # no AVX512_CORE
    assert vector_isa("flags\t\t: fpu sse2 sse4_1 avx avx2 fma", "") == "AVX2"
    assert vector_isa("flags\t\t: fpu sse2", "") == "older"
    assert vector_isa("", "") == "unknown"
    # oneDNN's cap, by its exact names, narrows what it uses; a cap above the host, DEFAULT, or
    # a name oneDNN does not know (it then sets no cap) leaves the host's
    assert vector_isa(host, "AVX2") == vector_isa(host, "AVX2_VNNI_2") == "AVX2"
    assert vector_isa(host, "AVX512_CORE_AMX") == vector_isa(host, "AVX10_1_512") == "AVX-512"
    for unknown in ("DEFAULT", "avx2", "AVX_VNNI", "AVX2FOO"):
        assert vector_isa(host, unknown) == "AVX-512", unknown
    assert vector_isa("flags : sse4_1 avx avx2", "AVX512_CORE") == "AVX2"
    assert vector_isa(host, "SSE41") == "SSE4.1"
    # every results file records it, the cap read from this process's environment, oneDNN's
    # name for it first
    monkeypatch.setattr(record, "calibration", dict)
    monkeypatch.setattr(record, "cpu_caches", lambda: "unknown")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    assert record.machine()["vector_isa"] in ("SSE4.1", "older", "unknown")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert record.machine()["vector_isa"] in ("AVX2", "AVX", "SSE4.1", "older", "unknown")


def test_the_caches_are_read_as_linux_lists_them(tmp_path, monkeypatch):
    from tests.performance import record
    from tests.performance.record import cpu_caches

    caches = [("1", "Data", "48K"), ("1", "Instruction", "32K"), ("2", "Unified", "2048K")]
    caches += [("3", "Unified", f"{n}K") for n in range(3, 11)]  # index10 after index9
    for index, (level, kind, size) in enumerate(caches):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(value + "\n")
    listed = cpu_caches(tmp_path)
    assert listed.startswith("L1d 48K, L1i 32K, L2 2048K, L3 3K, L3 4K")
    assert listed.endswith("L3 9K, L3 10K")
    assert cpu_caches(tmp_path / "none") == "unknown"
    monkeypatch.setattr(record, "calibration", dict)
    assert record.machine()["cpu_caches"] == cpu_caches()


def test_compare_says_when_the_runs_vector_instructions_differ():
    """On another vector instruction set TensorFlow's kernels round differently and the same
    seeded training may give another model: the comparisons of the figures that depend on the
    model say so, the others do not; unknown or unrecorded on either side, nothing is said."""
    model_free = {"transform": [_transform(20, 10)]}
    runs = {**model_free, "train": [{"training_seconds": 100}]}
    committed, current = _report(runs), _report(runs)
    free, trained = "transform (TFT on Beam)", "training: whole run"

    def isa(report, value):
        report["machine"]["start"] = {**report["machine"]["start"], "vector_isa": value}

    assert compare(current, committed, band=0.25)[trained]["why"] == "compared"
    isa(current, "AVX-512")
    assert compare(current, committed, band=0.25)[trained]["why"] == "compared"  # one side
    isa(committed, "unknown")
    assert compare(current, committed, band=0.25)[trained]["why"] == "compared"
    isa(committed, "AVX2")
    result = compare(current, committed, band=0.25)
    assert result[trained]["why"] == (
        "compared; AVX-512 now, AVX2 then: TensorFlow's kernels round differently, so the two "
        "runs may have trained different models"
    )
    assert result[free]["why"] == "compared"
    # the steps that embed with the model (serving here) and the pipeline, which trains one
    serving = {"http": {"by_group": {"50": {"p95_ms": 10}}}}
    for step, results, name in (
        ("serving", serving, "serving p95 over HTTP, 50 decisions"),
        ("pipeline", {"run_seconds": 100}, "pipeline: whole run"),
    ):
        now, then = _report({step: [results]}), _report({step: [results]})
        isa(now, "AVX-512")
        isa(then, "AVX2")
        assert compare(now, then, band=0.25)[name]["why"] == result[trained]["why"], name
    isa(committed, "AVX-512")
    assert compare(current, committed, band=0.25)[trained]["why"] == "compared"


def test_higher_is_better_figures_regress_when_they_fall():
    def serving(ratio):
        group = {"p95_ms": 10, "recall@20_vs_exact": 0.97}
        return {"baseline_exact_scan": {"50": {"ratio_to_http_p95": ratio}},
                "http": {"by_group": {"50": group}}}  # fmt: skip

    committed = _report({"serving": [serving(30)]})
    result = compare(_report({"serving": [serving(15)]}), committed, band=0.25)
    assert result["exact search p95 / HTTP p95, 50 decisions"]["regressed"] is True
    assert result["serving Recall@20 vs exact, 50 decisions"]["regressed"] is False


def test_a_figure_at_the_machines_capacity_is_compared_but_never_flagged():
    def realtime(p95_at_50, p95_at_200):
        rates = {"50": {"visible": {"p95_ms": p95_at_50}},
                 "200": {"visible": {"p95_ms": p95_at_200}}}  # fmt: skip
        return {"event_to_visible": rates, "max_sustained": {"max_sustained_per_s": 300}}

    committed = _report({"realtime": [realtime(50, 80)]})
    result = compare(_report({"realtime": [realtime(50, 460)]}), committed, band=3)
    at_200 = result["real-time: swipe to new vector served, p95 at 200 swipes/s"]
    assert at_200["change"] > 3 and at_200["regressed"] is False
    assert at_200["why"].startswith("not checked: ")
    # The same slowdown at 50 swipes/s, below capacity, is flagged.
    slower = compare(_report({"realtime": [realtime(250, 80)]}), committed, band=3)
    assert slower["real-time: swipe to new vector served, p95 at 50 swipes/s"]["regressed"]


def test_errors_where_there_were_none_are_a_regression():
    def load(errors):
        return {"http": {"mixed": {"8": {"errors": errors, "p95_ms": 5}, "1": {"p95_ms": 4}}}}

    committed = _report({"serving": [load(0)]})
    assert (
        compare(_report({"serving": [load(0)]}), committed, 0.25)["HTTP errors, 8 clients"][
            "regressed"
        ]
        is False
    )
    failing = compare(_report({"serving": [load(3)]}), committed, 0.25)
    assert failing["HTTP errors, 8 clients"]["regressed"] is True


def test_a_slower_baseline_does_not_hide_a_slower_figure():
    committed = _report({"transform": [_transform(20, 10)]})
    both_slower = compare(_report({"transform": [_transform(40, 20)]}), committed, band=0.25)
    assert both_slower["transform (TFT on Beam)"]["compared"] == "value"
    assert both_slower["transform (TFT on Beam)"]["regressed"] is True


def test_a_recall_is_compared_by_its_miss_rate():
    def refresh(recall):
        return {"hnsw_recall@10": recall}

    committed = _report({"refresh": [refresh(0.98)]})
    fewer_hits = compare(_report({"refresh": [refresh(0.96)]}), committed, 0.25)
    assert fewer_hits["refresh: HNSW Recall@10"]["change"] == 1.0  # twice the misses
    assert fewer_hits["refresh: HNSW Recall@10"]["regressed"] is True
    same = compare(_report({"refresh": [refresh(0.979)]}), committed, 0.25)
    assert same["refresh: HNSW Recall@10"]["regressed"] is False
    # An exact result then (no misses) is compared against a floor of 2 % misses.
    exact = _report({"refresh": [refresh(1.0)]})
    nearly = compare(_report({"refresh": [refresh(0.995)]}), exact, 0.25)
    assert nearly["refresh: HNSW Recall@10"]["regressed"] is False
    worse = compare(_report({"refresh": [refresh(0.97)]}), exact, 0.25)
    assert worse["refresh: HNSW Recall@10"]["regressed"] is True


def test_step_commands_pass_the_scale_sizes_and_the_output_file(tmp_path):
    command = step_command("serving", SCALES["large"], tmp_path, tmp_path / "out.json")
    assert command[1:3] == ["-m", "tests.performance.bench_serving"]
    assert command[command.index("--videos") + 1] == "200000"
    assert command[command.index("--model") + 1] == str(tmp_path / "train" / "model")
    assert command[-2:] == ["--out", str(tmp_path / "out.json")]


def test_the_1m_catalogue_gives_its_hnsw_builds_the_memory_its_graph_needs(tmp_path):
    for step in ("refresh", "serving"):
        xl = step_command(step, SCALES["xl"], tmp_path, tmp_path / "out.json")
        assert xl[xl.index("--maintenance-work-mem") + 1] == "6GB"
        large = step_command(step, SCALES["large"], tmp_path, tmp_path / "out.json")
        assert "--maintenance-work-mem" not in large  # the embedded server's 2GB


def test_the_transform_step_leaves_the_training_data_for_the_train_step_when_it_is_the_same(
    tmp_path,
):
    for scale, shared in (("small", True), ("default", True), ("large", False)):
        transform = step_command("transform", SCALES[scale], tmp_path, tmp_path / "t.json")
        train = step_command("train", SCALES[scale], tmp_path, tmp_path / "m.json")
        assert ("--keep" in transform) == shared
        if shared:
            assert transform[transform.index("--keep") + 1] == train[train.index("--work") + 1]


def _transform_outputs(folder, marker: str):
    for name in ("snapshot", "transform", "examples"):
        (folder / name).mkdir(parents=True)
        (folder / name / "metadata.json").write_text(marker)
    (folder / "ground_truth.npz").write_text(marker)


def test_kept_transform_outputs_land_where_the_train_step_reads_them_once(tmp_path):
    from swiperec.data.synthetic import SyntheticConfig
    from tests.performance.bench_transform import keep_for_training

    data, keep = SyntheticConfig(videos=500), tmp_path / "keep"
    (keep / "examples").mkdir(parents=True)  # what an interrupted move left: redone
    first, second = tmp_path / "first", tmp_path / "second"
    _transform_outputs(first, "first")
    _transform_outputs(second, "second")
    keep_for_training(first, keep, data)
    keep_for_training(second, keep, data)  # a repeat keeps the first run's
    assert (keep / "examples" / "metadata.json").read_text() == "first"
    assert (keep / "ground_truth.npz").read_text() == "first"
    assert json.loads((keep / "data.json").read_text())["videos"] == 500
    with pytest.raises(SystemExit, match="holds another data set"):
        keep_for_training(second, keep, SyntheticConfig(videos=600))


def test_a_second_suite_run_refuses_to_start_and_runs_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    def must_not_run(*args, **kwargs):
        raise AssertionError("a step ran while another suite run held the lock")

    monkeypatch.setattr(suite, "SUITE", tmp_path)
    monkeypatch.setattr(suite, "run_step", must_not_run)
    with open(tmp_path / "suite.lock", "w") as running:
        fcntl.flock(running, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code = suite.main(["--scale", "small", "--steps", "load", "--work", str(tmp_path / "w")])
    assert code == 2
    assert "another suite run is running in this checkout" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.lock"]


def test_without_the_train_step_the_model_steps_embed_with_the_model_work_kept(
    tmp_path, monkeypatch
):
    ran = []

    def record(command, log, timeout):
        ran.append(command)
        return 1, 0.0  # no results: the run is partial

    monkeypatch.setattr(suite, "SUITE", tmp_path / "suite")
    monkeypatch.setattr(suite, "run_step", record)
    work = tmp_path / "w"
    with pytest.raises(SystemExit):  # no model to embed with: refused before anything runs
        suite.main(["--scale", "small", "--steps", "serving", "--work", str(work)])
    assert ran == []
    (work / "train" / "model").mkdir(parents=True)
    card = work / "train" / "model" / "model_card.json"
    card.write_text(json.dumps({"training": {"catalogue_videos": 32_304}}))
    with pytest.raises(SystemExit):  # trained on another scale's data
        suite.main(["--scale", "small", "--steps", "serving", "--work", str(work)])
    card.write_text(json.dumps({"training": {"catalogue_videos": 2_000}}))
    assert suite.main(["--scale", "small", "--steps", "serving", "--work", str(work)]) == 0
    assert [c[2] for c in ran] == ["tests.performance.bench_serving"]
    assert ran[0][ran[0].index("--model") + 1] == str(work / "train" / "model")
    partial = json.loads((tmp_path / "suite" / "small.partial.json").read_text())
    assert partial["model"]["kept_from_an_earlier_run"] == str(work / "train" / "model")


def test_when_training_fails_the_model_steps_do_not_embed_with_an_older_model(
    tmp_path, monkeypatch
):
    ran = []

    def record(command, log, timeout):
        ran.append(command[2])
        return 1, 0.0  # every step fails, training too

    monkeypatch.setattr(suite, "SUITE", tmp_path / "suite")
    monkeypatch.setattr(suite, "run_step", record)
    work = tmp_path / "w"
    (work / "train" / "model").mkdir(parents=True)
    (work / "train" / "model" / "model_card.json").write_text(
        json.dumps({"training": {"catalogue_videos": 2_000}}))  # fmt: skip
    suite.main(["--scale", "small", "--steps", "train,serving", "--work", str(work)])
    assert ran == ["tests.performance.bench_train"]
    partial = json.loads((tmp_path / "suite" / "small.partial.json").read_text())
    assert partial["steps"]["serving"]["exit_codes"] == ["no model"]


def test_the_realtime_figures_read_the_real_time_benchmarks_results():
    results = json.loads((RESULTS / "realtime.json").read_text())
    figures = collect({"realtime": [results]}, ("realtime",), 200_000)
    visible = figures["real-time: swipe to new vector served, p95 at 50 swipes/s"]
    assert visible["median"] == results["event_to_visible"]["50"]["visible"]["p95_ms"]
    assert visible["meets_target"] == (visible["median"] < 100)
    serving = figures["real-time: serving p95 while the worker embeds"]
    busy_to_idle = results["serving_while_embedding"]["ratio_p95_busy_to_idle"]
    assert abs(serving["ratio"]["median"] - busy_to_idle) < 0.01
    assert figures["real-time: burst, users whose vector is not their recompute"]["median"] == 0
    assert all(entry is not None for name, entry in figures.items() if "real-time" in name)


def test_the_summary_page_holds_every_figure_and_a_curve_per_kind(tmp_path):
    report = _report({"transform": [_transform(30, 10)]})
    other = {**_report({"transform": [_transform(300, 100)]}), "scale": "default",
             "sizes": SCALES["default"].__dict__}  # fmt: skip
    (tmp_path / "default.json").write_text(json.dumps(other))
    page = write_html(report, tmp_path / "small.html", tmp_path).read_text()
    assert "transform (TFT on Beam)" in page and "NOT met" in page
    assert page.count("<img") == 2  # time and memory: the two kinds with points
    # what the regression check scales this run's times by: the median of its readings
    page = write_html(_readings(report, 200.0, 50.0), tmp_path / "small.html", tmp_path)
    assert "the run's readings (at start, at end and in each step): matmul 50.0" in (
        page.read_text()
    )
    # and how the comparison on the page was scaled: a run checked before the check took the
    # median of each run's readings holds no calibration of the committed run
    scaled = "calibrations (each the median of its run's readings)"
    assert scaled in page.read_text()  # nothing compared: what the check would do
    against = {"file": "default.json", "commit": "c", "machine": {}}
    old = write_html({**report, "against": against}, tmp_path / "old.html", tmp_path)
    assert "calibrations (their readings at start)" in old.read_text()
    against["calibration"] = {"matmul_gflops": 70.0}
    new = write_html({**report, "against": against}, tmp_path / "new.html", tmp_path)
    assert scaled in new.read_text() and "matmul_gflops': 70.0" in new.read_text()
    # each run's vector instructions, where it recorded them
    against["machine"] = {"vector_isa": "AVX2"}
    report["machine"]["start"] = {**report["machine"]["start"], "vector_isa": "AVX-512",
                                  "cpu_caches": "L2 <2048K>"}  # fmt: skip
    page = write_html({**report, "against": against}, tmp_path / "isa.html", tmp_path).read_text()
    assert "start: 2 cpus (cpu, AVX-512; caches L2 &lt;2048K&gt;)" in page
    assert "(commit c, AVX2, calibration" in page


def test_every_curve_draws_figures_the_suite_keeps():
    names = {figure.name for figure in FIGURES}
    for _, _, series in CURVES:
        for name, size in series:
            assert name in names and size in SCALES["small"].__dict__, name


def test_a_strict_target_is_missed_at_its_bound():
    from tests.performance.suite import _meets

    assert _meets(99.9, "< 100") and not _meets(100, "< 100") and _meets(100, "<= 100")
    assert _meets(25.1, "> 25") and not _meets(25, "> 25") and _meets(25, ">= 25")


def _unit(rows):
    import numpy as np

    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_cone_statistics_on_vectors_worked_by_hand():
    import numpy as np

    from tests.performance.bench_serving import cone_statistics

    videos = np.array([[1.0, 0, 0], [0.8, 0.6, 0]])
    users = np.array([[0, 1.0, 0], [0, 0, 1.0], [0.6, 0.8, 0]])
    # users' cosines to the videos: (0, 0.6), (0, 0), (0.6, 0.96); each one's best: 0.6, 0, 0.96
    stats = cone_statistics(users, videos)
    assert stats["video_mean_length"] == pytest.approx(np.hypot(0.9, 0.3), abs=1e-4)
    assert stats["user_mean_length"] == pytest.approx(np.linalg.norm([0.2, 0.6, 1 / 3]), abs=1e-4)
    means = users.mean(0) @ videos.mean(0)
    assert stats["cosine_between_means"] == pytest.approx(
        means / np.linalg.norm(users.mean(0)) / np.linalg.norm(videos.mean(0)), abs=1e-4
    )
    assert stats["users_best_cosine_p50"] == pytest.approx(0.6, abs=1e-4)


def test_cone_statistics_tell_users_in_a_cone_of_their_own_from_users_among_the_videos():
    import numpy as np

    from tests.performance.bench_serving import cone_statistics

    rng = np.random.default_rng(0)
    axis_v, axis_u = np.eye(64)[0], np.eye(64)[1]  # orthogonal directions
    videos = _unit(24 * axis_v + rng.normal(size=(2_000, 64)))
    apart = cone_statistics(_unit(24 * axis_u + rng.normal(size=(50, 64))), videos)
    assert apart["video_mean_length"] > 0.9 and apart["user_mean_length"] > 0.9
    assert abs(apart["cosine_between_means"]) < 0.1
    assert apart["users_best_cosine_p50"] < 0.5  # no video near any user
    among = cone_statistics(_unit(24 * axis_v + rng.normal(size=(50, 64))), videos)
    assert among["cosine_between_means"] > 0.99
    assert among["users_best_cosine_p50"] > 0.9
    spread = cone_statistics(_unit(rng.normal(size=(50, 64))), _unit(rng.normal(size=(2_000, 64))))
    assert spread["video_mean_length"] < 0.1 and spread["user_mean_length"] < 0.25


def test_the_hnsw_recall_of_users_vectors_is_kept_against_the_videos():
    results = {"query_gap": {"hnsw_recall@100": {"users": 0.88, "videos": 0.99}}}
    figure = collect({"serving": [results]}, ("serving",), 200_000)[
        "serving: HNSW Recall@100 of users' vectors"]  # fmt: skip
    assert figure["median"] == 0.88 and figure["baseline"]["median"] == 0.99
    assert figure["ratio"]["median"] == round(0.88 / 0.99, 4) and figure["bounded"] is True


def test_the_curves_take_each_figure_from_the_newest_run_of_its_scale(tmp_path):
    def run(scale, videos, at, **figures):
        figures = {name: None if value is None else {"median": value}
                   for name, value in figures.items()}  # fmt: skip
        return {"scale": scale, "sizes": {"videos": videos}, "machine": {"start": {"at": at}},
                "figures": figures}  # fmt: skip

    # The newest xl file sorts neither first nor last by name: the order is by time. One
    # without a start time counts as the oldest.
    files = {
        "xl.a.json": run("xl", 10**6, "2026-12-05T10:00", refresh=700, serving=50),
        "xl.b.json": run("xl", 10**6, "2026-12-06T09:00", refresh=440, serving=None),
        "xl.c.json": {**run("xl", 10**6, "", refresh=999, serving=1, memory=5), "machine": {}},
        "large.json": run("large", 200_000, "2026-12-06T06:00", refresh=67, serving=36),
        "large.refresh.partial.json": run("large", 200_000, "2026-12-06T08:00", refresh=52),
    }
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    (tmp_path / "suite.lock").write_text("not json")
    this_run = run("default", 32_304, "2026-12-06T10:00", refresh=20)
    reports = scale_reports(tmp_path, this_run)
    assert [r["scale"] for r in reports] == ["default", "large", "xl"]
    medians = [{k: v["median"] for k, v in r["figures"].items()} for r in reports]
    assert medians == [{"refresh": 20}, {"refresh": 52, "serving": 36},
                       {"refresh": 440, "serving": 50, "memory": 5}]  # fmt: skip
    # This run's own scale: its figures first, the newest file of the scale fills the rest.
    large_now = run("large", 200_000, "2026-12-07T00:00", serving=30)
    large = next(r for r in scale_reports(tmp_path, large_now) if r["scale"] == "large")
    assert large["figures"] == {"serving": {"median": 30}, "refresh": {"median": 52}}
