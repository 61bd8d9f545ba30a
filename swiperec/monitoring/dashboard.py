"""`swiperec monitor serve`: the dashboard, its JSON API and the Prometheus exposition.

    GET /                          the dashboard (dashboard.html): a metric over time per model
                                   version and route with the alerts marked, the latest bucket
                                   by segment, the alerts, a user's served lists with reasons
    GET /assets/plotly.min.js      the chart library, from the installed plotly package (no CDN)
    GET /api/overview              bucket sizes, metric names, segments, the latest bucket
    GET /api/series?metric=&segment=&bucket_seconds=&buckets=
    GET /api/segments?metric=&bucket_seconds=
    GET /api/alerts?limit=
    GET /api/users/{user_id}/served?limit=
    GET /metrics                   the latest bucket of every series, in Prometheus' format
    (and the routes the caller adds: `swiperec monitor serve` adds the experiments' pages)

Read-only: it reads what `swiperec monitor run` wrote; each request takes a connection from a
small pool (`DATABASE_URL` or the embedded server).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from swiperec.db import connect

PAGE = Path(__file__).with_name("dashboard.html")


def plotly_js() -> Path:
    """plotly.min.js of the installed plotly package."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.exists():
        raise FileNotFoundError(f"the installed plotly has no {path}")
    return path


class _Connections:
    """Up to `size` connections, made on demand and reused."""

    def __init__(self, url: str, size: int = 4):
        self._url, self._free, self._slots = url, queue.LifoQueue(), threading.Semaphore(size)

    @contextlib.contextmanager
    def cursor(self):
        self._slots.acquire()
        conn = None
        try:
            with contextlib.suppress(queue.Empty):
                conn = self._free.get_nowait()
            if conn is None or conn.closed:
                conn = connect(self._url, application_name="swiperec monitor serve")
            try:
                with conn.cursor() as cur:
                    yield cur
            finally:
                if not conn.closed:
                    conn.rollback()
                    self._free.put(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        while not self._free.empty():
            self._free.get_nowait().close()


def _iso(value):
    # In UTC, whatever the session's zone: plotly.js reads a time's wall clock, not its offset.
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


class QualityCollector:
    """The latest bucket of every series as gauges (prometheus_client's custom collector)."""

    def __init__(self, pool: _Connections):
        self.pool = pool

    def collect(self):
        labels = ["metric", "model_version", "route", "segment", "bucket_seconds"]
        value = GaugeMetricFamily("swiperec_quality", "Latest value", labels=labels)
        samples = GaugeMetricFamily("swiperec_quality_samples", "Its denominator", labels=labels)
        bucket = GaugeMetricFamily("swiperec_quality_bucket_start_seconds",
                                   "Start of its bucket", labels=labels)  # fmt: skip
        fired = GaugeMetricFamily("swiperec_alerts_fired", "Alerts fired so far, per rule",
                                  labels=["rule", "severity"])  # fmt: skip
        with self.pool.cursor() as cur:
            cur.execute(
                "select distinct on (bucket_seconds, model_version, route, segment, metric)"
                " metric, model_version, route, segment, bucket_seconds, value, samples,"
                " extract(epoch from bucket_start) from public.monitoring_metrics"
                " where bucket_start >= now() - interval '48 hours'"
                " order by bucket_seconds, model_version, route, segment, metric,"
                " bucket_start desc"
            )
            for metric, version, route, segment, size, v, n, start in cur.fetchall():
                series = [metric, version, route, segment, str(size)]
                if v is not None:
                    value.add_metric(series, float(v))
                samples.add_metric(series, float(n))
                bucket.add_metric(series, float(start))
            cur.execute(
                "select rule, severity, count(*) from public.monitoring_alerts group by 1, 2"
            )
            for rule, severity, count in cur.fetchall():
                fired.add_metric([rule, severity], float(count))
        yield from (value, samples, bucket, fired)


def create_app(database_url: str, extra_routes=()) -> Starlette:
    pool = _Connections(database_url)
    registry = CollectorRegistry()
    registry.register(QualityCollector(pool))

    def query(sql: str, params=()) -> list[dict]:
        with pool.cursor() as cur:
            cur.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [{n: _iso(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]

    async def page(request: Request):
        return HTMLResponse(PAGE.read_text())

    async def plotly(request: Request):
        return FileResponse(plotly_js(), media_type="text/javascript")

    def bucket_seconds(request: Request) -> int | None:
        raw = request.query_params.get("bucket_seconds")
        return int(raw) if raw and raw.isdigit() else None

    async def overview(request: Request):
        def read():
            def distinct(column: str) -> list:
                rows = query(f"select distinct {column} as v from public.monitoring_metrics"
                             " order by 1")  # fmt: skip
                return [r["v"] for r in rows]

            sizes, metrics = distinct("bucket_seconds"), distinct("metric")
            segments = distinct("segment")
            latest = query("select max(bucket_start) as latest from public.monitoring_metrics")
            return {"bucket_seconds": sizes, "metrics": metrics, "segments": segments,
                    "latest_bucket": latest[0]["latest"]}  # fmt: skip

        return JSONResponse(await run_in_threadpool(read))

    async def series(request: Request):
        metric = request.query_params.get("metric", "like_rate")
        segment = request.query_params.get("segment", "all")
        size = bucket_seconds(request)
        count = min(int(request.query_params.get("buckets", "168") or 168), 5000)

        def read():
            nonlocal size
            if size is None:
                rows = query("select min(bucket_seconds) as s from public.monitoring_metrics")
                size = rows[0]["s"]
            if size is None:
                return {"metric": metric, "segment": segment, "series": [], "alerts": []}
            rows = query(
                "select model_version, route, bucket_start, value, samples"
                " from public.monitoring_metrics where metric = %s and segment = %s"
                " and bucket_seconds = %s and bucket_start >= (select max(bucket_start)"
                " from public.monitoring_metrics where bucket_seconds = %s)"
                " - %s * %s * interval '1 second' order by model_version, route, bucket_start",
                (metric, segment, size, size, count, size),
            )
            grouped: dict[tuple, dict] = {}
            for r in rows:
                key = (r["model_version"], r["route"])
                entry = grouped.setdefault(key, {"model_version": key[0], "route": key[1],
                                                 "t": [], "value": [], "samples": []})  # fmt: skip
                entry["t"].append(r["bucket_start"])
                entry["value"].append(r["value"])
                entry["samples"].append(r["samples"])
            alerts = query(
                "select bucket_start, rule, severity, model_version, route, value, message"
                " from public.monitoring_alerts where metric = %s and segment = %s"
                " and bucket_seconds = %s order by bucket_start",
                (metric, segment, size),
            )
            return {"metric": metric, "segment": segment, "bucket_seconds": size,
                    "series": list(grouped.values()), "alerts": alerts}  # fmt: skip

        return JSONResponse(await run_in_threadpool(read))

    async def segments(request: Request):
        metric = request.query_params.get("metric", "like_rate")
        size = bucket_seconds(request)

        def read():
            return query(
                "select segment, model_version, route, value, samples, bucket_start"
                " from public.monitoring_metrics m where metric = %s"
                " and bucket_seconds = coalesce(%s, (select min(bucket_seconds)"
                "                                    from public.monitoring_metrics))"
                " and bucket_start = (select max(bucket_start) from public.monitoring_metrics x"
                "   where x.metric = m.metric and x.bucket_seconds = m.bucket_seconds)"
                " order by segment, model_version, route",
                (metric, size),
            )

        return JSONResponse(await run_in_threadpool(read))

    async def alerts(request: Request):
        limit = min(int(request.query_params.get("limit", "50") or 50), 500)
        return JSONResponse(await run_in_threadpool(
            query, "select id, fired_at, rule, severity, bucket_start, model_version, route,"
            " segment, metric, value, baseline, samples, message, delivered_at"
            " from public.monitoring_alerts order by id desc limit %s", (limit,)))  # fmt: skip

    async def served(request: Request):
        try:
            user = str(uuid.UUID(request.path_params["user_id"]))
        except ValueError:
            return JSONResponse({"error": "not a user id"}, 400)
        limit = min(int(request.query_params.get("limit", "5") or 5), 50)
        rows = await run_in_threadpool(
            query,
            "with recent as (select request_id, max(created_at) as at"
            " from public.served_recommendations where user_id = %s"
            " group by request_id order by at desc limit %s)"
            " select s.request_id, s.created_at, s.position, s.video_id, v.title, s.score,"
            " s.reason, s.source, s.model_version, s.route, d.decision"
            " from public.served_recommendations s join recent using (request_id)"
            " join public.videos v on v.id = s.video_id"
            " left join lateral (select x.decision from public.user_video_decisions x"
            "   where x.user_id = s.user_id and x.video_id = s.video_id"
            "   and x.created_at >= s.created_at order by x.created_at limit 1) d on true"
            " order by recent.at desc, s.position",
            (user, limit),
        )
        return JSONResponse({"user_id": user, "items": rows})

    async def metrics(request: Request):
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        pool.close()

    return Starlette(
        routes=[
            Route("/", page),
            Route("/assets/plotly.min.js", plotly),
            Route("/api/overview", overview),
            Route("/api/series", series),
            Route("/api/segments", segments),
            Route("/api/alerts", alerts),
            Route("/api/users/{user_id}/served", served),
            Route("/metrics", metrics),
            *extra_routes,
        ],
        lifespan=lifespan,
    )
