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


# Keys of a libpq connection string that let one in: never printed, never sent to workers.
_SECRET_KEYS = ("password", "sslpassword")
# What names a database: where it is and as whom. Two connection strings that agree on these
# reach the same database as the same user, whatever else they set (sslmode, timeouts, ...).
_WHERE = ("host", "hostaddr", "port", "dbname", "user")
# What a service file fills in when a connection string leaves it out.
_NAMED = ("host", "port", "dbname", "user")


def _params(url: str) -> dict:
    """`parse_dsn(url)`, with an error that does not repeat the URL (it may hold a password)."""
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import parse_dsn

    try:
        return parse_dsn(url)
    except (ProgrammingError, UnicodeError):  # (bytes that are not UTF-8: another refusal)
        raise SwiperecError("a database URL is not a PostgreSQL URL or keyword string") from None


def redact(url: str) -> str:
    """`url` (a URL or a libpq keyword string) with any password replaced by `***`, for
    printing."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    from psycopg2.extensions import make_dsn

    try:
        params = _params(url)
    except SwiperecError:
        return "<not a database URL>"
    if not any(key in params for key in _SECRET_KEYS):
        return url
    if "://" not in url:
        return make_dsn(**{k: "***" if k in _SECRET_KEYS else v for k, v in params.items()})
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = [(k, "***" if k in _SECRET_KEYS else v)
             for k, v in parse_qsl(parts.query, keep_blank_values=True)]  # fmt: skip
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def address(url: str, resolved: dict | None = None) -> str:
    """`url` (a URL or a libpq keyword string) without its password, as a libpq keyword
    string: where a connection goes, as whom and how, and nothing that lets one in. `resolved`
    (`where_connected` of an open connection) fills in the host, port, database and user
    that `url` leaves to libpq's defaults, which another machine's would fill differently."""
    from psycopg2.extensions import make_dsn

    params = {k: v for k, v in _params(url).items() if k not in _SECRET_KEYS}
    for key in _WHERE:
        if key not in params and (resolved or {}).get(key):
            params[key] = resolved[key]
    return make_dsn(**dict(sorted(params.items())))  # one spelling for each address


def where_connected(conn) -> dict:
    """Where an open connection went, for `address(url, resolved)`: its connection parameters
    (`get_dsn_parameters()`), with the host libpq chose when the URL named none (`PQhost`: the
    socket directory of a Unix-socket connection, which another machine's libpq may place
    elsewhere)."""
    params = conn.get_dsn_parameters()
    chosen = conn.info.host or ""
    # (a libpq without Unix sockets, e.g. on Windows, reports "localhost": left out, as the URL)
    if not params.get("host") and not params.get("hostaddr") and chosen.startswith("/"):
        params["host"] = chosen
    return params


def _os_user() -> str | None:
    """The operating-system user libpq connects as by default (the effective user id's name);
    None when there is none to find (a container's user id with no passwd entry)."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return None


def _where(params: dict) -> dict | None:
    """`_WHERE` of a parsed connection string, what it leaves out filled in as libpq fills it:
    from `PGHOST`, `PGHOSTADDR`, `PGPORT`, `PGUSER` and `PGDATABASE`, else port 5432, the
    operating-system user and a database named after the user. A keyword the string gives
    empty (`port=''`) keeps libpq from reading its variable: libpq's own default applies. A
    host still empty is libpq's own default, a Unix socket in the directory compiled into it.
    None when the user is nowhere to be found (libpq could not connect either)."""

    def given(keyword: str, variable: str) -> str:
        return str(params[keyword]) if keyword in params else os.environ.get(variable, "")

    user = given("user", "PGUSER") or _os_user()
    if not user:
        return None
    return {
        "host": given("host", "PGHOST"),
        "hostaddr": given("hostaddr", "PGHOSTADDR"),
        "port": given("port", "PGPORT") or "5432",
        "dbname": given("dbname", "PGDATABASE") or user,
        "user": user,
    }


def same_database(a: str, b: str) -> bool:
    """Whether connection strings `a` and `b` name the same database as the same user, what
    either leaves out read as libpq reads it (`_where`). A string without a host goes to
    libpq's default socket directory, which no setting names: it matches one that names a
    single socket directory (a host starting with '/', as `where_connected` reports it) and
    agrees on the rest, never a network host or a list of hosts. Strings that use a service
    file (`service`, `PGSERVICE`) and leave any of host, port, database and user to it, whose
    entries this does not read, match only the same string (passwords aside)."""
    params = _params(a), _params(b)
    uses_service = os.environ.get("PGSERVICE") or any("service" in p for p in params)
    # (a keyword given, even empty, is not the service file's to fill, as in libpq)
    if uses_service and not all(k in p for p in params for k in _NAMED):
        visible = [{k: v for k, v in p.items() if k not in _SECRET_KEYS} for p in params]
        return visible[0] == visible[1]
    x, y = _where(params[0]), _where(params[1])
    if x is None or y is None:
        return False
    hosts = {x.pop("host"), y.pop("host")}
    if len(hosts) > 1:  # two hosts: only none beside a single socket directory match
        named = (hosts - {""}).pop() if "" in hosts else ""
        if not (named.startswith("/") and "," not in named):
            return False
    return x == y


# The full URLs this process gave Beam workers, by their address (`WorkerDatabase.of`). A
# worker in the driver's own process (Beam's in-process runner) takes its URL from here.
_GIVEN_TO_WORKERS: dict[str, str] = {}


class WorkerPasswordError(SwiperecError):
    """A Beam worker found no password for the database it was given."""


def parse_secret(secret):
    """A Beam `Secret` from its spec ("type:GcpSecret;version_name:..."), or `secret` itself
    when it is one already; None for none. A spec Beam cannot read is a `SwiperecError`: the
    driver checks it before any work, rather than every worker after it."""
    if not isinstance(secret, str):
        return secret
    if not secret:
        return None
    from apache_beam.utils.secret import Secret

    try:
        return Secret.parse_secret_option(secret)
    except ValueError as err:
        raise SwiperecError(f"the database URL's secret {secret!r}: {err}") from None


@dataclass(frozen=True)
class WorkerDatabase:
    """The database a Beam worker connects to, with no password in it: a DoFn holding the
    URL itself would put the password into the job's graph, which Dataflow and Flink stage
    and show to whoever can read the job. A worker finds the password, in this order:

    1. in this process, when the driver runs here too (Beam's in-process runner);
    2. in `secret`, a Beam `Secret` whose value is the whole URL (on Dataflow, the spec
       "type:GcpSecret;version_name:projects/P/secrets/S/versions/latest", read with the
       workers' service account);
    3. in the worker's `DATABASE_URL`, when it names the same database;
    4. in the embedded server's password file, when the address is that server's own
       database (`postgres`) under the worker's `$SWIPEREC_HOME` (a local multi-process
       runner, whose workers share the driver's machine and home);
    5. from libpq itself: `PGPASSWORD`, or the password file `PGPASSFILE` (default
       `~/.pgpass`), e.g. a mounted secret.
    """

    address: str
    secret: object = None  # an apache_beam.utils.secret.Secret, or None

    @classmethod
    def of(cls, url: str, secret=None, resolved: dict | None = None) -> WorkerDatabase:
        """The workers' handle on `url` (the driver's, with its password): kept here for
        workers in this process, the password left out of the handle. `secret`: a Beam
        `Secret` or its spec, checked here rather than on every worker; `resolved`: see
        `address`."""
        handle = cls(address(url, resolved), parse_secret(secret))
        _GIVEN_TO_WORKERS[handle.address] = url
        return handle

    def url(self) -> str:
        """The URL to connect with, from the first source above that has this database."""
        if self.address in _GIVEN_TO_WORKERS:
            return _GIVEN_TO_WORKERS[self.address]
        if self.secret is not None:
            try:
                url = self.secret.get_str().strip()
            except Exception as err:  # the secret manager's own error, naming no value
                raise WorkerPasswordError(
                    f"a Beam worker could not read the database URL's secret {self.secret}: "
                    f"{type(err).__name__}: {err}"
                ) from err
            if not same_database(url, self.address):
                raise WorkerPasswordError(
                    f"the secret {self.secret} holds a URL for {address(url)}, not for "
                    f"{self.address}: the workers would write to another database"
                )
            return url
        for url in (os.environ.get("DATABASE_URL"), _embedded_server_url()):
            try:
                if url and same_database(url, self.address):
                    return url
            except SwiperecError:  # a malformed DATABASE_URL is not this database's
                continue
        return self.address

    def connect(self, **kwargs):
        """`connect` to this database from a worker; a clear error when no source above had
        its password."""
        try:
            return connect(self.url(), **kwargs)
        except psycopg2.OperationalError as err:
            if "password" not in str(err):
                raise
            raise self.no_password(str(err).strip()) from err

    def no_password(self, detail: str = "") -> WorkerPasswordError:
        """The error of a worker that cannot log in: what it tried and where a password goes."""
        return WorkerPasswordError(
            f"a Beam worker cannot log in to {self.address}"
            + (f" ({detail})" if detail else "")
            + ". The job carries no password; give the workers one: DATABASE_URL (the same "
            "database) or PGPASSWORD / PGPASSFILE in their environment, or the URL in a secret "
            "(--database-url-secret / DATABASE_URL_SECRET, e.g. "
            "'type:GcpSecret;version_name:projects/P/secrets/S/versions/latest')"
            + self._why_not_taken(os.environ.get("DATABASE_URL"))
        )

    def _why_not_taken(self, url: str | None) -> str:
        """Why this process's DATABASE_URL `url` gave no password for this database: "" when
        it was not asked (the URL came from this process or a secret), when there is none, or
        when it is this database's."""
        if not url or self.address in _GIVEN_TO_WORKERS or self.secret is not None:
            return ""
        try:
            params = _params(url)
            uses_service = "service" in params or os.environ.get("PGSERVICE")
            if uses_service and not all(k in params for k in _NAMED):
                if same_database(url, self.address):
                    return ""
                return (". The workers' DATABASE_URL leaves part of where it goes to a service "
                        "file, whose entries are not read: it is taken only when it is the "
                        "address itself")  # fmt: skip
            if _where(params) is None:
                named = "an empty user" if "user" in params else "no user, nor does PGUSER"
                return (f". The workers' DATABASE_URL names {named}, and the operating system "
                        "gives none")  # fmt: skip
            if not same_database(url, self.address):
                return ". The workers' DATABASE_URL names another database"
        except SwiperecError:
            return ". The workers' DATABASE_URL is not a PostgreSQL URL or keyword string"
        return ""


def write_password_file(url: str, path: str | os.PathLike) -> None:
    """A libpq password file at `path` (owner-only, as libpq requires) holding `url`'s password
    for its host, port and user, in every database: what `PGPASSFILE` points workers at."""
    params = _params(url)
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
