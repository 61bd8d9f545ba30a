"""What the command modules share: user errors, a ready connection, log lines, progress bars."""

from __future__ import annotations

import sys


class UserError(Exception):
    """An error in how the command was called; printed without a traceback."""


def ready_connection():
    """A connection to a database whose schema is up to date.

    The embedded server is migrated on the spot. A server named by `DATABASE_URL` is never
    migrated behind the user's back: pending migrations are an error that says what to run.
    """
    from swiperec.db import connect
    from swiperec.db.connection import uses_embedded_server
    from swiperec.db.migrate import migrate, migration_states

    conn = connect()
    if uses_embedded_server():
        migrate(conn, local_bootstrap=True)
        return conn
    pending = [s.migration.path.name for s in migration_states(conn) if not s.applied]
    if pending:
        conn.close()
        raise UserError(
            f"the database behind DATABASE_URL lacks {len(pending)} migration(s) "
            f"({', '.join(pending)}): run `swiperec db migrate` first"
        )
    return conn


def utc_log_formatter(format: str):
    """A log formatter whose `%(asctime)s` is the time in UTC, ISO 8601 to the millisecond with
    a `Z`, as the commands print every other time, whatever the host's zone."""
    import logging
    import time

    format = format.replace("%(asctime)s", "%(asctime)s.%(msecs)03dZ")
    formatter = logging.Formatter(format, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    return formatter


def log_to_stderr(format: str = "%(asctime)s %(name)s %(levelname)s %(message)s") -> None:
    """INFO and above to stderr, for the long-running commands (the real-time worker, the
    rollout controller), their times in UTC."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(utc_log_formatter(format))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def stage_bar(stages: list[str], desc: str):
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
