"""The real-time worker: `swiperec realtime run`.

    worker = Worker(database_url)
    worker.run()            # until stop() (SIGTERM / SIGINT in the command)

Sleeps on LISTEN until a trigger's NOTIFY (or a slow poll, the safety net), then claims batches
from the queue (`swiperec.realtime.queue`) until none is due. Per batch, in one transaction: the
claim, the users' decisions and the videos' rows read from the database, every version in use
embedded with its own towers, the vectors upserted into its sets, the claimed rows deleted;
then commit. A worker killed anywhere before the commit loses nothing: its rows return.
Several workers, on one machine or many, share one queue. The worker only connects out (to
`DATABASE_URL`); its metrics and health are served on `metrics_port` if given.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import psycopg2
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from swiperec.db import connect
from swiperec.faults import fault_point
from swiperec.realtime import queue
from swiperec.realtime.embed import embed_and_upsert, lock_keys
from swiperec.realtime.models import Models, VersionUnavailable

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WorkerMetrics:
    """Prometheus metrics of one worker (its own registry, so several can live in a process)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("swiperec_realtime_queue_depth", "Rows in the queue", registry=r)
        self.queue_lag = Gauge("swiperec_realtime_queue_lag_seconds",
                               "Age of the oldest row in the queue", registry=r)  # fmt: skip
        self.batch_keys = Histogram("swiperec_realtime_batch_keys", "Keys per claimed batch",
                                    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
                                    registry=r)  # fmt: skip
        self.batch_seconds = Histogram("swiperec_realtime_batch_seconds",
                                       "Claim to commit, per batch", buckets=_LATENCY_BUCKETS,
                                       registry=r)  # fmt: skip
        self.event_lag = Histogram("swiperec_realtime_event_to_commit_seconds",
                                   "From a key's oldest queued event to the commit of its new "
                                   "vectors", buckets=_LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.embeddings = Counter("swiperec_realtime_embeddings_total",
                                  "Vectors written, per kind", ["kind"], registry=r)  # fmt: skip
        self.events = Counter("swiperec_realtime_events_total",
                              "Queue rows (events) consumed", registry=r)  # fmt: skip
        self.unchanged = Counter("swiperec_realtime_unchanged_total",
                                 "Users not re-embedded: history unchanged since the last "
                                 "embedding", registry=r)  # fmt: skip
        self.errors = Counter("swiperec_realtime_errors_total", "Failed batches", registry=r)
        self.set_aside = Counter("swiperec_realtime_set_aside_total",
                                 "Keys moved to embedding_queue_failed", registry=r)  # fmt: skip
        self.versions = Gauge("swiperec_realtime_versions",
                              "Versions in use that are embedded for", registry=r)  # fmt: skip
        self.heartbeat = Gauge("swiperec_realtime_heartbeat_timestamp_seconds",
                               "When the loop last ran", registry=r)  # fmt: skip


@dataclass
class BatchOutcome:
    claimed: list  # queue.Claimed per key
    keys: int
    events: int
    embedded: int  # vectors written, all versions
    unchanged: int
    seconds: float
    set_aside: int = 0  # keys moved to embedding_queue_failed


class Worker:
    """See the module docstring. `batch_size`: keys (users, videos) claimed at most per batch;
    `debounce_ms` / `max_delay_ms`: see `swiperec.realtime.queue`; `poll_seconds`: the safety
    net's interval, for a NOTIFY that never came."""

    def __init__(
        self,
        database_url: str,
        *,
        batch_size: int = 256,
        debounce_ms: int = 0,
        max_delay_ms: int = 1000,
        poll_seconds: float = 5.0,
        metrics: WorkerMetrics | None = None,
        models: Models | None = None,
        remember_states: int = 100_000,
    ):
        self.database_url = database_url
        self.batch_size, self.debounce_ms, self.max_delay_ms = batch_size, debounce_ms, max_delay_ms
        self.poll_seconds = poll_seconds
        self.metrics = metrics or WorkerMetrics()
        self.models = models or Models()
        self._conn = None
        # user -> (decisions, highest id) last embedded, for the versions in `_versions`.
        self._states: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._remember = remember_states
        self._versions: tuple = ()
        self.last_beat = 0.0  # when the loop last made progress (time.time())
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        # After a failed batch, batches of one key until one succeeds; a key that then fails
        # alone is set aside (`embedding_queue_failed`), so it never holds up the rest.
        self._isolating = False

    # -- one batch ---------------------------------------------------------------------------

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.database_url)
        return self._conn

    def run_batch(self) -> BatchOutcome | None:
        """Claim, embed, upsert and commit one batch; None when nothing is due."""
        conn = self._connection()
        started = time.perf_counter()
        claimed = None
        try:
            with conn.cursor() as cur:
                size = 1 if self._isolating else self.batch_size
                claimed = queue.claim(cur, size, self.debounce_ms, self.max_delay_ms)
                if not claimed:
                    conn.rollback()
                    return None
                fault_point("realtime.after_claim")
                models = self.models.current(cur)
                if self.models.problems:  # the rows stay queued until every version can be
                    raise VersionUnavailable(  # embedded for
                        "; ".join(f"{v}: {p}" for v, p in sorted(self.models.problems.items()))
                    )
                versions = tuple((m.version, m.kinds, m.model_uri) for m in models)
                if versions != self._versions:  # new sets: nothing is known about them
                    self._states.clear()
                    self._versions = versions
                users = [c.key for c in claimed if c.kind == "user"]
                videos = [int(c.key) for c in claimed if c.kind == "video"]
                out = embed_and_upsert(cur, models, users, videos, skip_states=self._states)
                fault_point("realtime.before_commit")
            conn.commit()
        except Exception as err:
            if not conn.closed:
                conn.rollback()
            transient = psycopg2.OperationalError | psycopg2.InterfaceError | VersionUnavailable
            if not claimed or isinstance(err, transient):
                raise  # the connection or a model, not the data: retried as it is
            if len(claimed) > 1 or not self._isolating:
                self._isolating = True
                raise
            self._set_aside(claimed[0], err)
            return BatchOutcome(claimed, 1, claimed[0].events, 0, 0, time.perf_counter() - started,
                                set_aside=1)  # fmt: skip
        except BaseException:
            if not conn.closed:
                conn.rollback()
            raise
        self._isolating = False
        committed = time.time()
        self.last_beat = committed  # a long drain is progress: /healthz stays green
        self.metrics.heartbeat.set(committed)
        for user, state in out.user_states.items():
            self._states[user] = state
            self._states.move_to_end(user)
        while len(self._states) > self._remember:
            self._states.popitem(last=False)

        m = self.metrics
        m.versions.set(len(models))
        m.batch_keys.observe(len(claimed))
        m.events.inc(sum(c.events for c in claimed))
        for c in claimed:
            m.event_lag.observe(max(0.0, committed - c.first_enqueued_at.timestamp()))
        written_users = {k for keys, _ in out.users.values() for k in keys}
        for kind, written in (("user", out.users), ("video", out.videos)):
            m.embeddings.labels(kind).inc(sum(len(keys) for keys, _ in written.values()))
        unchanged = len(users) - len(written_users) if models else 0
        m.unchanged.inc(unchanged)
        seconds = time.perf_counter() - started
        m.batch_seconds.observe(seconds)
        events = sum(c.events for c in claimed)
        return BatchOutcome(claimed, len(claimed), events, out.rows, unchanged, seconds)

    def _set_aside(self, key: queue.Claimed, err: Exception) -> None:
        """Move a key that fails on its own out of the queue, with the error."""
        log.error("setting aside %s %s, which fails on its own: %s", key.kind, key.key, err)
        self.metrics.set_aside.inc()
        with self._conn, self._conn.cursor() as cur:
            lock_keys(cur, key.kind, [key.key])
            cur.execute(
                "with gone as (delete from swiperec_private.embedding_queue"
                " where kind = %s and key = %s returning 1)"
                " insert into swiperec_private.embedding_queue_failed (kind, key, events, error)"
                " select %s, %s, count(*), %s from gone",
                (key.kind, key.key, key.kind, key.key, f"{type(err).__name__}: {err}"[:2000]),
            )

    def drain(self) -> int:
        """Run batches until none is due (or stop() was called); returns keys processed."""
        keys = 0
        while not self._stop.is_set():
            outcome = self.run_batch()
            if outcome is None:
                break
            keys += outcome.keys
        return keys

    # -- the loop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batch in hand and return from `run` (safe from a signal handler)."""
        self._stop.set()
        os.write(self._wake_w, b"x")

    def run(self) -> None:
        """LISTEN, drain, sleep until a NOTIFY, the poll or stop(); errors are logged, counted
        and retried after a pause (a lost connection is reopened)."""
        listener = None
        last_report, reported = time.monotonic(), 0.0
        try:
            while not self._stop.is_set():
                try:
                    if listener is None or listener.closed:
                        listener = connect(self.database_url)
                        listener.autocommit = True
                        with listener.cursor() as cur:
                            cur.execute(f"listen {queue.CHANNEL}")
                    self.drain()
                    with self._connection().cursor() as cur:
                        depth, lag = queue.depth_and_lag(cur)
                    self._conn.rollback()
                except Exception:
                    log.exception("real-time batch failed; retrying in 1 s")
                    self.metrics.errors.inc()
                    for conn in (listener, self._conn):
                        if conn is not None and not conn.closed:
                            conn.close()
                    self._stop.wait(1.0)
                    continue
                self.metrics.queue_depth.set(depth)
                self.metrics.queue_lag.set(lag)
                self.last_beat = time.time()
                self.metrics.heartbeat.set(self.last_beat)
                now = time.monotonic()
                if now - last_report >= 60:
                    total = sum(s.value for s in _samples(self.metrics.embeddings))
                    log.info("%.1f embeddings/s over the last minute; queue %d rows, lag %.2f s",
                             (total - reported) / (now - last_report), depth, lag)  # fmt: skip
                    last_report, reported = now, total
                # Rows still queued are not due yet (debounce): look again once they may be.
                timeout = self.poll_seconds
                if depth and self.debounce_ms:
                    timeout = min(timeout, self.debounce_ms / 1000)
                ready, _, _ = select.select([listener, self._wake_r], [], [], timeout)
                if listener in ready:
                    listener.poll()
                    listener.notifies.clear()
        finally:
            for conn in (listener, self._conn):
                if conn is not None and not conn.closed:
                    conn.close()


def serve_metrics(worker: Worker, port: int, host: str = "0.0.0.0"):
    """Serve the worker's /metrics and /healthz (200 while the loop ran within three poll
    intervals, else 503) from a daemon thread; returns the server."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app

    metrics_app = make_wsgi_app(worker.metrics.registry)

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz":
            beat = worker.last_beat  # each batch and each wait of the loop moves it on
            healthy = beat and time.time() - beat < 3 * worker.poll_seconds + 30
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "text/plain")])  # fmt: skip
            return [b"ok\n" if healthy else b"the worker loop is not running\n"]
        return metrics_app(environ, start_response)

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args):  # one line per scrape is noise
            pass

    server = make_server(host, port, app, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, name="realtime-metrics", daemon=True).start()
    return server


def _samples(metric):
    for family in metric.collect():
        yield from (s for s in family.samples if s.name.endswith("_total"))
