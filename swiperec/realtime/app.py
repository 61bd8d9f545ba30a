"""The synchronous real-time endpoint: `swiperec realtime serve` (Starlette under uvicorn).

    POST /embed/user   {"user_id": "<uuid>"}  -> 200 {"user_id", "model_version", "versions",
                                                      "path": "realtime", "has_history"}
    POST /embed/video  {"video_id": 123}      -> 200 {"video_id", "versions", "path": "realtime"}
    GET  /healthz                             -> 200 {"status": "ok", "versions": [...]} | 503
    GET  /metrics                             -> Prometheus metrics

Each POST embeds from the database as it is now, with every version in use, upserts the vectors
(the same code and the same per-key lock as the worker: `swiperec.realtime.embed`) and commits
before answering, so the caller's next query finds the vector. 404: a user without decisions
(nothing to embed from; the caller falls back) or an unknown video; 400: a malformed body;
401: a wrong token (`SWIPEREC_REALTIME_TOKEN`, when set); 503: no version serving, or its
model cannot be loaded. The Edge Function calls /embed/user for a signed-in user who has no
embedding yet. The towers of the versions in use are loaded at start and reloaded in the
background when serving changes.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import queue
import threading
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from swiperec.db import connect
from swiperec.realtime import source
from swiperec.realtime.embed import embed_and_upsert, lock_keys
from swiperec.realtime.models import Models

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 4096


class _BadRequest(Exception):
    pass


def create_app(
    database_url: str,
    *,
    token: str | None = None,
    models: Models | None = None,
    reload_seconds: float = 5.0,
    pool_size: int = 4,
) -> Starlette:
    """The ASGI app (see the module docstring). `token`: the bearer token callers must send
    (None: no check, for a private network); `reload_seconds`: how often the versions in use
    are looked up (new towers are loaded in the background)."""
    models = models or Models()
    registry = CollectorRegistry()
    requests = Counter("swiperec_realtime_requests_total", "Requests, per route and status",
                       ["route", "status"], registry=registry)  # fmt: skip
    seconds = Histogram("swiperec_realtime_request_seconds", "Request time, per route",
                        ["route"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))  # fmt: skip
    state = {"versions": [], "problems": {}, "pool": None}
    stop = threading.Event()

    def look_up_versions() -> list:
        conn = state["pool"].getconn()
        try:
            with conn.cursor() as cur:
                current = models.current(cur)
            conn.rollback()
        finally:
            state["pool"].putconn(conn)
        state["versions"] = [m.version for m in current]
        state["problems"] = dict(models.problems)
        return current

    def reload_loop() -> None:
        while not stop.wait(reload_seconds):
            try:
                look_up_versions()
            except Exception:
                log.exception("looking up the versions in use failed")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["pool"] = _Pool(database_url, pool_size)
        try:
            await run_in_threadpool(look_up_versions)
        except Exception:
            log.exception("the versions in use could not be loaded at start")
        thread = threading.Thread(target=reload_loop, name="realtime-reload", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            state["pool"].closeall()

    def authorised(request: Request) -> bool:
        if not token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def body_field(request: Request, name: str):
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise _BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _BadRequest(f"the body is not JSON: {err}") from None
        if not isinstance(body, dict) or name not in body:
            raise _BadRequest(f'the body must be a JSON object with "{name}"')
        return body[name]

    def embed(kind: str, key):
        conn = state["pool"].getconn()
        try:
            with conn.cursor() as cur:
                current = models.current(cur)
                if not current:
                    conn.rollback()
                    return None, None
                lock_keys(cur, kind, [key])
                users, videos = ([key], []) if kind == "user" else ([], [key])
                out = embed_and_upsert(cur, current, users, videos, only_with_history=True)
                serving = None
                if kind == "user":
                    cur.execute("select public.serving_version_for(%s::uuid)", (key,))
                    serving = cur.fetchone()[0]
            conn.commit()
            return out, serving
        except BaseException:
            conn.rollback()
            raise
        finally:
            state["pool"].putconn(conn)

    def unavailable():
        return JSONResponse(
            {"error": "no model version is serving, or its model cannot be loaded",
             "problems": state["problems"]},
            503, headers={"Retry-After": "30"},
        )  # fmt: skip

    async def handle(request: Request, kind: str) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"error": "unauthorized"}, 401)
        try:
            if kind == "user":
                try:
                    key = source.parse_user_id(await body_field(request, "user_id"))
                except ValueError as err:
                    raise _BadRequest(f"user_id: {err}") from None
            else:
                key = await body_field(request, "video_id")
                if isinstance(key, bool) or not isinstance(key, int) or not 0 < key < 2**63:
                    raise _BadRequest("video_id must be a positive integer")
        except _BadRequest as err:
            return JSONResponse({"error": "bad request", "detail": str(err)}, 400)
        out, serving = await run_in_threadpool(embed, kind, key)
        if out is None:
            return unavailable()
        if kind == "user":
            state_ = out.user_states.get(key, (0, 0))
            if state_[0] == 0:
                return JSONResponse({"error": "the user has no decisions to embed from"}, 404)
            return JSONResponse({"user_id": key, "model_version": serving,
                                 "versions": sorted(out.users), "path": "realtime",
                                 "has_history": True})  # fmt: skip
        if not out.videos:
            return JSONResponse({"error": f"no video {key}"}, 404)
        return JSONResponse({"video_id": key, "versions": sorted(out.videos), "path": "realtime"})

    def route(kind: str):
        async def endpoint(request: Request) -> JSONResponse:
            started = time.perf_counter()
            try:
                response = await handle(request, kind)
            except Exception:
                log.exception("embedding a %s failed", kind)
                response = JSONResponse({"error": "internal error"}, 500)
            requests.labels(f"/embed/{kind}", str(response.status_code)).inc()
            seconds.labels(f"/embed/{kind}").observe(time.perf_counter() - started)
            return response

        return endpoint

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> JSONResponse:
        if not state["versions"]:
            return unavailable()
        return JSONResponse({"status": "ok", "versions": state["versions"]})

    return Starlette(
        routes=[
            Route("/embed/user", route("user"), methods=["POST"]),
            Route("/embed/video", route("video"), methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


class _Pool:
    """At most `size` connections (`swiperec.db.connect`: the vector type registered), made on
    demand and reused; a caller waits for a free one. A closed connection is replaced."""

    def __init__(self, url: str, size: int):
        self._url = url
        self._free: queue.LifoQueue = queue.LifoQueue()
        self._slots = threading.Semaphore(size)

    def getconn(self):
        self._slots.acquire()
        try:
            conn = self._free.get_nowait()
        except queue.Empty:
            conn = None
        if conn is None or conn.closed:
            try:
                conn = connect(self._url, application_name="swiperec realtime serve")
            except BaseException:
                self._slots.release()
                raise
        return conn

    def putconn(self, conn) -> None:
        if conn.closed:
            conn = None
        elif conn.get_transaction_status() != 0:  # not idle: a failure left it unusable
            conn.close()
            conn = None
        if conn is not None:
            self._free.put(conn)
        self._slots.release()

    def closeall(self) -> None:
        while not self._free.empty():
            self._free.get_nowait().close()
