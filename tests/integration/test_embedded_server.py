"""The embedded server's lifecycle, in a home of its own (not the session's server)."""

import socket

import psycopg2
import pytest

from swiperec.db.embedded import EmbeddedServer

pytestmark = pytest.mark.integration


def test_start_is_reused_stop_and_restart_keep_data(own_home):
    server = EmbeddedServer(own_home)
    assert not server.status().running
    first = server.start()
    try:
        assert first.running and first.url.startswith("postgresql://postgres:")
        # No trust: without the password (kept in home/password, owner only) nobody connects.
        assert oct((own_home / "password").stat().st_mode & 0o777) == "0o600"
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(f"postgresql://postgres@127.0.0.1:{first.port}/postgres")
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(f"postgresql://postgres:guess@127.0.0.1:{first.port}/postgres")
        assert server.start().pid == first.pid  # a second start reuses the running server
        with psycopg2.connect(first.url) as conn, conn.cursor() as cur:
            cur.execute("create table kept (n int); insert into kept values (42)")
            cur.execute("select extversion from pg_extension where extname = 'vector'")
        conn.close()
        assert server.stop()
        # Hold the port while the server is down, so that no other process on this machine
        # takes it in between; it is free again just before the restart.
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", first.port))
        assert not server.status().running
        assert not server.stop()
        holder.close()
        again = server.start()
        assert again.port == first.port  # the port is kept when still free
        with psycopg2.connect(again.url) as conn, conn.cursor() as cur:
            cur.execute("select n from kept")
            assert cur.fetchone() == (42,)
            cur.execute("create extension if not exists vector")
            cur.execute("select extversion from pg_extension where extname = 'vector'")
            assert cur.fetchone()[0] == "0.8.6"
            cur.execute("show server_version")
            assert cur.fetchone()[0].startswith("18.")
        conn.close()
    finally:
        server.stop()


def test_stale_pid_file_reads_as_stopped(tmp_path):
    server = EmbeddedServer(tmp_path / "home")
    server.pgdata.mkdir(parents=True)
    (server.pgdata / "postmaster.pid").write_text(
        "999999999\n/x\n0\n5432\n\n127.0.0.1\n0 0\nready\n"
    )
    assert not server.status().running


def test_a_folder_that_trusted_local_connections_is_switched_to_passwords(own_home):
    """A data folder made before passwords (pg_hba.conf `trust`, no password file): its next
    start gives the superuser a password and stops trusting anyone."""
    server = EmbeddedServer(own_home)
    first = server.start()
    try:
        hba = server.pgdata / "pg_hba.conf"
        hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))
        server.password_file.unlink()
        server.stop()
        assert server.status().url is None
        again = server.start()
        assert again.password and again.port == first.port
        assert oct(server.password_file.stat().st_mode & 0o777) == "0o600"
        assert " trust" not in hba.read_text()
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(f"postgresql://postgres@127.0.0.1:{again.port}/postgres")
        with psycopg2.connect(again.url) as conn, conn.cursor() as cur:
            cur.execute("select 1")
        conn.close()
    finally:
        server.stop()


def test_the_server_counts_days_in_utc_as_supabase_does(conn):
    # Whatever the host's zone, which initdb would write into the server's configuration:
    # serving's `current_date` falls on the UTC days of the logs' partitions and snapshots.
    with conn.cursor() as cur:
        cur.execute("show timezone")
        assert cur.fetchone()[0] == "UTC"
        cur.execute("select current_date = (now() at time zone 'UTC')::date")
        assert cur.fetchone()[0]
    conn.rollback()
