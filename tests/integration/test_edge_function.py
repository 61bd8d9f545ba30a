"""The Edge Function `enhanced_two_tower_recommendations` (supabase/functions/) under Deno.

Two runs of Deno (tools/deno, installed by `make deno`):
- its modules: `deno fmt --check`, `deno lint`, `deno check` and the unit tests next to them;
- every Deno test, including the handler's integration tests against a real database: a copy
  of the session's serving database (`serving_base` in conftest: the tiny synthetic data set,
  embeddings written and promoted by the real embedding writer from the trained model), and
  four users (A and B with decisions and embeddings, a
  cold-start user whose likes came after the embeddings, a user without any like).

Deno fetches only npm packages (postgres, jose), cached under tools/deno/cache (DENO_DIR).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from swiperec.db import connect
from swiperec.serving.recommend import recommend
from tests.conftest import SERVING_VERSION, TINY_DATA, database_copy

ROOT = Path(__file__).resolve().parents[2]
DENO = ROOT / "tools" / "deno" / "node_modules" / ".bin" / "deno"
FUNCTIONS = "supabase/functions/"
PERMISSIONS = ("--allow-env", "--allow-net", "--allow-read")
VERSION = SERVING_VERSION
COLD_USER = "0c01d5a2-7e11-4c3b-9a55-2d6f8e4b1c01"  # likes added after the embeddings
NO_LIKES_USER = "e0e0e0e0-5b1a-4f2c-8d3e-7a9b0c1d2e3f"  # only nopes
COLD_LIKES = (11, 42, 77, 150, 230, 333)


def deno(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run Deno from the repository root; fails the test with its output unless it exits 0."""
    if not DENO.exists():
        pytest.fail(f"Deno is not installed at {DENO.relative_to(ROOT)}: run `make deno`")
    environment = {**os.environ, "NO_COLOR": "1", **env}
    environment.setdefault("DENO_DIR", str(ROOT / "tools" / "deno" / "cache"))
    result = subprocess.run(
        [str(DENO), *args], cwd=ROOT, env=environment, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(
            f"deno {' '.join(args)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout[-12000:]}\n--- stderr ---\n{result.stderr[-6000:]}",
            pytrace=False,
        )
    return result


def test_function_modules_are_formatted_linted_typed_and_unit_tested():
    deno("fmt", "--check", FUNCTIONS)
    deno("lint", FUNCTIONS)
    deno("check", FUNCTIONS)
    result = deno("test", *PERMISSIONS, f"{FUNCTIONS}_shared/")
    assert " passed " in result.stdout and " 0 failed " in result.stdout


def _prepare(conn) -> dict:
    """On a copy of the serving database (version VERSION serving): the four users of the Deno
    tests."""
    with conn.cursor() as cur:
        cur.execute(
            "select d.user_id::text from user_video_decisions d join user_embeddings e"
            " on e.user_id = d.user_id and e.model_version = %s group by d.user_id"
            " order by count(*) filter (where d.decision = 'like') desc, d.user_id limit 2",
            (VERSION,),
        )
        a, b = (row[0] for row in cur.fetchall())
        # After the embeddings: the cold-start user's likes (and a nope), a user with nopes only.
        cur.execute(
            "insert into user_video_decisions (user_id, video_id, decision)"
            " select %s::uuid, v, 'like' from unnest(%s::bigint[]) v"
            " union all select %s::uuid, 5, 'nope'"
            " union all select %s::uuid, v, 'nope' from unnest(array[1, 2, 3]::bigint[]) v",
            (COLD_USER, list(COLD_LIKES), COLD_USER, NO_LIKES_USER),
        )
        cur.execute(
            "select count(*) from user_embeddings where user_id = any(%s::uuid[])",
            ([COLD_USER, NO_LIKES_USER],),
        )
        assert cur.fetchone()[0] == 0
    conn.commit()
    return {
        "model_version": VERSION,
        "users": {"a": a, "b": b, "cold": COLD_USER, "empty": NO_LIKES_USER},
    }


@pytest.fixture
def served_db(pg_server, serving_base):
    """(URL, connection) of a copy of the session's serving database."""
    for url in database_copy(pg_server, serving_base.name):
        conn = connect(url)
        yield url, conn
        conn.close()


@pytest.mark.integration
@pytest.mark.slow
def test_edge_function_serves_the_real_database(served_db, tmp_path):
    db_url, conn = served_db
    fixture = _prepare(conn)
    path = tmp_path / "edge_fixture.json"
    path.write_text(json.dumps(fixture))

    result = deno(
        "test", *PERMISSIONS, FUNCTIONS,
        SUPABASE_DB_URL=db_url, JWT_SECRET=secrets.token_urlsafe(32),
        SWIPEREC_EDGE_FIXTURE=str(path),
    )  # fmt: skip
    assert "enhanced_two_tower_recommendations on the real database ... ok" in result.stdout

    # What the function left behind: its log, for these users only; the catalogue intact.
    users = fixture["users"]
    with conn.cursor() as cur:
        cur.execute(
            "select user_id::text, source, count(*), count(distinct request_id),"
            " bool_and(model_version = %s) from served_recommendations group by 1, 2",
            (VERSION,),
        )
        logged = {(user, source): (rows, requests, ok) for user, source, rows, requests, ok
                  in cur.fetchall()}  # fmt: skip
        cur.execute("select count(*) from videos")
        videos = cur.fetchone()[0]
    conn.rollback()
    assert {user for user, _ in logged} <= set(users.values())
    assert logged[(users["a"], "embedding")][1] >= 5
    assert logged[(users["b"], "embedding")][0] > 0
    assert logged[(users["cold"], "recent_likes")][0] > 0
    assert logged[(users["empty"], "popular")][0] > 0
    assert all(ok for _, _, ok in logged.values())
    assert videos == TINY_DATA.videos

    # swiperec.serving (the demo) gives each video the reason the function served with it: both
    # take it from public.recommendation_reason.
    for key, source in (("a", "embedding"), ("cold", "recent_likes"), ("empty", "popular")):
        with conn.cursor() as cur:
            cur.execute(
                "select video_id, array_agg(distinct reason) from served_recommendations"
                " where user_id = %s group by video_id",
                (users[key],),
            )
            served = dict(cur.fetchall())
        conn.rollback()
        recs = recommend(conn, users[key], k=100)
        assert {rec.source for rec in recs} == {source}
        both = [rec for rec in recs if rec.video_id in served]
        assert len(both) >= 10, key
        assert [[rec.reason] for rec in both] == [served[rec.video_id] for rec in both], key
        if source != "popular":
            assert any(rec.reason.startswith("because you liked ") for rec in both), key
