"""A migration plan for people: `swiperec migration status` (text) and the dashboard's
/migration page (HTML), from `swiperec.migration.plan.get`'s dict."""

from __future__ import annotations

import html
from datetime import UTC


def render_text(plan: dict) -> str:
    """`swiperec migration status`: the plan, its stages (which one trains, which is live) and
    its events, each gate with the real-user figures it compared."""
    config = plan["config"]
    live = plan["live_stage"]
    out = [
        f"migration plan {plan['name']} ({plan['state']}), created by {plan['created_by']} "
        f"{plan['created_at'].astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        f"ratings (unless a stage sets its own): like >= {config.like_rating}, nope <= "
        f"{config.nope_rating}; entry counted over the last {config.window_days} days",
        f"training uses stage {plan['stage']}; live (the version serving, {plan['serving']}, "
        f"was trained at): " + ("none of the plan's stages" if live is None else f"stage {live}"),
        "",
        "  stage  pseudo weight  like/nope  min real users  min real swipes  gate (vs serving)",
    ]
    for i, stage in enumerate(config.stages):
        mark = ("live " if i == live else "") + ("<- training" if i == plan["stage"] else "")
        mix = config.mix(i)
        out.append(
            f"  {i:>5}  {stage.pseudo_user_weight:>13g}  {mix['like_rating']:>4}/"
            f"{mix['nope_rating']:<4}  {stage.min_real_users:>14,}  "
            f"{stage.min_real_swipes:>15,}  AUC -{stage.max_auc_drop:g}, R@50 "
            f"-{stage.max_recall_drop:.0%}  {mark}"
        )
    if config.calibration.get("levels"):
        from swiperec.migration.calibrate import render_text as calibration_text

        out += ["", "the plan's ratings and weights from " + calibration_text(config.calibration)]
    out += ["", "events:"]
    for e in plan["events"]:
        version = f" {e['model_version']}" if e["model_version"] else ""
        out.append(
            f"  {e['at'].astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC  {e['event']:<11} "
            f"stage {e['stage']}{version}  "
            f"{e['decided_by']}: {e['reason'] or ''}"
        )
        comparison = (e["evidence"] or {}).get("comparison")
        if comparison and comparison.get("models"):
            for name, m in comparison["models"].items():
                out.append(
                    f"      {name}: real users' AUC like vs nope {m['auc_like_vs_nope']:.4f}, "
                    f"Recall@50 {m['recall@50']:.4f} ({comparison['users']} users)"
                )
    return "\n".join(out)


def _gate_figures(event: dict) -> str:
    comparison = (event["evidence"] or {}).get("comparison") or {}
    return "<br>".join(
        f"{html.escape(name)}: AUC {m['auc_like_vs_nope']:.4f}, R@50 {m['recall@50']:.4f}"
        for name, m in (comparison.get("models") or {}).items()
    )


def render_html(plan: dict | None, css: str = "") -> str:
    """The dashboard page: the plan's stages and where it is, then every event."""
    head = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>swiperec '
        f'migration</title><style>{css}</style></head><body><p><a href="/">&larr; dashboard</a>'
        "</p><h1>Training data: from pseudo-users to real users</h1>"
    )
    if plan is None:
        return head + "<p>No migration plan (swiperec migration plan).</p></body></html>\n"
    config, live = plan["config"], plan["live_stage"]
    stages = "".join(
        f"<tr><td>{i}</td><td>{s.pseudo_user_weight:g}</td><td>{config.mix(i)['like_rating']}"
        f" / {config.mix(i)['nope_rating']}</td><td>{s.min_real_users:,}</td>"
        f"<td>{s.min_real_swipes:,}</td><td>-{s.max_auc_drop:g} / -{s.max_recall_drop:.0%}</td>"
        f"<td>{'live' if i == live else ''}{' training' if i == plan['stage'] else ''}</td></tr>"
        for i, s in enumerate(config.stages)
    )
    events = "".join(
        f"<tr><td>{e['at'].astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC</td><td>{e['event']}</td>"
        f"<td>{e['stage']}</td>"
        f"<td>{html.escape(e['model_version'] or '')}</td><td>{html.escape(e['decided_by'])}"
        f"</td><td>{html.escape(e['reason'] or '')}</td><td>{_gate_figures(e)}</td></tr>"
        for e in reversed(plan["events"])
    )
    return (
        head + f"<p>Plan <b>{html.escape(plan['name'])}</b> ({plan['state']}): training uses stage "
        f"{plan['stage']}; the version serving ({html.escape(str(plan['serving']))}) was "
        + ("not trained under this plan" if live is None else f"trained at stage {live}")
        + f". Ratings: like &ge; {config.like_rating}, nope &le; {config.nope_rating}; entry "
        f"counted over the last {config.window_days} days.</p>"
        "<table><thead><tr><th>stage</th><th>pseudo-user weight</th><th>like / nope</th>"
        "<th>min real users</th>"
        "<th>min real swipes</th><th>gate: AUC / Recall@50 drop</th><th></th></tr></thead>"
        f"<tbody>{stages}</tbody></table><h2>Decisions</h2><table><thead><tr><th>at</th>"
        "<th>event</th><th>stage</th><th>version</th><th>by</th><th>reason</th>"
        f"<th>real users (gate)</th></tr></thead><tbody>{events}</tbody></table>"
        + _calibration_html(config.calibration)
        + "</body></html>\n"
    )


def _calibration_html(calibration: dict) -> str:
    if not calibration.get("levels"):
        return ""
    from swiperec.migration.calibrate import render_text as calibration_text

    return (
        "<h2>Calibration the plan was made with</h2>"
        f"<pre>{html.escape(calibration_text(calibration))}</pre>"
    )
