"""`swiperec embeddings write | status | activate | retire`: the serving sets in pgvector."""

from __future__ import annotations

import getpass
import os

from swiperec.cli.common import UserError, ready_connection
from swiperec.embeddings.store import EmbeddingSetError
from swiperec.faults import fault_point
from swiperec.registry.versions import RegistryError


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "embeddings", help="write, list and switch the model versions' embeddings in pgvector"
    )
    sub = parser.add_subparsers(dest="embeddings_command", required=True, metavar="COMMAND")

    write = sub.add_parser(
        "write",
        help="embed every video and real user with a trained model into a new set (Beam)",
        epilog="Beam options go after --, e.g. `-- --runner=DataflowRunner --project=P ...`; "
        "the workers must reach DATABASE_URL. The job carries no password: the workers take "
        "it from --database-url-secret or from their own environment (DATABASE_URL, "
        "PGPASSWORD, PGPASSFILE).",
    )
    write.add_argument("--model", required=True, help="the model folder (`swiperec train`)")
    write.add_argument("--version", required=True, help="the model version the set belongs to")
    write.add_argument(
        "--snapshot", help="read videos and decisions from this snapshot (default: a fresh one)"
    )
    write.add_argument(
        "--activate", action="store_true",
        help="promote the version at the end (it must be blessed), switching serving to it",
    )  # fmt: skip
    write.add_argument("--keep", type=int, default=3, help="versions to keep (default 3)")
    write.add_argument(
        "--nice", type=int, default=10,
        help="lower this process's CPU priority by N while it embeds (default 10; 0 keeps it)",
    )  # fmt: skip
    write.add_argument(
        "--database-url-secret", default=os.environ.get("DATABASE_URL_SECRET", ""),
        metavar="SPEC",
        help="a Beam secret holding DATABASE_URL, which the workers read, e.g. "
        "'type:GcpSecret;version_name:projects/P/secrets/S/versions/latest' "
        "(default: $DATABASE_URL_SECRET)",
    )  # fmt: skip
    write.add_argument("beam_args", nargs="*", help="Beam options, after --", metavar="BEAM_OPTION")
    write.set_defaults(func=write_command)

    status = sub.add_parser("status", help="every set: version, kind, state, rows, serving")
    status.set_defaults(func=status_command)

    activate = sub.add_parser(
        "activate",
        help="promote a version: serving switches to it (blessed, both sets ready)",
        epilog="An unblessed or unevaluated version is refused unless --force --reason TEXT; "
        "the override is recorded with its reason, who and when.",
    )
    activate.add_argument("version")
    activate.add_argument("--force", action="store_true", help="promote even if not blessed")
    activate.add_argument("--reason", help="why (required with --force; recorded)")
    activate.set_defaults(func=activate_command)

    retire = sub.add_parser("retire", help="drop all but the newest sets, never one in use")
    retire.add_argument("--keep", type=int, default=3)
    retire.set_defaults(func=retire_command)


def write_command(args) -> int:
    import tempfile

    import tensorflow as tf

    from swiperec.db import database_url
    from swiperec.db.connection import parse_secret
    from swiperec.pipeline import steps

    if not tf.io.gfile.exists(os.path.join(args.model, "model_card.json")):  # local or gs://
        raise UserError(f"{args.model} is not a trained model (no model_card.json)")
    ready_connection().close()  # the schema is up to date (or a clear error)
    parse_secret(args.database_url_secret)  # a bad spec fails before the snapshot is taken
    url = database_url()
    if args.nice:
        # Inference saturates the CPU; on a machine that also serves queries, they come first.
        os.nice(args.nice)
    with tempfile.TemporaryDirectory(prefix="swiperec-embeddings-") as scratch:
        snapshot = args.snapshot
        if snapshot is None:  # a fresh snapshot of the database, for this write alone
            snapshot = os.path.join(scratch, "snapshot")
            steps.ingest_snapshot(snapshot, database_url=url)
        result = steps.write_embeddings(
            args.model, snapshot, model_version=args.version, database_url=url,
            database_secret=args.database_url_secret, beam_pipeline_args=args.beam_args,
        )  # fmt: skip
    for kind in ("video", "user"):
        if kind in result["skipped"]:
            print(f"{kind:<6} set of {args.version}: already ready, nothing written")
        else:
            print(f"{kind:<6} set of {args.version}: {result['rows'][kind]:,} embeddings")
    fault_point("cli.before_switch")
    conn = ready_connection()
    try:
        previous, retired = steps.promote_and_retire(
            conn, args.version, promote=args.activate, keep=args.keep, actor=getpass.getuser()
        )
    except (EmbeddingSetError, RegistryError) as err:
        raise UserError(str(err)) from err
    finally:
        conn.close()
    if args.activate:
        print(f"serving       {args.version} (was {previous or 'none'})")
    if retired:
        print(f"retired       {', '.join(retired)}")
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result["seconds"].items())
    print(f"took          {timings}")
    return 0


def status_command(args) -> int:
    from swiperec.embeddings.store import status

    conn = ready_connection()
    rows = status(conn)
    conn.close()
    if not rows:
        print("no embedding sets yet: `swiperec embeddings write --model DIR --version V`")
        return 0
    print(f"{'version':<24}{'kind':<7}{'state':<9}{'rows':>10}  ready at")
    for row in rows:
        mark = "  <- serving" if row["serving"] else ""
        ready = row["ready_at"].isoformat(timespec="seconds") if row["ready_at"] else "-"
        rows_text = f"{row['rows']:,}" if row["rows"] is not None else "-"
        print(
            f"{row['version']:<24}{row['kind']:<7}{row['state']:<9}{rows_text:>10}  {ready}{mark}"
        )
    return 0


def activate_command(args) -> int:
    from swiperec.registry.versions import promote

    if args.reason and not args.force:
        raise UserError("--reason goes with --force")
    conn = ready_connection()
    try:
        previous = promote(conn, args.version, force=args.force, reason=args.reason,
                           actor=getpass.getuser())  # fmt: skip
    except (EmbeddingSetError, RegistryError) as err:
        raise UserError(str(err)) from err
    finally:
        conn.close()
    forced = f", forced: {args.reason}" if args.force else ""
    print(f"serving       {args.version} (was {previous or 'none'}{forced})")
    return 0


def retire_command(args) -> int:
    from swiperec.embeddings.store import retire

    conn = ready_connection()
    removed = retire(conn, args.keep)
    conn.close()
    print(f"retired       {', '.join(removed) if removed else 'nothing'}")
    return 0
