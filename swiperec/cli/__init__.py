"""The `swiperec` command.

    swiperec db start|stop|status|url|migrate|psql      the database
    swiperec data generate|import|oracle|summary        data in and out
    swiperec snapshot | transform | train | evaluate     pipeline steps, one at a time
    swiperec embeddings write|status|activate|retire     the serving sets in pgvector
    swiperec pipeline parameters|run|submit              the training pipeline (KFP)
    swiperec realtime run|serve|status                   new swipes and videos, embedded live
    swiperec monitor run|alerts                          recommendation quality, alerts
    swiperec experiment start|stop|list|report           A/B tests between model versions
    swiperec rollout start|status|advance|rollback|tick  staged rollouts, automatic rollback
    swiperec migration calibrate|plan|status|advance     pseudo-users to real users, staged
    swiperec simulate                                    simulated app traffic, end to end
    swiperec demo                                        the main job on the embedded defaults

Every command uses `DATABASE_URL` when it is set, else the embedded server under
`$SWIPEREC_HOME` (default `.swiperec/`), started on demand. Each sub-module registers its
commands; the command functions import what they need when they run, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import sys

from swiperec.cli import (
    data_commands,
    db_commands,
    embedding_commands,
    evaluate_commands,
    experiment_commands,
    migration_commands,
    model_commands,
    monitor_commands,
    pipeline_commands,
    realtime_commands,
    registry_commands,
    simulate_commands,
    step_commands,
)
from swiperec.cli.common import UserError
from swiperec.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swiperec",
        description="Two-tower recommender for swipe-style video apps. Uses DATABASE_URL when "
        "set, else an embedded PostgreSQL under $SWIPEREC_HOME (default .swiperec/).",
    )
    parser.add_argument("--version", action="version", version=f"swiperec {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    db_commands.add_commands(commands)
    data_commands.add_commands(commands)
    step_commands.add_commands(commands)
    model_commands.add_commands(commands)
    evaluate_commands.add_commands(commands)
    embedding_commands.add_commands(commands)
    pipeline_commands.add_commands(commands)
    registry_commands.add_commands(commands)
    realtime_commands.add_commands(commands)
    monitor_commands.add_commands(commands)
    experiment_commands.add_commands(commands)
    migration_commands.add_commands(commands)
    simulate_commands.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["db", "psql"] and argv[2:3] not in (["-h"], ["--help"]):
        # Everything after `db psql` belongs to psql, options included, in order.
        args = parser.parse_args(argv[:2])
        args.psql_args = argv[2:]
    else:
        args = parser.parse_args(argv)
    from swiperec.errors import SwiperecError

    try:
        return args.func(args)
    except (UserError, SwiperecError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        import psycopg2

        if isinstance(err, psycopg2.OperationalError):
            print(f"error: cannot reach the database: {err}".rstrip(), file=sys.stderr)
            print("check DATABASE_URL, or unset it to use the embedded server", file=sys.stderr)
            return 2
        raise
