"""`swiperec realtime run | serve | status`: embeddings for new swipes and new videos, between
batch refreshes."""

from __future__ import annotations

import logging
import signal

from swiperec.cli.common import UserError, log_to_stderr, ready_connection


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "realtime", help="keep the serving sets up to date with new swipes and videos"
    )
    sub = parser.add_subparsers(dest="realtime_command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="the worker: re-embed users and videos from the queue the triggers fill",
        epilog="Connects only out, to DATABASE_URL. Run several (any machines) to share the "
        "queue. SIGTERM finishes the batch in hand, then exits.",
    )
    run.add_argument("--batch-size", type=int, default=256, help="keys (users, videos) per batch")
    run.add_argument(
        "--debounce-ms", type=int, default=0,
        help="wait until a user's swipes pause this long before re-embedding (default 0: "
        "whatever arrived while the last batch ran is one re-embedding)",
    )  # fmt: skip
    run.add_argument(
        "--max-delay-ms", type=int, default=1000,
        help="re-embed a key whose oldest event waited this long, even while it is still "
        "changing (bounds the debounce)",
    )  # fmt: skip
    run.add_argument("--poll-seconds", type=float, default=5.0,
                     help="look at the queue this often without a NOTIFY (safety net)")  # fmt: skip
    run.add_argument("--metrics-port", type=int,
                     help="serve /metrics and /healthz on this port (default: none)")  # fmt: skip
    run.add_argument(
        "--nice", type=int, default=10,
        help="lower this process's CPU priority by N (default 10; 0 keeps it): on a machine "
        "that also serves recommendations, the queries come first",
    )  # fmt: skip
    run.set_defaults(func=run_command)

    serve = sub.add_parser(
        "serve",
        help="the endpoint: POST /embed/user and /embed/video, GET /healthz and /metrics",
        epilog="Set SWIPEREC_REALTIME_TOKEN to require `Authorization: Bearer <token>`.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--pool-size", type=int, default=4, help="database connections")
    serve.add_argument(
        "--no-token", action="store_true",
        help="listen beyond this machine without SWIPEREC_REALTIME_TOKEN (a private network)",
    )  # fmt: skip
    serve.set_defaults(func=serve_command)

    status = sub.add_parser("status", help="the queue's depth and lag, the versions in use")
    status.set_defaults(func=status_command)


def _logging() -> None:
    log_to_stderr()


def run_command(args) -> int:
    import os

    from swiperec.db import database_url
    from swiperec.realtime.worker import Worker, serve_metrics

    _logging()
    ready_connection().close()
    if args.nice:
        os.nice(args.nice)
    worker = Worker(
        database_url(), batch_size=args.batch_size, debounce_ms=args.debounce_ms,
        max_delay_ms=args.max_delay_ms, poll_seconds=args.poll_seconds,
    )  # fmt: skip
    if args.metrics_port:
        serve_metrics(worker, args.metrics_port)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    logging.getLogger("swiperec.realtime").info("worker started")
    worker.run()
    logging.getLogger("swiperec.realtime").info("worker stopped")
    return 0


def serve_command(args) -> int:
    import os

    import uvicorn

    from swiperec.db import database_url
    from swiperec.realtime.app import create_app

    token = os.environ.get("SWIPEREC_REALTIME_TOKEN") or None
    if token is None and args.host not in ("127.0.0.1", "localhost", "::1") and not args.no_token:
        raise UserError(
            f"listening on {args.host} without a token would let anyone who reaches the port "
            "embed users: set SWIPEREC_REALTIME_TOKEN (the Edge Function sends it as "
            "REALTIME_EMBED_TOKEN), or pass --no-token on a private network"
        )
    _logging()
    ready_connection().close()
    app = create_app(database_url(), token=token, pool_size=args.pool_size)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def status_command(args) -> int:
    from swiperec.realtime.models import in_use
    from swiperec.realtime.queue import depth_and_lag

    conn = ready_connection()
    try:
        with conn.cursor() as cur:
            depth, lag = depth_and_lag(cur)
            versions = in_use(cur)
        conn.rollback()
    finally:
        conn.close()
    print(f"queue     {depth} rows, oldest {lag:.2f} s")
    print(f"in use    {', '.join(v for v, _, _ in versions) or '-'}")
    for version, uri, kinds in versions:
        print(f"  {version}: model {uri or '- (not registered)'}; ready sets: "
              f"{', '.join(kinds) or '-'}")  # fmt: skip
    return 0
