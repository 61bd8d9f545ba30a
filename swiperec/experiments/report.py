"""An experiment's report: text for a terminal, one self-contained HTML page for people.

    print(render_text(result, experiment, events))
    page = render_html(result, experiment, events, looks)   # looks: analysis.history(...)

Both show the arms and their users, the sample-ratio check, the primary metric and every
guardrail of each arm against control (fixed-horizon CI, always-valid confidence sequence and
p-value, the guardrail's margin and verdict), coverage, and the decisions recorded. The HTML page
adds, per metric, the effect and its confidence sequence over time (matplotlib, inlined PNG).
"""

from __future__ import annotations

import math
from datetime import UTC

from swiperec.evaluation.report import CSS, _figure, _fmt, _image, _table, _text

PERCENT = {"like_rate", "error_rate", "slow_rate"}


def _value(metric: str, value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * value:.2f} %" if metric in PERCENT else f"{value:.3f}"


def _interval(metric: str, pair) -> str:
    if not pair:
        return "–"
    return f"[{_value(metric, pair[0])}, {_value(metric, pair[1])}]"


def _rows(comparison: dict) -> list[dict]:
    return [
        {**comparison["primary"], "role": "primary"},
        *({**g, "role": "guardrail"} for g in comparison["guardrails"]),
    ]


def _arm_lines(experiment: dict, result: dict) -> list[str]:
    lines = []
    for arm, info in experiment["arms"].items():
        share = (info["to"] - info["from"]) / 100
        note = "" if info["analysed"] else " (holdout: not analysed)"
        totals = result["totals"].get(arm, {})
        lines.append(
            f"  {arm:<10} {info['version']:<28} {share:6.2f} % of its traffic  "
            f"users {result['users'].get(arm, 0):>6}  served {totals.get('served', 0):>7}  "
            f"answered {totals.get('answered', 0):>7}{note}"
        )
    return lines


def render_text(result: dict, experiment: dict, events: list[dict]) -> str:
    srm = result["srm"]
    out = [
        f"experiment {experiment['name']} ({experiment['kind']}, {experiment['state']}"
        + (f", stage {experiment['stage']}" if experiment["kind"] == "rollout" else "")
        + ")",
        f"window {result['window'][0]} .. {result['window'][1]}; traffic buckets "
        f"[{experiment['traffic_from']}, {experiment['traffic_to']})",
        *_arm_lines(experiment, result),
        f"sample ratio: always-valid p {srm['sequential_pvalue']:.3g} (chi2 {srm['chi2']:.3f}, "
        f"one-look p {srm['pvalue']:.3g}) -> "
        + (
            "MISMATCH: the assignment is broken; the results below are not valid"
            if srm["mismatch"]
            else "ok"
        ),
    ]
    if result["crossovers"]:
        out.append(f"users seen in two arms: {result['crossovers']}")
    for arm, comparison in result["comparisons"].items():
        out.append(
            f"\n{arm} vs control (minimum sample "
            f"{'reached' if comparison['min_sample_reached'] else 'not reached'})"
        )
        out.append(
            f"  {'metric':<20} {'control':>9} {arm:>9} {'effect':>9} "
            f"{'always-valid CI':>22} {'p(av)':>7}  verdict"
        )
        for row in _rows(comparison):
            metric = row["metric"]
            if row.get("status") != "ok":
                out.append(f"  {metric:<20} {row.get('status')}")
                continue
            verdict = row.get("verdict") or ("significant" if row["significant"] else "-")
            out.append(
                f"  {metric:<20} {_value(metric, row['control']):>9} "
                f"{_value(metric, row['treatment']):>9} {_value(metric, row['effect']):>9} "
                f"{_interval(metric, row['sequential_ci']):>22} "
                f"{row['sequential_pvalue']:>7.3g}  {verdict}"
            )
        primary = comparison["primary"]
        if primary.get("status") == "ok" and primary.get("variance_reduction") is not None:
            out.append(
                f"  CUPED variance reduction on {primary['metric']}: "
                f"{100 * primary['variance_reduction']:.1f} %"
            )
        cover = comparison["coverage"]
        out.append(
            f"  coverage ratio {cover.get('ratio', float('nan')):.3f} "
            f"(margin {cover['margin']:.0%}): {cover['verdict']}"
        )
        for segment, row in comparison.get("segments", {}).items():
            users = ", ".join(f"{a} {n}" for a, n in row["users"].items())
            if row.get("status") != "ok":
                out.append(f"  segment {segment:<10} ({users}): {row.get('status')}")
                continue
            metric = row["metric"]
            out.append(
                f"  segment {segment:<10} ({users}): {metric} "
                f"{_value(metric, row['control'])} -> {_value(metric, row['treatment'])}, "
                f"effect {_value(metric, row['effect'])}, always-valid CI "
                f"{_interval(metric, row['sequential_ci'])}"
            )
    if events:
        out.append("\ndecisions")
        for e in events:
            out.append(
                f"  {e['at'].astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC {e['event']:<12} "
                f"{e['decided_by']}: {e['reason'] or ''}"
            )
    return "\n".join(out)


def _over_time(looks: list[dict], arm: str, metric: str) -> str | None:
    points = []
    for look in looks:
        comparison = look["comparisons"].get(arm)
        if not comparison:
            continue
        row = next((r for r in _rows(comparison) if r["metric"] == metric), None)
        if row and row.get("status") == "ok":
            points.append(
                (
                    look["window"][1][11:19],
                    row["effect"],
                    *row["sequential_ci"],
                    *row["ci"],
                    row.get("margin"),
                )
            )
    if len(points) < 2:
        return None
    fig = _figure(5.0, 3.2)
    ax = fig.add_subplot()
    x = range(len(points))
    clip = lambda v: max(min(v, 1e6), -1e6)  # noqa: E731 - an unbounded sequence at the start
    ax.fill_between(
        x,
        [clip(p[2]) for p in points],
        [clip(p[3]) for p in points],
        alpha=0.2,
        label="always-valid CI",
    )
    ax.plot(x, [p[4] for p in points], ":", color="C0", label="fixed-horizon CI")
    ax.plot(x, [p[5] for p in points], ":", color="C0")
    ax.plot(x, [p[1] for p in points], "o-", color="C0", label="effect")
    ax.axhline(0, color="#444", lw=0.8)
    if points[-1][6] is not None:
        ax.axhline(-points[-1][6], color="C3", lw=0.8, ls="--", label="margin")
        ax.axhline(points[-1][6], color="C3", lw=0.8, ls="--")
    finite = [v for p in points for v in (p[4], p[5]) if math.isfinite(v)]
    if finite:
        span = max(finite) - min(finite) or 1
        ax.set_ylim(min(finite) - span, max(finite) + span)
    ax.set_xticks(list(x), [p[0] for p in points], rotation=45, fontsize=7)
    ax.set_title(f"{metric}: {arm} - control", fontsize=9)
    ax.legend(fontsize=7)
    return _image(fig, f"{metric} over time")


def _segment_row(name: str, row: dict) -> list[str]:
    users = _text(", ".join(f"{a} {n}" for a, n in row["users"].items()))
    if row.get("status") != "ok":
        return [_text(name), users, _text(row.get("status")), "–", "–", "–"]
    metric = row["metric"]
    return [
        _text(name),
        users,
        _text(_value(metric, row["control"])),
        _text(_value(metric, row["treatment"])),
        _text(_value(metric, row["effect"])),
        _text(_interval(metric, row["sequential_ci"])),
    ]


def render_html(result: dict, experiment: dict, events: list[dict], looks: list[dict]) -> str:
    srm = result["srm"]
    body = [
        f"<h1>Experiment {_text(experiment['name'])}</h1>",
        f'<p class="meta">{_text(experiment["kind"])}, {_text(experiment["state"])}; window '
        f"{_text(result['window'][0])} .. {_text(result['window'][1])}</p>",
        "<h2>Arms</h2>",
        _table(
            ["arm", "version", "share of traffic", "users", "served", "answered", "analysed"],
            [
                [
                    _text(arm),
                    _text(info["version"]),
                    f"{(info['to'] - info['from']) / 100:.2f} %",
                    _fmt(result["users"].get(arm, 0)),
                    _fmt(result["totals"].get(arm, {}).get("served", 0)),
                    _fmt(result["totals"].get(arm, {}).get("answered", 0)),
                    _fmt(info["analysed"]),
                ]
                for arm, info in experiment["arms"].items()
            ],
        ),
        f'<div class="banner {"not-blessed" if srm["mismatch"] else "blessed"}">Sample ratio: '
        f"always-valid p = {srm['sequential_pvalue']:.3g} (chi-square, one look: "
        f"{srm['pvalue']:.3g}) "
        + ("&mdash; MISMATCH, results invalid" if srm["mismatch"] else "&mdash; ok")
        + "</div>",
    ]
    for arm, comparison in result["comparisons"].items():
        rows, classes = [], []
        for row in _rows(comparison):
            metric = row["metric"]
            if row.get("status") != "ok":
                rows.append(
                    [_text(metric), _text(row["role"])] + [_text(row.get("status"))] + ["–"] * 6
                )
                classes.append("")
                continue
            verdict = row.get("verdict") or ("significant" if row["significant"] else "-")
            rows.append(
                [
                    _text(metric),
                    _text(row["role"]),
                    _text(_value(metric, row["control"])),
                    _text(_value(metric, row["treatment"])),
                    _text(_value(metric, row["effect"])),
                    _text(_interval(metric, row["ci"])),
                    _text(_interval(metric, row["sequential_ci"])),
                    _fmt(row["sequential_pvalue"]),
                    _text(verdict),
                ]
            )
            classes.append("fail" if verdict == "breached" else "")
        body += [
            f"<h2>{_text(arm)} vs control</h2>",
            f"<p>Minimum sample {'reached' if comparison['min_sample_reached'] else 'not reached'}"
            f"; coverage ratio {_fmt(comparison['coverage'].get('ratio'))} "
            f"({_text(comparison['coverage']['verdict'])}).</p>",
            _table(
                [
                    "metric",
                    "role",
                    "control",
                    arm,
                    "effect",
                    "fixed-horizon CI",
                    "always-valid CI",
                    "p (always valid)",
                    "verdict",
                ],
                rows,
                classes,
            ),
        ]
        segments = comparison.get("segments", {})
        if segments:
            body += [
                "<h3>Primary metric by user segment</h3>",
                _table(
                    ["segment", "users", "control", arm, "effect", "always-valid CI"],
                    [_segment_row(name, row) for name, row in segments.items()],
                ),
            ]
        plots = [p for r in _rows(comparison) if (p := _over_time(looks, arm, r["metric"]))]
        if plots:
            body.append(f'<div class="plots">{"".join(plots)}</div>')
    if events:
        body += [
            "<h2>Decisions</h2>",
            _table(
                ["at", "event", "stage", "decided by", "reason"],
                [
                    [
                        _text(f"{e['at'].astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"),
                        _text(e["event"]),
                        _fmt(e["stage"]),
                        _text(e["decided_by"]),
                        _text(e["reason"] or ""),
                    ]
                    for e in events
                ],
            ),
        ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>experiment {_text(experiment['name'])}</title><style>{CSS}</style></head>\n"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
