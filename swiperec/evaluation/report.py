"""The evaluator's results as one self-contained HTML page, so people can look rather than read.

    html_text = render_report(results, "gs://bucket/run/report.html", blessing=blessing)

`results` is the dict `evaluate`/`read_results` produce; `blessing` (optional) is
`{"blessed": bool, "reasons": [str], "checks": [{"name", "passed", "value", "limit"}]}`.
Plots are drawn with matplotlib's Agg canvas (no pyplot global state) and inlined as base64 PNGs;
there are no external assets or scripts. Every string is HTML-escaped; undefined metrics (None or
NaN) show as "–". Missing sections are left out rather than failing.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

TASKS = ("like_vs_all", "like_vs_nope", "like_vs_sampled")
KS = (10, 50, 100)
DASH = "–"
CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,thead tr:first-child th:first-child{text-align:left}
tr.fail td{background:#fde8e8}
.meta{color:#555}.meta code{font-size:.9em}
.banner{padding:.8em 1.2em;font-size:1.4em;font-weight:bold;border-radius:6px;margin:1em 0}
.blessed{background:#e3f6e5;color:#1b5e20;border:2px solid #2e7d32}
.not-blessed{background:#fde8e8;color:#8e1b1b;border:2px solid #c62828}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots img{border:1px solid #eee;max-width:100%}
"""


def _text(value) -> str:
    return html.escape(str(value))


def _fmt(value, digits: int = 3) -> str:
    """A cell's text, escaped: numbers rounded, None/NaN as the dash."""
    if value is None:
        return DASH
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        return DASH if math.isnan(value) else f"{value:.{digits}f}"
    return _text(value)


def _get(mapping, *keys):
    """mapping[k1][k2]... or None when any level is missing."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _table(headers, rows, row_classes=None) -> str:
    """A table; headers are plain strings, cells are already-escaped HTML (use `_fmt`)."""
    head = "".join(f"<th>{_text(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _floats(values) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=np.float64)


def _image(fig: Figure, alt: str) -> str:
    """The figure as an inline PNG <img>."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_text(alt)}">'


def _figure(width: float = 5.5, height: float = 4.0) -> Figure:
    return Figure(figsize=(width, height), dpi=90, layout="constrained")


def _curve_plot(curves: dict, colours: dict, kind: str) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    x_key, y_key = ("fpr", "tpr") if kind == "roc" else ("recall", "precision")
    for name, curve in curves.items():
        x, y = _floats(_get(curve, kind, x_key)), _floats(_get(curve, kind, y_key))
        if len(x) and len(x) == len(y):
            ax.plot(x, y, label=name, color=colours.get(name))
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, like vs all")
    else:
        ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, like vs all")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right" if kind == "roc" else "upper right", fontsize="small")
    ax.grid(alpha=0.3)
    what = "ROC curves" if kind == "roc" else "Precision-recall curves"
    return _image(fig, f"{what} for like vs all, one line per scorer: {', '.join(curves)}")


def _bars(ax, groups, values: dict, colours: dict) -> None:
    """Grouped bars: one group per x label, one bar per scorer (NaN bars are left out)."""
    width = 0.8 / max(len(values), 1)
    x = np.arange(len(groups))
    for i, (name, ys) in enumerate(values.items()):
        offset = (i - (len(values) - 1) / 2) * width
        ax.bar(x + offset, _floats(ys), width, label=name, color=colours.get(name))
    ax.set_xticks(x, [str(g) for g in groups])
    ax.grid(axis="y", alpha=0.3)


def _recall_plot(retrieval: dict, colours: dict) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    values = {name: [_number(_get(r, f"recall@{k}")) for k in KS] for name, r in retrieval.items()}
    _bars(ax, [f"K={k}" for k in KS], values, colours)
    ax.set(ylabel="Recall@K", title="Recall@K per scorer")
    ax.legend(fontsize="small")
    return _image(fig, "Grouped bars of Recall@10, @50 and @100 per scorer")


def _number(value) -> float:
    return float(value) if isinstance(value, numbers.Real) else math.nan


def _score_plot(distributions: dict, threshold) -> str:
    edges = _floats(distributions.get("bin_edges"))
    fig = _figure()
    ax = fig.add_subplot()
    used = np.zeros(max(len(edges) - 1, 0), dtype=bool)
    for name, colour in (("like", "C2"), ("nope", "C3"), ("sampled", "C7")):
        counts = _floats(distributions.get(name))
        if len(counts) and len(counts) == len(used):
            total = counts.sum()
            share = counts / total if total > 0 else counts
            ax.stairs(share, edges, label=f"{name} (n={int(total)})", color=colour, linewidth=1.5)
            used |= counts > 0
    if used.any():  # zoom to the occupied bins (a young model's scores crowd together)
        first, last = np.flatnonzero(used)[[0, -1]]
        margin = 2 * (edges[1] - edges[0])
        ax.set_xlim(edges[first] - margin, edges[last + 1] + margin)
    threshold = _number(threshold)
    if not math.isnan(threshold):
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="model score (like logit)", ylabel="share of group", title="Model scores")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _image(
        fig,
        "Step histograms of the model's scores for likes, nopes and sampled videos,"
        " with the decision threshold as a vertical line",
    )


def _segment_plot(segments: dict, scorers, colours: dict) -> str:
    fig = _figure(11, 4.5)
    names = list(segments)
    panels = {
        "AUC-ROC, like vs all": ("classification", "like_vs_all", "roc_auc"),
        "Recall@50": ("retrieval", "recall@50"),
    }
    for i, (label, path) in enumerate(panels.items()):
        ax = fig.add_subplot(1, 2, i + 1)
        values = {s: [_number(_get(segments[g], s, *path)) for g in names] for s in scorers}
        _bars(ax, names, values, colours)
        ax.tick_params(axis="x", labelrotation=25, labelsize="small")
        ax.set(title=f"{label} per segment", ylim=(0, 1.05))
    fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncols=len(scorers))
    return _image(fig, "Grouped bars per segment and scorer: AUC-ROC like vs all, and Recall@50")


def _header(results: dict, title: str) -> str:
    rows = [
        ("test period start", results.get("test_start")),
        ("validation start", results.get("validation_start")),
        ("snapshot content hash", results.get("snapshot_content_hash")),
    ]
    rows += list((results.get("counts") or {}).items())
    items = "".join(
        f"<li>{_text(str(k).replace('_', ' '))}: <code>{_fmt(v)}</code></li>" for k, v in rows
    )
    return f'<h1>{_text(title)}</h1><ul class="meta">{items}</ul>'


def _blessing(blessing: dict) -> str:
    blessed = bool(blessing.get("blessed"))
    css, word = ("blessed", "BLESSED") if blessed else ("not-blessed", "NOT BLESSED")
    parts = [f'<div class="banner {css}">{word}</div>']
    reasons = blessing.get("reasons") or []
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{_text(r)}</li>" for r in reasons) + "</ul>")
    checks = blessing.get("checks") or []
    if checks:
        rows = [
            [_text(c.get("name")), "pass" if c.get("passed") else "<b>FAIL</b>"]
            + [_fmt(c.get(key), 4) for key in ("value", "limit")]
            + [_best_baseline(c.get("best_baseline"))]
            for c in checks
        ]
        classes = ["" if c.get("passed") else "fail" for c in checks]
        header = ["check", "result", "value", "limit", "best baseline"]
        parts.append(_table(header, rows, classes))
    return "".join(parts)


def _best_baseline(best: dict | None) -> str:
    """The baseline a check compared the model with (the best of them), or empty."""
    if not best:
        return ""
    return f"{_text(best.get('name'))} {_fmt(best.get('value'), 4)}"


def _headline(results: dict) -> str:
    classification = results.get("classification") or {}
    head = (
        '<tr><th rowspan="2">scorer</th>'
        + "".join(f'<th colspan="2">{_text(t)}</th>' for t in TASKS)
        + '<th rowspan="2">examples (like vs all)</th></tr>'
    )
    head += "<tr>" + "<th>AUC-ROC</th><th>AUC-PR</th>" * len(TASKS) + "</tr>"
    rows = []
    for name, tasks in classification.items():
        cells = "".join(
            f"<td>{_fmt(_get(tasks, t, 'roc_auc'))}</td><td>{_fmt(_get(tasks, t, 'pr_auc'))}</td>"
            for t in TASKS
        )
        examples = _fmt(_get(tasks, "like_vs_all", "examples"))
        rows.append(f"<tr><td>{_text(name)}</td>{cells}<td>{examples}</td></tr>")
    share = results.get("share_of_achievable_auc")
    if share:
        cells = "".join(f'<td colspan="2">{_fmt(share.get(t))}</td>' for t in TASKS)
        label = "share of achievable AUC-ROC (model vs oracle)"
        rows.append(f"<tr><td>{label}</td>{cells}<td></td></tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _keyed_table(per_scorer: dict) -> str:
    """Rows per scorer, one column per metric key (union, in first-seen order)."""
    keys = list(dict.fromkeys(k for metrics in per_scorer.values() for k in (metrics or {})))
    rows = [
        [_text(name)] + [_fmt(_get(metrics, k), 0 if k.startswith("users") else 3) for k in keys]
        for name, metrics in per_scorer.items()
    ]
    return _table(["scorer", *(k.replace("_", " ") for k in keys)], rows)


def _segments_table(segments: dict) -> str:
    columns = [
        ("AUC-ROC all", ("classification", "like_vs_all", "roc_auc")),
        ("AUC-PR all", ("classification", "like_vs_all", "pr_auc")),
        ("AUC-ROC nope", ("classification", "like_vs_nope", "roc_auc")),
        ("AUC-ROC sampled", ("classification", "like_vs_sampled", "roc_auc")),
        ("examples", ("classification", "like_vs_all", "examples")),
        *((f"Recall@{k}", ("retrieval", f"recall@{k}")) for k in KS),
        ("NDCG@50", ("retrieval", "ndcg@50")),
        ("users", ("retrieval", "users_evaluated")),
    ]
    rows = [
        [f"{_text(segment)} / {_text(name)}"]
        + [_fmt(_get(entry, *p), 0 if c == "users" else 3) for c, p in columns]
        for segment, scorers in segments.items()
        for name, entry in scorers.items()
    ]
    return _table(["segment / scorer", *(c for c, _ in columns)], rows)


def _confusion(matrix, threshold) -> str:
    (tn, fp), (fn, tp) = matrix
    rows = [["actual nope/sampled", _fmt(tn), _fmt(fp)], ["actual like", _fmt(fn), _fmt(tp)]]
    note = f"<p>The model at threshold {_fmt(threshold, 4)} (its best F1, like vs all).</p>"
    return note + _table(["", "predicted not like", "predicted like"], rows)


def render_report(
    results: dict,
    path: str | None = None,
    blessing: dict | None = None,
    title: str = "swiperec model evaluation",
) -> str:
    """The report's HTML; also written to `path` (local or gs://) when given."""
    classification = results.get("classification") or {}
    retrieval = results.get("retrieval") or {}
    segments = results.get("segments") or {}
    curves = results.get("curves") or {}
    scorers = list(dict.fromkeys([*classification, *retrieval, *curves]))
    colours = {name: f"C{i % 10}" for i, name in enumerate(scorers)}

    body = [_header(results, title)]
    if blessing is not None:
        body.append(_blessing(blessing))
    body += ["<h2>Headline: classification</h2>", _headline(results)]

    plots = []
    if curves:
        plots += [_curve_plot(curves, colours, "roc"), _curve_plot(curves, colours, "pr")]
    if retrieval:
        plots.append(_recall_plot(retrieval, colours))
    distributions = results.get("score_distributions") or {}
    if distributions.get("bin_edges"):
        plots.append(_score_plot(distributions, results.get("threshold")))
    if segments:
        plots.append(_segment_plot(segments, scorers, colours))
    if plots:
        body += ["<h2>Plots</h2>", f'<div class="plots">{"".join(plots)}</div>']

    if retrieval:
        body += ["<h2>Retrieval</h2>", _keyed_table(retrieval)]
    if results.get("beyond_accuracy"):
        body += ["<h2>Beyond accuracy</h2>", _keyed_table(results["beyond_accuracy"])]
    if segments:
        body += ["<h2>Segments</h2>", _segments_table(segments)]
    if results.get("confusion_matrix"):
        body += [
            "<h2>Confusion matrix</h2>",
            _confusion(results["confusion_matrix"], results.get("threshold")),
        ]

    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_text(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    if path:
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "w") as handle:
            handle.write(page)
    return page
