"""Where the database is, and how to connect to it.

`DATABASE_URL` (Supabase, or any PostgreSQL with pgvector >= 0.7) wins; without it, the embedded
server under `$SWIPEREC_HOME` is used and started on demand. Both are read when called, never at
import time.
"""

from __future__ import annotations

import os

import psycopg2


def database_url(home=None) -> str:
    """`DATABASE_URL` if set, else the embedded server's URL (starting it if needed)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from swiperec.db.embedded import EmbeddedServer

    return EmbeddedServer(home).url()


def uses_embedded_server() -> bool:
    """True when no `DATABASE_URL` is set, i.e. commands run against the embedded server."""
    return not os.environ.get("DATABASE_URL")


def connect(url: str | None = None, *, application_name: str = "swiperec"):
    """A psycopg2 connection; pgvector's `vector` type is registered when the extension exists."""
    conn = psycopg2.connect(url or database_url(), application_name=application_name)
    with conn.cursor() as cur:
        cur.execute("select 1 from pg_extension where extname = 'vector'")
        has_vector = cur.fetchone() is not None
    conn.rollback()
    if has_vector:
        from pgvector.psycopg2 import register_vector

        register_vector(conn)
        conn.rollback()
    return conn


def redact(url: str) -> str:
    """The URL with any password replaced by `***`, for printing."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}"))
