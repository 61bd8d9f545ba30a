"""`swiperec simulate`: simulated app traffic against the real serving path (the Edge Function
over HTTP, swipes written as the app writes them), for tests, benchmarks, the demo and
experiments."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

from swiperec.cli.common import UserError, ready_connection


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "simulate",
        help="simulated users: recommendation requests to the Edge Function, swipes, new "
        "videos and new users, against the database",
        description="Users of the generated data set (their ground truth known) open sessions: "
        "a few GET ?limit=10 requests to the Edge Function with their own JWT, each followed by "
        "a swipe on every item served, like with the ground truth's P(like); a share of swipes "
        "is organic (a random video instead). Swipes are inserted as the authenticated role "
        "(RLS applies). New videos and new users arrive during the run. Prints a report.",
        epilog="Without --function-url the Edge Function is started under Deno (SWIPEREC_DENO, "
        "else tools/deno/node_modules/.bin/deno, else deno on PATH) on a free port, with a "
        "random JWT secret unless one is given. SIGINT/SIGTERM end the run early, cleanly. "
        "Exits 1 when the report counts errors.",
    )
    parser.add_argument(
        "--rate", type=float, default=5.0, help="recommendation requests per second (default 5)"
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of traffic (default 60)"
    )
    parser.add_argument(
        "--users",
        type=int,
        default=200,
        help="how many of the ground truth's users take part (default 200)",
    )
    parser.add_argument(
        "--organic",
        type=float,
        default=0.2,
        help="share of swipes on a random video instead of a served one (default 0.2)",
    )
    parser.add_argument(
        "--new-videos-per-minute",
        type=float,
        default=2.0,
        help="videos added to the catalogue during the run (default 2)",
    )
    parser.add_argument(
        "--new-users-per-minute",
        type=float,
        default=1.0,
        help="users signing up during the run (default 1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--ground-truth",
        type=Path,
        help="the data set's ground_truth.npz (default: the one `swiperec data "
        "generate` saved under $SWIPEREC_HOME)",
    )
    parser.add_argument(
        "--function-url", help="a running Edge Function to call (default: start one under Deno)"
    )
    parser.add_argument(
        "--jwt-secret",
        default=None,
        help="the function's JWT secret (default: env JWT_SECRET; without "
        "--function-url, a random one); the env keeps it out of `ps`",
    )
    parser.add_argument("--limit", type=int, default=10, help="items per request (default 10)")
    parser.add_argument(
        "--workers", type=int, help="threads serving arrivals (default 2 per request/s, 4 to 32)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=simulate_command)


def simulate_command(args) -> int:
    from swiperec.data.load import ground_truth_path
    from swiperec.data.synthetic_truth import GroundTruth
    from swiperec.db import database_url
    from swiperec.simulate import SimulationOptions, simulate

    path = args.ground_truth or ground_truth_path()
    if not Path(path).is_file():
        raise UserError(
            f"no ground truth at {path}: load a synthetic data set with `swiperec data "
            "generate` (or `swiperec demo`), or pass --ground-truth"
        )
    try:
        options = SimulationOptions(
            rate=args.rate,
            duration=args.duration,
            users=args.users,
            organic=args.organic,
            new_videos_per_minute=args.new_videos_per_minute,
            new_users_per_minute=args.new_users_per_minute,
            seed=args.seed,
            function_url=args.function_url,
            jwt_secret=args.jwt_secret or os.environ.get("JWT_SECRET") or None,
            limit=args.limit,
            workers=args.workers,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    truth = GroundTruth.load(path)
    ready_connection().close()

    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():  # a second signal: stop now
            raise KeyboardInterrupt
        print("stopping: finishing the requests in flight", file=sys.stderr)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = simulate(database_url(), truth, options, stop=stop, progress=_progress)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(
        json.dumps(report.to_dict(), indent=2, ensure_ascii=False) if args.json else report.format()
    )
    return 1 if report.errors else 0


def _progress(seconds: float, totals: dict) -> None:
    print(
        f"[{seconds:5.0f} s] {totals['requests']} requests, {totals['swipes']} swipes, "
        f"{totals['new_videos']} new videos, {totals['new_users']} new users, "
        f"{totals['errors']} errors",
        file=sys.stderr,
    )
