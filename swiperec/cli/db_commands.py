"""`swiperec db ...`: the embedded server and the schema."""

from __future__ import annotations

import os

from swiperec.cli.common import UserError


def add_commands(commands) -> None:
    db = commands.add_parser("db", help="the database: embedded server and schema")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    actions.add_parser("start", help="start the embedded server (a no-op if running)").set_defaults(
        func=start
    )
    actions.add_parser("stop", help="stop the embedded server").set_defaults(func=stop)
    actions.add_parser("status", help="server, pgvector and migration status").set_defaults(
        func=status
    )
    actions.add_parser("url", help="print the connection URL").set_defaults(func=url)
    migrate_parser = actions.add_parser("migrate", help="apply supabase/migrations/*.sql in order")
    migrate_parser.add_argument(
        "--auth-stand-in",
        action="store_true",
        help="create local stand-ins for Supabase's anon/authenticated roles and auth.uid() "
        "(plain PostgreSQL servers; automatic when embedded; refused on Supabase)",
    )
    migrate_parser.set_defaults(func=migrate)
    psql_parser = actions.add_parser("psql", help="psql on the database (extra args go to psql)")
    psql_parser.add_argument("psql_args", nargs="*", help="arguments for psql, e.g. -c 'select 1'")
    psql_parser.set_defaults(func=psql)


def _embedded(action: str):
    from swiperec.db.connection import uses_embedded_server
    from swiperec.db.embedded import EmbeddedServer

    if not uses_embedded_server():
        raise UserError(
            f"DATABASE_URL is set, so there is no embedded server to {action}; "
            "unset DATABASE_URL to use the embedded one"
        )
    return EmbeddedServer()


def start(args) -> int:
    server = _embedded("start").start()
    print(f"embedded PostgreSQL running (pid {server.pid}) in {server.pgdata}")
    print(server.url)
    return 0


def stop(args) -> int:
    print("stopped" if _embedded("stop").stop() else "not running")
    return 0


def url(args) -> int:
    from swiperec.db import database_url

    print(database_url())
    return 0


def status(args) -> int:
    from swiperec.db import connect, database_url
    from swiperec.db.connection import redact, uses_embedded_server
    from swiperec.db.migrate import migration_states

    if uses_embedded_server():
        server = _embedded("inspect").status()
        print(f"server      embedded, {'running' if server.running else 'stopped'}")
        print(f"data folder {server.pgdata}")
        if not server.running:
            print("start it with `swiperec db start` (any command that needs it starts it too)")
            return 0
        address = server.url
    else:
        address = database_url()
        print("server      DATABASE_URL")
    print(f"url         {redact(address)}")
    conn = connect(address)
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


def migrate(args) -> int:
    from swiperec.db import connect
    from swiperec.db.connection import uses_embedded_server
    from swiperec.db.migrate import migrate as apply_migrations

    conn = connect()
    applied = apply_migrations(conn, local_bootstrap=args.auth_stand_in or uses_embedded_server())
    conn.close()
    for migration in applied:
        print(f"applied {migration.path.name}")
    print("schema up to date" + ("" if applied else " (nothing to apply)"))
    return 0


def psql(args) -> int:
    from swiperec.db import database_url
    from swiperec.db.embedded import psql_path

    program = str(psql_path())
    os.execv(program, [program, database_url(), *args.psql_args])
    return 0  # not reached
