"""The embedding refresh killed at every stage: what serves never changes, the next run goes on.

Version k1 serves. The writer (`swiperec embeddings write --activate`, a real process with the
trained tiny model) refreshes version k2 and is killed with SIGKILL at one fault point after
another (`swiperec.faults`), each run taking up what the one before left. After every kill the
serving version, its row counts and the answer to a fixed nearest-neighbour query are as they
were, and serving reads that run all along never fail. Each run is the re-run of the kill
before it (it gets past that point); a last run without a fault completes and switches to k2,
and the next retirement leaves no table that no set names. While the first run holds k2, a
second writer of k2 is refused.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from swiperec.db import connect
from swiperec.embeddings.store import EmbeddingSetError, IndexParams, retire, serving_version
from swiperec.embeddings.writer import write_embeddings
from swiperec.registry.versions import promote, record_evaluation

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAULT_POINTS = [  # in the order a refresh reaches them
    "writer.before_first_shard",
    "store.mid_copy",
    "writer.videos_loaded",
    "store.primary_key",  # the video set's, in its thread, while the users load
    "store.hnsw",
    "writer.users_loaded",
    "writer.between_sets",
    "store.attach",
    "cli.before_switch",
]


NEAREST_SERVING = (
    "select video_id from video_embeddings where model_version = "
    "(select model_version from serving_state) order by embedding <=> %s limit 10"
)


def serving_snapshot(conn, query) -> tuple:
    """(version, video rows, user rows, the 10 nearest videos to `query`) of what serves."""
    with conn.cursor() as cur:
        cur.execute("select model_version from serving_state")
        version = cur.fetchone()[0]
        counts = []
        for table in ("video_embeddings", "user_embeddings"):
            cur.execute(f"select count(*) from {table} where model_version = %s", (version,))
            counts.append(cur.fetchone()[0])
        cur.execute("select video_id from video_embeddings where model_version = %s "
                    "order by embedding <=> %s, video_id limit 10", (version, query))  # fmt: skip
        nearest = [r[0] for r in cur.fetchall()]
    conn.rollback()
    return version, *counts, nearest


def set_tables(conn) -> tuple[set, set]:
    """(set tables in swiperec_private, the tables `embedding_sets` names)."""
    with conn.cursor() as cur:
        cur.execute("select 'swiperec_private.' || tablename from pg_tables "
                    "where schemaname = 'swiperec_private' "
                    "and tablename ~ '^(video|user)_embeddings_'")  # fmt: skip
        present = {r[0] for r in cur.fetchall()}
        cur.execute("select table_name from embedding_sets")
        named = {r[0] for r in cur.fetchall()}
    conn.rollback()
    return present, named


def test_a_refresh_killed_at_every_stage_leaves_serving_untouched(
    trained, snapshot_dir, conn, db_url, tmp_path
):
    write_embeddings(trained.model_dir, "k1", snapshot_dir, database_url=db_url,
                     index=IndexParams(maintenance_work_mem="64MB"))  # fmt: skip
    promote(conn, "k1", force=True, reason="the first set of the fault tests")
    blessed = {"blessed": True, "reasons": []}
    record_evaluation(conn, "k2", trained.model_dir, {}, blessed)  # so --activate promotes it
    query = np.random.default_rng(0).normal(size=768).astype(np.float32)
    before = serving_snapshot(conn, query)
    assert before[0] == "k1" and before[1] > 0 and before[2] > 0

    command = [sys.executable, "-m", "swiperec.cli", "embeddings", "write", "--model",
               trained.model_dir, "--version", "k2", "--snapshot", snapshot_dir, "--activate",
               "--keep", "1"]  # fmt: skip
    # Serving reads go on through every kill and the final run: none may fail.
    stop, reads, failures = threading.Event(), [], []

    def read_serving():
        reader = connect(db_url)
        reader.autocommit = True
        while not stop.is_set():
            try:
                with reader.cursor() as cur:
                    cur.execute("set statement_timeout = '2s'")
                    cur.execute(NEAREST_SERVING, (query,))
                    assert len(cur.fetchall()) == 10
                reads.append(1)
            except Exception as error:
                failures.append(error)
            time.sleep(0.02)
        reader.close()

    reading = threading.Thread(target=read_serving)
    reading.start()
    marker = tmp_path / "reached"
    for point in FAULT_POINTS:
        marker.unlink(missing_ok=True)
        env = {**os.environ, "DATABASE_URL": db_url, "SWIPEREC_FAULT_POINT": point,
               "SWIPEREC_FAULT_MARKER": str(marker)}  # fmt: skip
        writer = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 300
        while not marker.exists() and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if writer.poll() is not None:
            pytest.fail(f"the writer ended before {point}: {writer.stderr.read()[-2000:]}")
        assert marker.exists(), f"the writer never reached {point}"
        if point == FAULT_POINTS[0]:  # while it holds k2: a second writer of k2 is refused
            with pytest.raises(EmbeddingSetError, match="being written by another process"):
                write_embeddings(trained.model_dir, "k2", snapshot_dir, database_url=db_url)
        os.kill(int(marker.read_text()), signal.SIGKILL)  # the process that reached it
        writer.kill()
        writer.wait()
        writer.stderr.close()
        assert serving_snapshot(conn, query) == before, f"serving changed after a kill at {point}"

    finished = subprocess.run(command, env={**os.environ, "DATABASE_URL": db_url},
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "serving       k2 (was k1)" in finished.stdout
    stop.set()
    reading.join(30)
    assert not failures and len(reads) > 100, (len(reads), failures[:3])
    after = serving_snapshot(conn, query)
    assert after[0] == "k2" and after[1:3] == before[1:3]  # the same catalogue and users
    assert serving_version(conn) == "k2"
    retire(conn, keep=1)
    present, named = set_tables(conn)
    assert present == named and len(named) == 2  # k2's two sets, nothing left behind
