"""The performance suite's HTML summary: one self-contained page per run.

The figures beside their same-run baselines, ratios and targets, the comparison with the
committed results of the same scale, each step's wall time, and cost-vs-scale curves drawn from
every scale's results files under `results/suite/` (each figure from this run, for its own
scale, else from the newest file of the scale that holds it).
Plots are matplotlib's Agg canvas inlined as PNGs, as in the evaluation report.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from swiperec.evaluation.report import _figure, _image, _table
from tests.performance.suite import run_calibration

# Curves: title, y label, [(figure name, which scale size is its x)]. Training's x is the size
# of the data the model was trained on (the default data's at large and xl).
CURVES = (
    ("Time", "seconds", (
        ("transform (TFT on Beam)", "videos"),
        ("training: whole run", "train_videos"),
        ("refresh, end to end", "videos"),
        ("refresh: video set keys, HNSW, attach", "videos"),
    )),
    ("Serving p95 over HTTP", "ms", (
        ("serving p95 over HTTP, 0 decisions", "videos"),
        ("serving p95 over HTTP, 50 decisions", "videos"),
        ("serving p95 over HTTP, 1000 decisions", "videos"),
        ("HTTP p95, 32 clients", "videos"),
    )),
    ("Peak memory", "MB", (
        ("transform: peak RSS", "videos"),
        ("training: peak RSS", "train_videos"),
        ("refresh: peak RSS", "videos"),
        ("refresh: PostgreSQL peak RSS", "videos"),
    )),
)  # fmt: skip


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else html.escape(str(value))


def scale_reports(suite_dir: Path, report: dict) -> list[dict]:
    """Every scale's figures, ordered by catalogue size: this run's for its own scale, and for
    each scale each figure from the newest results file under `suite_dir` that holds it (a
    scale's partial runs, e.g. `--steps refresh`, each hold some of its figures)."""
    runs = {}
    for path in sorted(suite_dir.glob("*.json")):
        try:
            other = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(other, dict) and "figures" in other:
            runs.setdefault(other.get("scale", path.stem), []).append(other)
    merged = []
    for scale in {report["scale"], *runs}:
        newest = sorted(runs.get(scale, []), key=_started, reverse=True)
        ordered = [report, *newest] if scale == report["scale"] else newest
        figures = {}
        for run in ordered:
            for name, value in (run.get("figures") or {}).items():
                if value is not None:
                    figures.setdefault(name, value)
        merged.append({**ordered[0], "figures": figures})
    return sorted(merged, key=lambda r: r["sizes"]["videos"])


def _started(report: dict) -> str:
    return ((report.get("machine") or {}).get("start") or {}).get("at") or ""


def curve_plots(reports: list[dict]) -> str:
    parts = []
    for title, unit, series in CURVES:
        fig = _figure(5.5, 4.0)
        ax = fig.add_subplot()
        drawn = 0
        for name, size in series:
            points = sorted(
                (r["sizes"][size], r["figures"][name]["median"])
                for r in reports
                if (r.get("figures") or {}).get(name)
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=name)
                drawn += 1
        if not drawn:
            continue
        ax.set(xscale="log", yscale="log", xlabel="videos", ylabel=unit, title=title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
        scales = ", ".join(f"{r['scale']} ({r['sizes']['videos']:,})" for r in reports)
        parts.append(_image(fig, f"{title} against catalogue size over the scales {scales}"))
    return "".join(parts)


def figures_table(report: dict) -> str:
    comparison = report.get("comparison", {})
    rows, classes = [], []
    for name, entry in report["figures"].items():
        check = comparison.get(name, {})
        if entry is None:
            rows.append([html.escape(name), "missing", *["-"] * 6])
            classes.append("bad")
            continue
        ratio = entry.get("ratio")
        base = entry.get("baseline")
        target = entry.get("target")
        target_text = "-"
        if target:
            target_text = f"{html.escape(target)}: {'met' if entry['meets_target'] else 'NOT met'}"
        change = check.get("change")
        rows.append([
            html.escape(name),
            f"{_num(entry['median'])} {html.escape(entry['unit'])} (min {_num(entry['min'])})",
            f"{_num(base['median'])} ({html.escape(base['name'])})" if base else "-",
            f"{_num(ratio['median'])}x" if ratio else "-",
            target_text,
            _num(check.get("committed")),
            "-" if change is None else f"{change:+.0%} (band {check['band']:.0%})",
            "REGRESSED" if check.get("regressed") else html.escape(
                check.get("why", "within the band" if check else "-")
            ),
        ])  # fmt: skip
        bad = check.get("regressed") or (target and not entry["meets_target"])
        classes.append("bad" if bad else "")
    headers = ["figure", "median", "baseline, same run", "ratio", "target", "committed",
               "change (+ is worse)", "check"]  # fmt: skip
    return _table(headers, rows, classes)


def steps_table(report: dict) -> str:
    rows = [
        [html.escape(step), ", ".join(f"{s:.0f} s" for s in entry["seconds"]),
         ", ".join(map(str, entry["exit_codes"]))]
        for step, entry in report["steps"].items()
    ]  # fmt: skip
    return _table(["step", "wall time per run", "exit codes"], rows)


def machine_text(report: dict) -> str:
    parts = []
    for when, m in report["machine"].items():
        c = m.get("calibration", {})
        parts.append(
            f"{when}: {m['cpu_count']} cpus ({html.escape(m['cpu_model'])}"
            f"{', ' + html.escape(m['vector_isa']) if 'vector_isa' in m else ''}"
            f"{'; caches ' + html.escape(m['cpu_caches']) if 'cpu_caches' in m else ''}), "
            f"{m['memory_gb']} GB, load {m['load_average']}, matmul {c.get('matmul_gflops')} "
            f"GFLOP/s, Python loop {c.get('python_mops')} M/s"
        )
    c = run_calibration(report)
    parts.append(
        f"median of the run's readings (at start, at end and in each step): matmul "
        f"{c.get('matmul_gflops')} GFLOP/s, Python loop {c.get('python_mops')} M/s"
    )
    return "<br>".join(parts)


def write_html(report: dict, path: Path, suite_dir: Path) -> Path:
    sizes = report["sizes"]
    against = report.get("against")
    against_text = "no committed results of this scale to compare with"
    # runs checked before the check took each run's median reading hold no `calibration` here
    scaled_by = ("their readings at start" if against and not against.get("calibration")
                 else "each the median of its run's readings")  # fmt: skip
    if against:
        m = against.get("machine") or {}
        against_text = (
            f"compared with {html.escape(against['file'])} (commit {against.get('commit')}, "
            f"{html.escape(m['vector_isa']) + ', ' if 'vector_isa' in m else ''}"
            f"calibration {against.get('calibration') or m.get('calibration')})"
        )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>swiperec performance suite, {html.escape(report["scale"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
tr.bad td {{ background: #fde2e1; }}
img {{ margin: 0.5em; }}
</style></head><body>
<h1>Performance suite: {html.escape(report["scale"])} scale</h1>
<p>{sizes["videos"]:,} videos, {sizes["users"]:,} users, {sizes["pseudo_users"]:,} reviewers;
model trained on {sizes["train_videos"]:,} videos; {report["repeats"]} run(s) of each step;
commit {html.escape(str(report.get("commit")))}.</p>
<p>{machine_text(report)}</p>
<p>{against_text}. Ratios are compared as measured; a time or a rate is worse only when worse
both as measured and once scaled by the two runs' calibrations ({scaled_by}), and the
committed column shows the more lenient of the two; a change beyond the band is flagged.</p>
<h2>Figures</h2>
{figures_table(report)}
<h2>Cost against scale</h2>
{curve_plots(scale_reports(suite_dir, report))}
<h2>Steps</h2>
{steps_table(report)}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
