"""The experiments' pages of the monitoring dashboard (`swiperec monitor serve` mounts them).

    GET /experiments           every experiment and rollout: kind, state, arms, a link each
    GET /experiments/{name}    its report (report.render_html): arms, SRM, each metric with its
                               always-valid interval and verdict, the effect over time, decisions

The dashboard lives below this package (monitoring), so it takes these routes from its caller
rather than importing them. Each request reads the database as it is now, on its own
connection.
"""

from __future__ import annotations

import html
from datetime import UTC

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from swiperec.db import connect
from swiperec.evaluation.report import CSS
from swiperec.experiments.analysis import history
from swiperec.experiments.design import ExperimentError, events, get, list_experiments
from swiperec.experiments.report import render_html


def routes(database_url: str, *, looks: int = 6) -> list[Route]:
    def read_list() -> str:
        conn = connect(database_url)
        try:
            experiments = list_experiments(conn)
        finally:
            conn.close()

        def row(e: dict) -> str:
            arms = ", ".join(f"{arm}={info['version']}" for arm, info in e["arms"].items())
            name = html.escape(e["name"])
            return (
                f'<tr><td><a href="/experiments/{name}">{name}</a></td><td>{e["kind"]}</td>'
                f"<td>{e['state']}</td><td>{html.escape(arms)}</td>"
                f"<td>{e['started_at'].astimezone(UTC):%Y-%m-%d %H:%M} UTC</td></tr>"
            )

        rows = "".join(row(e) for e in reversed(experiments))
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>swiperec experiments</title><style>{CSS}</style></head><body>"
            '<p><a href="/">&larr; dashboard</a></p><h1>Experiments and rollouts</h1>'
            + (
                "<table><thead><tr><th>name</th><th>kind</th><th>state</th><th>arms</th>"
                f"<th>started</th></tr></thead><tbody>{rows}</tbody></table>"
                if rows
                else "<p>No experiments yet (swiperec experiment start / rollout start).</p>"
            )
            + "</body></html>\n"
        )

    def read_report(name: str) -> str | None:
        conn = connect(database_url)
        try:
            experiment = get(conn, name)
            seen = history(conn, name, looks=looks)  # its last look: the analysis now
            return render_html(seen[-1], experiment, events(conn, name), seen)
        except ExperimentError:
            return None
        finally:
            conn.close()

    async def listing(request: Request):
        return HTMLResponse(await run_in_threadpool(read_list))

    async def report(request: Request):
        page = await run_in_threadpool(read_report, request.path_params["name"])
        if page is None:
            return HTMLResponse("<p>No such experiment.</p>", status_code=404)
        return HTMLResponse(page.replace("<body>\n", '<body>\n<p><a href="/experiments">'
                                         "&larr; experiments</a></p>", 1))  # fmt: skip

    return [Route("/experiments", listing), Route("/experiments/{name}", report)]
