"""The `swiperec` command end to end, as a user runs it, against the test database."""

import csv
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

SMALL = [
    "--videos",
    "300",
    "--users",
    "40",
    "--pseudo-users",
    "60",
    "--decisions-per-user",
    "20",
    "--reviews-per-pseudo-user",
    "8",
    "--seed",
    "3",
]


def swiperec(*args, db_url, home, check=True):
    env = {**os.environ, "DATABASE_URL": db_url, "SWIPEREC_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "swiperec.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"swiperec {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


HELP_COMMANDS = (
    "",
    "db",
    "db start",
    "db stop",
    "db status",
    "db url",
    "db migrate",
    "db psql",
    "data",
    "data generate",
    "data import",
    "data oracle",
    "data summary",
    "snapshot",
    "transform",
    "realtime",
    "realtime run",
    "realtime serve",
    "realtime status",
    "simulate",
    "demo",
)


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_every_command_has_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "swiperec.cli", *command.split(), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "usage: swiperec" in result.stdout


@pytest.mark.slow
def test_generate_import_round_trip_and_oracle(db_url, pg_server, tmp_path):
    home = tmp_path / "home"
    out = tmp_path / "csv"
    swiperec("db", "migrate", db_url=db_url, home=home)
    generated = swiperec("data", "generate", *SMALL, "--out", str(out), db_url=db_url, home=home)
    assert "loaded" in generated.stdout and (home / "synthetic" / "ground_truth.npz").exists()
    assert sorted(p.name for p in out.iterdir()) == [
        "decisions.csv",
        "ground_truth.npz",
        "reviews.csv",
        "videos.csv",
    ]

    again = swiperec("data", "generate", *SMALL, db_url=db_url, home=home, check=False)
    assert again.returncode == 2 and "--replace" in again.stderr  # existing data is not wiped

    summary = swiperec("data", "summary", db_url=db_url, home=home).stdout
    assert "videos" in summary and "like rate" in summary

    # The generator's CSV files pass the importer's validation untouched, into an empty database.
    import psycopg2

    admin = psycopg2.connect(pg_server.status().url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("drop database if exists cli_import")
        cur.execute("create database cli_import template swiperec_template")
    import_url = db_url.rsplit("/", 1)[0] + "/cli_import"
    imported = swiperec(
        "data",
        "import",
        "--videos",
        str(out / "videos.csv"),
        "--decisions",
        str(out / "decisions.csv"),
        "--reviews",
        str(out / "reviews.csv"),
        db_url=import_url,
        home=home,
    )
    with psycopg2.connect(db_url) as a, psycopg2.connect(import_url) as b:
        for table in ("videos", "video_reviews", "user_video_decisions"):
            counts = []
            for conn in (a, b):
                with conn.cursor() as cur:
                    cur.execute(f"select count(*) from {table}")
                    counts.append(cur.fetchone()[0])
            assert counts[0] == counts[1] > 0, (table, counts, imported.stdout)
        with b.cursor() as cur:
            cur.execute("select count(*) from import_rejections")
            assert cur.fetchone()[0] == 0
    a.close()
    b.close()
    with admin.cursor() as cur:
        cur.execute("drop database cli_import with (force)")
    admin.close()

    with open(out / "decisions.csv", newline="", encoding="utf-8") as handle:
        first = next(csv.DictReader(handle))
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        f"user_id,video_external_id\n{first['user_id']},{first['video_external_id']}\n"
    )
    oracle = swiperec("data", "oracle", "--pairs", str(pairs), db_url=db_url, home=home).stdout
    p_like = float(oracle.splitlines()[1].split(",")[2])
    assert 0.0 < p_like < 1.0


def test_unreachable_database_says_what_to_do(tmp_path):
    result = swiperec(
        "data", "summary", db_url="postgresql://nobody@127.0.0.1:1/x", home=tmp_path, check=False
    )
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr and "DATABASE_URL" in result.stderr


def test_import_of_missing_file_fails_clearly(db_url, tmp_path):
    result = swiperec(
        "data",
        "import",
        "--videos",
        str(tmp_path / "nope.csv"),
        db_url=db_url,
        home=tmp_path,
        check=False,
    )
    assert result.returncode != 0 and "nope.csv" in result.stderr


def test_embedded_server_commands_without_database_url(own_home):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["SWIPEREC_HOME"] = str(own_home)

    def run(*args):
        result = subprocess.run(
            [sys.executable, "-m", "swiperec.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    try:
        assert "stopped" in run("db", "status")
        assert "running" in run("db", "start")
        url = run("db", "url").strip()
        assert re.match(r"postgresql://postgres:[\w-]{32}@127\.0\.0\.1:\d+/postgres$", url)
        assert "applied 20261124000000_core_schema.sql" in run("db", "migrate")
        assert "nothing to apply" in run("db", "migrate")
        assert "applied" in run("db", "status")
        assert "42" in run("db", "psql", "-A", "-t", "-c", "select 42")
    finally:
        assert "stopped" in run("db", "stop")


def test_demo_prints_url_counts_and_like_rate(own_home):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["SWIPEREC_HOME"] = str(own_home)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "swiperec.cli", "demo", "--data-only", *SMALL],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "database    postgresql://postgres:***@127.0.0.1:" in out  # the password hidden
        counts = {
            line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("  ")
        }
        assert (
            counts["videos"] == "300" and int(counts["user_video_decisions"].replace(",", "")) > 0
        )
        like_rate = float(
            next(line for line in out.splitlines() if line.startswith("like rate")).split()[-1]
        )
        assert 0.2 < like_rate < 0.6
    finally:
        subprocess.run(
            [sys.executable, "-m", "swiperec.cli", "db", "stop"],
            env=env,
            capture_output=True,
            timeout=60,
        )


def test_demo_refuses_a_remote_database_without_allow_remote(db_url, tmp_path):
    result = swiperec("demo", *SMALL, db_url=db_url, home=tmp_path, check=False)
    assert result.returncode == 2 and "--allow-remote" in result.stderr


def test_a_remote_database_is_not_migrated_behind_the_users_back(pg_server, tmp_path):
    import psycopg2

    admin = psycopg2.connect(pg_server.status().url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("drop database if exists unmigrated")
        cur.execute("create database unmigrated")
    url = pg_server.status().url.rsplit("/", 1)[0] + "/unmigrated"
    try:
        result = swiperec("data", "summary", db_url=url, home=tmp_path, check=False)
        assert result.returncode == 2 and "swiperec db migrate" in result.stderr
        assert "Traceback" not in result.stderr
        migrated = swiperec("db", "migrate", "--auth-stand-in", db_url=url, home=tmp_path)
        assert "applied" in migrated.stdout
        assert "like rate" in swiperec("data", "summary", db_url=url, home=tmp_path).stdout
    finally:
        with admin.cursor() as cur:
            cur.execute("drop database unmigrated with (force)")
        admin.close()
