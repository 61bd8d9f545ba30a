"""Where the database is, and how to connect to it.

`DATABASE_URL` (Supabase, or any PostgreSQL with pgvector >= 0.7) wins; without it, the embedded
server under `$SWIPEREC_HOME` is used and started on demand. Both are read when called, never at
import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psycopg2

from swiperec.errors import SwiperecError


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


def address(url: str) -> str:
    """`url` (a URL or a libpq keyword string) without its password, as a libpq keyword
    string: where a connection goes and as whom, and nothing that lets one in."""
    from psycopg2.extensions import make_dsn, parse_dsn

    params = parse_dsn(url)
    params.pop("password", None)
    return make_dsn(**dict(sorted(params.items())))  # one spelling for each address


# The full URLs this process gave Beam workers, by their address (`WorkerDatabase.of`). A
# worker in the driver's own process (Beam's in-process runner) takes its URL from here.
_GIVEN_TO_WORKERS: dict[str, str] = {}


class WorkerPasswordError(SwiperecError):
    """A Beam worker found no password for the database it was given."""


@dataclass(frozen=True)
class WorkerDatabase:
    """The database a Beam worker connects to, with no password in it: a DoFn holding the
    URL itself would put the password into the job's graph, which Dataflow and Flink stage
    and show to whoever can read the job. A worker finds the password, in this order:

    1. in this process, when the driver runs here too (Beam's in-process runner);
    2. in `secret`, a Beam `Secret` whose value is the whole URL, or its spec (on Dataflow,
       "type:GcpSecret;version_name:projects/P/secrets/S/versions/latest", read with the
       workers' service account);
    3. in the worker's `DATABASE_URL`, when it points at the same address (Flink task
       managers and Kubernetes pods, from a secret);
    4. in the embedded server's password file, when the address is that server's (a local
       multi-process runner, whose workers share the driver's machine and home);
    5. from libpq itself: `PGPASSWORD`, or the password file `PGPASSFILE` (default
       `~/.pgpass`), e.g. a mounted secret.
    """

    address: str
    secret: object = None  # an apache_beam.utils.secret.Secret, its spec, or None

    @classmethod
    def of(cls, url: str, secret: object = None) -> WorkerDatabase:
        """The workers' handle on `url` (the driver's, with its password): kept here for
        workers in this process, the password left out of the handle."""
        handle = cls(address(url), secret or None)
        _GIVEN_TO_WORKERS[handle.address] = url
        return handle

    def url(self) -> str:
        """The URL to connect with, from the first source above that has this address."""
        if self.address in _GIVEN_TO_WORKERS:
            return _GIVEN_TO_WORKERS[self.address]
        if self.secret:
            from apache_beam.utils.secret import Secret

            secret = self.secret
            if isinstance(secret, str):
                secret = Secret.parse_secret_option(secret)
            url = secret.get_str().strip()
            if address(url) != self.address:
                raise WorkerPasswordError(
                    f"the secret {self.secret} holds a URL for {address(url)}, not for "
                    f"{self.address}: the workers would write to another database"
                )
            return url
        for url in (os.environ.get("DATABASE_URL"), _embedded_server_url()):
            if url and address(url) == self.address:
                return url
        return self.address

    def connect(self, **kwargs):
        """`connect` to this database from a worker; a clear error when no source above had
        its password."""
        try:
            return connect(self.url(), **kwargs)
        except psycopg2.OperationalError as err:
            if "password" not in str(err):
                raise
            raise WorkerPasswordError(
                f"a Beam worker cannot log in to {self.address}: {str(err).strip()}. The job "
                "carries no password; give the workers one: DATABASE_URL (the same database) "
                "or PGPASSWORD / PGPASSFILE in their environment, or the URL in a secret "
                "(--database-url-secret / DATABASE_URL_SECRET, e.g. "
                "'type:GcpSecret;version_name:projects/P/secrets/S/versions/latest')"
            ) from err


def write_password_file(url: str, path: str | os.PathLike) -> None:
    """A libpq password file at `path` (owner-only, as libpq requires) holding `url`'s password
    for its host, port and user, in every database: what `PGPASSFILE` points workers at."""
    from psycopg2.extensions import parse_dsn

    params = parse_dsn(url)
    fields = [params.get("host", "localhost"), params.get("port", "5432"), "*",
              params.get("user", "*"), params.get("password", "")]  # fmt: skip
    line = ":".join(f.replace("\\", "\\\\").replace(":", "\\:") for f in map(str, fields))
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(line + "\n")


def _embedded_server_url() -> str | None:
    """The embedded server's URL when it runs under this machine's `$SWIPEREC_HOME`, without
    starting it (a worker never starts a server)."""
    from swiperec.db.embedded import EmbeddedServer

    try:
        return EmbeddedServer().status().url
    except OSError:
        return None
