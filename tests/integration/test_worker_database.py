"""The refresh's Beam job carries the database's address, never its password; a worker finds
the password itself (`swiperec.db.connection.WorkerDatabase`), or fails saying where to put it.

Each test builds its handle with `WorkerDatabase(address(url))`, as a worker unpickles it in a
process of its own: not through `WorkerDatabase.of`, which leaves the URL in this process for
the in-process runner's workers."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from apache_beam.utils.secret import Secret
from psycopg2.extensions import parse_dsn

from swiperec.db import connect
from swiperec.db.connection import (
    WorkerDatabase,
    WorkerPasswordError,
    address,
    redact,
    same_database,
    where_connected,
    write_password_file,
)
from swiperec.errors import SwiperecError

pytestmark = pytest.mark.integration


class MountedSecret(Secret):
    """A Beam secret read from a file, as a secret mounted into the workers' pods."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def get_secret_bytes(self) -> bytes:
        return Path(self.path).read_bytes()


@pytest.fixture(autouse=True)
def _no_libpq_environment(monkeypatch):
    """What a URL leaves out comes from PGHOST, PGPORT, ...: none of the runner's here."""
    for name in ("PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bare_worker(monkeypatch, tmp_path):
    """A worker's environment with no password anywhere: no DATABASE_URL, no PGPASSWORD, no
    password file, no embedded server under its SWIPEREC_HOME."""
    for name in ("DATABASE_URL", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-passfile"))
    monkeypatch.setenv("SWIPEREC_HOME", str(tmp_path / "no-server"))
    return monkeypatch


def logs_in(handle: WorkerDatabase) -> str:
    conn = handle.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("select current_database()")
            return cur.fetchone()[0]
    finally:
        conn.close()


def pickled_dofns(pipeline) -> list[bytes]:
    """Every ParDo's DoFn in `pipeline`'s job graph (its runner API proto, what a runner stages
    and shows), as the pickle Beam wrote: base64 of a bz2 or zlib compressed stream."""
    import base64
    import bz2
    import zlib

    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    found = []
    for transform in pipeline.to_runner_api().components.transforms.values():
        if transform.spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            packed = base64.b64decode(payload.do_fn.payload)
            unpack = bz2.decompress if packed[:3] == b"BZh" else zlib.decompress
            found.append(unpack(packed))
    return found


def test_the_refresh_job_graph_holds_the_address_and_no_password(db_url):
    import apache_beam as beam

    from swiperec.beam_pipeline import new_pipeline
    from swiperec.embeddings.writer import EmbedAndCopy, _as_dofn

    params = parse_dsn(db_url)
    fn = EmbedAndCopy("model", "v1", WorkerDatabase.of(db_url), "snapshot", None, 0, 8)
    pipeline = new_pipeline([])
    _ = pipeline | beam.Create([("video", "s", (0, 1))]) | beam.ParDo(_as_dofn(fn))
    writer = [p for p in pickled_dofns(pipeline) if b"EmbedAndCopy" in p]
    assert len(writer) == 1 and params["dbname"].encode() in writer[0]  # the address is there
    assert all(params["password"].encode() not in p for p in pickled_dofns(pipeline))
    # A worker in this process (the in-process runner's) logs in with the driver's URL.
    assert logs_in(fn.database) == params["dbname"]


def test_a_worker_with_no_password_fails_saying_where_to_put_one(db_url, bare_worker):
    handle = WorkerDatabase(address(db_url))
    nothing_more = r"carries no password.*PGPASSFILE.*versions/latest'\)$"
    with pytest.raises(WorkerPasswordError, match=nothing_more):
        logs_in(handle)
    # and why its own DATABASE_URL gave none, when it has one
    bare_worker.setenv("DATABASE_URL", db_url.rsplit("/", 1)[0] + "/postgres")
    with pytest.raises(WorkerPasswordError, match=r"DATABASE_URL names another database$"):
        logs_in(handle)
    bare_worker.setenv("DATABASE_URL", "postgresql://u:se%zzcret@h/db")  # a bad escape
    with pytest.raises(WorkerPasswordError, match="is not a PostgreSQL URL") as refused:
        logs_in(handle)
    assert "se%zzcret" not in str(refused.value)
    bare_worker.setenv("DATABASE_URL", "host=db.example dbname=app")  # no user, nor anywhere
    bare_worker.setattr("swiperec.db.connection._os_user", lambda: None)
    refused = handle.no_password()  # as the writer raises it when a worker cannot connect
    assert str(refused).endswith(
        "DATABASE_URL names no user, nor does PGUSER, and the operating system gives none"
    )
    bare_worker.setenv("DATABASE_URL", "host=db.example dbname=app user=''")
    bare_worker.setenv("PGUSER", "writer")  # not read for a user given empty
    assert str(handle.no_password()).endswith(
        "DATABASE_URL names an empty user, and the operating system gives none"
    )
    bare_worker.delenv("PGUSER")
    # A URL that leaves part of its address to a service file is taken only when it is the
    # address itself: said so, not "another database".
    bare_worker.setenv("DATABASE_URL", "service=app")
    assert "leaves part of where it goes to a service file" in str(handle.no_password())
    bare_worker.setenv("DATABASE_URL", "\udcff")  # not UTF-8: refused as any other non-URL
    assert "is not a PostgreSQL URL" in str(handle.no_password())
    # Where the URL came from this process (the in-process runner's workers) or a secret, the
    # worker's own DATABASE_URL was not asked: nothing is said of it.
    bare_worker.setenv("DATABASE_URL", db_url.rsplit("/", 1)[0] + "/postgres")
    secret = WorkerDatabase(handle.address, MountedSecret("/nonexistent"))
    assert str(secret.no_password()).endswith("versions/latest')")


def test_a_worker_logs_in_with_libpqs_password_file_or_variable(db_url, bare_worker, tmp_path):
    handle = WorkerDatabase(address(db_url))
    write_password_file(db_url, tmp_path / "pgpass")  # a mounted secret, every database
    bare_worker.setenv("PGPASSFILE", str(tmp_path / "pgpass"))
    assert logs_in(handle) == parse_dsn(db_url)["dbname"]
    bare_worker.setenv("PGPASSFILE", str(tmp_path / "no-such-passfile"))
    bare_worker.setenv("PGPASSWORD", parse_dsn(db_url)["password"])
    assert logs_in(handle) == parse_dsn(db_url)["dbname"]


def test_a_worker_takes_its_own_database_url_only_for_the_same_database(db_url, bare_worker):
    handle = WorkerDatabase(address(db_url))
    other = db_url.rsplit("/", 1)[0] + "/postgres"  # the same server, another database
    bare_worker.setenv("DATABASE_URL", other)
    with pytest.raises(WorkerPasswordError):
        logs_in(handle)
    bare_worker.setenv("DATABASE_URL", db_url)
    assert logs_in(handle) == parse_dsn(db_url)["dbname"]


def test_a_worker_reads_the_url_from_a_beam_secret_of_the_same_database(
    db_url, bare_worker, tmp_path
):
    secret_file = tmp_path / "database-url"
    secret_file.write_text(db_url + "\n")
    handle = WorkerDatabase(address(db_url), MountedSecret(str(secret_file)))
    assert logs_in(handle) == parse_dsn(db_url)["dbname"]
    # A secret naming another database is refused rather than written to.
    secret_file.write_text(db_url.rsplit("/", 1)[0] + "/postgres\n")
    with pytest.raises(WorkerPasswordError, match="another database"):
        logs_in(WorkerDatabase(address(db_url), MountedSecret(str(secret_file))))


def test_a_password_file_escapes_what_libpq_reads_as_separators(tmp_path):
    url = "postgresql://writer:a%3Ab%5Cc@db.example:6543/app"  # the password a:b\c
    write_password_file(url, tmp_path / "pgpass")
    assert (tmp_path / "pgpass").read_text() == "db.example:6543:*:writer:a\\:b\\\\c\n"
    assert (tmp_path / "pgpass").stat().st_mode & 0o077 == 0  # libpq ignores it otherwise


def test_the_address_names_the_database_and_drops_every_password():
    url = "postgresql://writer:pw@db.example/app?sslmode=require&sslpassword=keypw"
    assert address(url) == "dbname=app host=db.example sslmode=require user=writer"
    # Left to libpq's defaults, the driver's own connection says where it went.
    resolved = {"host": "10.0.0.5", "port": "6543", "dbname": "app", "user": "writer"}
    assert address("dbname=app", resolved) == "dbname=app host=10.0.0.5 port=6543 user=writer"
    assert same_database("postgresql://writer@db.example/app", url)
    assert same_database("postgresql://writer@db.example:5432/app?connect_timeout=5", url)
    assert not same_database("postgresql://writer@db.example:6543/app", url)
    assert not same_database("postgresql://reader@db.example/app", url)


def test_a_url_left_to_libpqs_socket_is_the_database_its_connection_reports(bare_worker):
    """A driver's `postgresql://writer:pw@/app` goes to libpq's default Unix socket; its
    handle names the socket directory as `where_connected` reads it from the open connection
    (libpq's `PQhost`; this machine's test server listens on TCP only, so the directory is
    given here as libpq reports it). A worker whose own DATABASE_URL is that URL takes it for
    the handle's database, and only for it."""
    url = "postgresql://writer:pw@/app"
    resolved = {"host": "/var/run/postgresql", "port": "5432", "dbname": "app", "user": "writer"}
    handle = WorkerDatabase(address(url, resolved))
    assert handle.address == "dbname=app host=/var/run/postgresql port=5432 user=writer"
    bare_worker.setenv("DATABASE_URL", url)
    assert handle.url() == url
    assert same_database("dbname=app user=writer", handle.address)
    # Not a network host, another socket directory, a list of hosts, another database or
    # another user.
    for other in ("postgresql://writer@localhost/app", "host=/tmp dbname=app user=writer",
                  "host=/var/run/postgresql,db.example dbname=app user=writer",
                  "postgresql://writer@/other", "postgresql://reader@/app"):  # fmt: skip
        assert not same_database(other, handle.address), other
        bare_worker.setenv("DATABASE_URL", other)
        assert handle.url() == handle.address  # the worker's URL is not this database's
    # What libpq reads from the environment counts as written: PGHOST sends the same URL to a
    # network host, PGUSER and PGDATABASE fill in whom and which.
    bare_worker.setenv("PGHOST", "db.example")
    assert not same_database(url, handle.address)
    assert same_database(url, "host=db.example dbname=app user=writer")
    bare_worker.setenv("PGUSER", "writer")
    bare_worker.setenv("PGDATABASE", "app")
    assert same_database("postgresql://", "host=db.example port=5432 dbname=app user=writer")


def test_what_a_url_leaves_out_is_filled_in_as_libpq_fills_it(bare_worker):
    import pwd

    from swiperec.db.connection import _os_user

    try:  # libpq's default user: the effective user id's name, none without a passwd entry
        assert _os_user() == pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        assert _os_user() is None
    bare_worker.setattr("swiperec.db.connection._os_user", lambda: "me")
    # No user: the operating system's; no database: the user's name; no port: 5432.
    assert same_database("host=db.example", "host=db.example port=5432 dbname=me user=me")
    assert not same_database("host=db.example", "host=db.example dbname=app user=someone-else")
    bare_worker.setenv("PGPORT", "6543")
    assert same_database("host=db.example user=w", "host=db.example port=6543 user=w")
    bare_worker.delenv("PGPORT")
    # A service file, whose entries are not read, fills what a string leaves out: such a string
    # matches only itself, passwords aside; one that names host, port, database and user
    # does not depend on it, and matches its handle whatever PGSERVICE says.
    assert same_database("service=app password=pw", "service=app")
    assert not same_database("service=app", "dbname=me user=me")  # the defaults would match
    url = "postgresql://writer:pw@db.example:5432/app"
    resolved = {"host": "db.example", "port": "5432", "dbname": "app", "user": "writer"}
    bare_worker.setenv("PGSERVICE", "app")
    assert same_database(url, address(url, resolved))
    assert not same_database("postgresql://writer:pw@db.example/app", address(url, resolved))
    bare_worker.delenv("PGSERVICE")
    assert same_database("postgresql://writer:pw@db.example/app", address(url, resolved))
    # No user anywhere (a user id without a passwd entry): libpq cannot connect, nothing matches.
    bare_worker.setattr("swiperec.db.connection._os_user", lambda: None)
    assert not same_database("host=db.example", "host=db.example")


def test_a_keyword_given_empty_keeps_libpq_from_its_variable(db_url, bare_worker):
    """libpq reads PGPORT, PGUSER, ... only for a keyword the string leaves out: one it gives
    empty (`port=''`) takes libpq's default instead (port 5432). The real libpq and
    `same_database` agree on it, so a worker's DATABASE_URL that gives the port empty is not
    taken for the handle's database, though PGPORT names its port."""
    import psycopg2
    from psycopg2.extensions import make_dsn

    params = parse_dsn(db_url)
    assert params["port"] != "5432"  # the test server's port is a free one the OS gave it
    bare_worker.setenv("PGPORT", params["port"])
    left_out = make_dsn(**{k: v for k, v in params.items() if k != "port"})
    given_empty = make_dsn(**{**params, "port": ""})
    handle = WorkerDatabase(address(db_url))
    connect(left_out).close()  # PGPORT leads libpq to the server
    with pytest.raises(psycopg2.OperationalError, match="port 5432 failed"):
        connect(given_empty)  # an empty port leads it to 5432
    assert same_database(left_out, handle.address)
    assert not same_database(given_empty, handle.address)
    bare_worker.setenv("DATABASE_URL", left_out)
    assert logs_in(handle) == params["dbname"]
    bare_worker.setenv("DATABASE_URL", given_empty)
    assert handle.url() == handle.address  # not this database's: its password is not taken
    # The same for the user and the database: given empty, the operating system's user and a
    # database named after the user, whatever PGUSER and PGDATABASE say.
    bare_worker.delenv("PGPORT")
    bare_worker.setattr("swiperec.db.connection._os_user", lambda: "me")
    bare_worker.setenv("PGUSER", "writer")
    bare_worker.setenv("PGDATABASE", "app")
    assert same_database("host=db.example", "host=db.example port=5432 dbname=app user=writer")
    assert same_database("host=db.example user='' dbname=''",
                         "host=db.example port=5432 dbname=me user=me")  # fmt: skip
    assert not same_database("host=db.example user='' dbname=''",
                             "host=db.example port=5432 dbname=app user=writer")  # fmt: skip


class ReportedConnection:
    """What an open psycopg2 connection reports of where it went (`get_dsn_parameters()` and
    `info.host`, libpq's PQconninfo and PQhost), as given: a connection over libpq's default
    Unix socket, which this machine's test server (TCP only) cannot make."""

    def __init__(self, parameters: dict, host: str):
        self.parameters, self.info = parameters, SimpleNamespace(host=host)

    def get_dsn_parameters(self) -> dict:
        return dict(self.parameters)


def test_the_handle_names_the_host_the_connection_went_to(db_url):
    conn = connect(db_url)  # over TCP: the URL's host, which the parameters hold already
    try:
        where = where_connected(conn)
        assert where == conn.get_dsn_parameters() and where["host"] == conn.info.host
        assert same_database(db_url, address(db_url, where))
    finally:
        conn.close()
    # Over the default socket the parameters hold no host: PQhost's socket directory is added.
    socket = ReportedConnection({"port": "5432", "dbname": "app", "user": "w"}, "/run/pg")
    assert where_connected(socket)["host"] == "/run/pg"
    # Not when the URL named a hostaddr (PQhost reports that), nor a libpq without sockets.
    for parameters, host in (({"hostaddr": "10.0.0.5", "dbname": "app"}, "10.0.0.5"),
                             ({"dbname": "app"}, "localhost")):  # fmt: skip
        assert "host" not in where_connected(ReportedConnection(parameters, host))


def test_redact_hides_the_password_in_every_spelling():
    assert redact("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db?sslmode=require&password=pw") == (
        "postgresql://u@h/db?sslmode=require&password=***"
    )
    keywords = redact("host=h dbname=db user=u password=pw")
    assert "pw" not in keywords and "password=***" in keywords
    assert redact("postgresql://u:se%zzcret@h/db") == "<not a database URL>"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_a_malformed_url_is_refused_without_repeating_it(bare_worker, tmp_path):
    secret_file = tmp_path / "database-url"
    secret_file.write_text("postgresql://u:se%zzcret@h/db\n")  # not a URL: a bad escape
    handle = WorkerDatabase(address("postgresql://u@h/db"), MountedSecret(str(secret_file)))
    with pytest.raises(SwiperecError) as refused:
        handle.url()
    assert "se%zzcret" not in str(refused.value)


def test_a_secret_spec_is_checked_by_the_driver():
    with pytest.raises(SwiperecError, match="secret 'type:NoSuchSecret"):
        WorkerDatabase.of("postgresql://u:pw@h/db", "type:NoSuchSecret;version_name:x")


@pytest.mark.parametrize("given", ["flag", "environment"])
def test_the_commands_secret_reaches_the_writer_before_any_set_is_begun(
    given, trained, snapshot_dir, conn, db_url, monkeypatch, capsys
):
    """`swiperec embeddings write --database-url-secret SPEC` (or DATABASE_URL_SECRET) hands
    the spec through the pipeline step to the writer, which refuses one Beam cannot read
    before it begins a set, so nothing is left half-begun."""
    from swiperec.cli import main

    monkeypatch.setenv("DATABASE_URL", db_url)
    spec = "type:NoSuchSecret;version_name:projects/p/secrets/s/versions/1"
    command = ["embeddings", "write", "--model", trained.model_dir, "--version", "secret-v1",
               "--snapshot", snapshot_dir, "--nice", "0"]  # fmt: skip
    if given == "flag":
        command += ["--database-url-secret", spec]
    else:
        monkeypatch.setenv("DATABASE_URL_SECRET", spec)
    assert main(command) == 2
    assert f"the database URL's secret '{spec}'" in capsys.readouterr().err
    with conn.cursor() as cur:
        cur.execute("select count(*) from embedding_sets where model_version = 'secret-v1'")
        assert cur.fetchone()[0] == 0


def test_a_worker_reads_the_embedded_servers_password_file(pg_server, bare_worker):
    # The embedded server's own database, under the worker's SWIPEREC_HOME: a local
    # multi-process runner's worker, on the driver's machine.
    bare_worker.setenv("SWIPEREC_HOME", str(pg_server.home))
    url = pg_server.status().url
    assert logs_in(WorkerDatabase(address(url))) == "postgres"
