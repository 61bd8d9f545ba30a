"""The migration's page of the monitoring dashboard (`swiperec monitor serve` mounts it).

    GET /migration    the active plan (else the latest): stages, where it is, its decisions

Like the experiments' pages, the dashboard takes this route from its caller; each request reads
the database as it is now, on its own connection.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from swiperec.db import connect
from swiperec.evaluation.report import CSS
from swiperec.migration.plan import get, latest
from swiperec.migration.report import render_html


def routes(database_url: str) -> list[Route]:
    def read() -> str:
        conn = connect(database_url)
        try:
            plan = get(conn) or latest(conn)
        finally:
            conn.close()
        return render_html(plan, CSS)

    async def page(request: Request):
        return HTMLResponse(await run_in_threadpool(read))

    return [Route("/migration", page)]
