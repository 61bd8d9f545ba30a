"""Applies `supabase/migrations/*.sql` in order, recording each in the Supabase CLI's own table.

Migrations use the Supabase CLI's `<14-digit timestamp>_<name>.sql` naming and are recorded in
`supabase_migrations.schema_migrations` (version, statements, name), the table the CLI itself
keeps, so `supabase db push` and `swiperec db migrate` agree on what is applied. Each file runs
in its own transaction together with its record; an advisory lock serialises concurrent runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from swiperec.errors import SwiperecError
from swiperec.resources import resource_path

_MIGRATION_FILE = re.compile(r"^(\d{14})_([A-Za-z0-9_\-]+)\.sql$")
_LOCK_KEY = 727_001  # any constant: identifies "swiperec migrations" among advisory locks

LOCAL_BOOTSTRAP = Path(__file__).with_name("local_bootstrap.sql")  # package data of this module


def default_migrations_dir() -> Path:
    """`$SWIPEREC_MIGRATIONS`, else the package's copy of `supabase/migrations`."""
    override = os.environ.get("SWIPEREC_MIGRATIONS")
    return Path(override) if override else resource_path("migrations")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class MigrationState:
    migration: Migration
    applied: bool
    edited_since_applied: bool


def list_migrations(directory: Path | None = None) -> list[Migration]:
    """The migration files in version order. A `.sql` file with another name is an error."""
    directory = Path(directory or default_migrations_dir())
    if not directory.is_dir():
        raise FileNotFoundError(f"no migrations folder at {directory} (set SWIPEREC_MIGRATIONS)")
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise ValueError(
                f"{path.name}: migration files are named <YYYYMMDDHHMMSS>_<name>.sql "
                "(the Supabase CLI's convention); rename it"
            )
        migrations.append(Migration(match.group(1), match.group(2), path))
    return migrations


def has_supabase_auth(conn) -> bool:
    """Whether the server has what the policies need: `anon`, `authenticated`, `auth.uid()`."""
    with conn.cursor() as cur:
        cur.execute(
            """
            select (select count(*) from pg_roles where rolname in ('anon', 'authenticated')) = 2
               and exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                           where n.nspname = 'auth' and p.proname = 'uid')
            """
        )
        return cur.fetchone()[0]


def apply_local_bootstrap(conn) -> None:
    """Create stand-ins for Supabase's roles and `auth.uid()` (embedded or plain servers only).

    Refused on a Supabase project (recognised by its `auth.users` table), whose real roles,
    grants and `auth` schema must stay as Supabase made them.
    """
    with conn.cursor() as cur:
        cur.execute("select to_regclass('auth.users') is not null")
        if cur.fetchone()[0]:
            conn.rollback()
            raise SwiperecError(
                "this server has Supabase's auth schema: run `swiperec db migrate` without "
                "--auth-stand-in (stand-ins are for the embedded or a plain PostgreSQL server)"
            )
        cur.execute(LOCAL_BOOTSTRAP.read_text(encoding="utf-8"))
    conn.commit()


def migration_states(conn, directory: Path | None = None) -> list[MigrationState]:
    """Each migration file with whether it is applied and whether it changed since."""
    recorded = _recorded(conn)
    states = []
    for migration in list_migrations(directory):
        applied = migration.version in recorded
        statements = recorded.get(migration.version)
        edited = bool(statements) and _fingerprint("".join(statements)) != _fingerprint(
            migration.sql
        )
        states.append(MigrationState(migration, applied=applied, edited_since_applied=edited))
    return states


def _fingerprint(sql: str) -> str:
    # The Supabase CLI records a file split into statements; compare text without the
    # whitespace and semicolons that the split moves around.
    return re.sub(r"[\s;]+", "", sql)


def migrate(
    conn, directory: Path | None = None, *, local_bootstrap: bool = False
) -> list[Migration]:
    """Apply every migration not yet recorded; returns those applied now (empty when up to date).

    With `local_bootstrap`, Supabase's roles and `auth.uid()` get local stand-ins first. Without
    it, a server lacking them is refused with a message that says what to do.
    """
    migrations = list_migrations(directory)
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
    conn.commit()
    try:
        if local_bootstrap:
            apply_local_bootstrap(conn)
        elif not has_supabase_auth(conn):
            raise SwiperecError(
                "this server has no Supabase `auth` schema or `anon`/`authenticated` roles; "
                "for a plain PostgreSQL run `swiperec db migrate --auth-stand-in`"
            )
        _ensure_history_table(conn)
        done = _recorded(conn)
        applied = []
        for migration in migrations:
            if migration.version in done:
                continue
            sql = migration.sql
            try:
                with conn.cursor() as cur:
                    cur.execute(sql)
                    cur.execute(
                        "insert into supabase_migrations.schema_migrations"
                        " (version, statements, name) values (%s, %s, %s)",
                        (migration.version, [sql], migration.name),
                    )
                conn.commit()
            except Exception as err:
                conn.rollback()
                raise SwiperecError(f"migration {migration.path.name} failed: {err}") from err
            applied.append(migration)
        return applied
    finally:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
        conn.commit()


def _ensure_history_table(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(
            """
            create schema if not exists supabase_migrations;
            create table if not exists supabase_migrations.schema_migrations (
                version text not null primary key);
            alter table supabase_migrations.schema_migrations
                add column if not exists statements text[],
                add column if not exists name text;
            """
        )
    conn.commit()


def _recorded(conn) -> dict[str, list[str] | None]:
    with conn.cursor() as cur:
        cur.execute("select to_regclass('supabase_migrations.schema_migrations') is not null")
        if not cur.fetchone()[0]:
            conn.rollback()
            return {}
        cur.execute("select version, statements from supabase_migrations.schema_migrations")
        rows = dict(cur.fetchall())
    conn.rollback()
    return rows
