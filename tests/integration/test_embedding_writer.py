"""The batch embedding refresh end to end: trained towers + snapshot -> Beam -> pgvector."""

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from swiperec.embeddings.store import IndexParams, serving_version, status
from swiperec.embeddings.writer import write_embeddings
from swiperec.registry.versions import last_promotion, promote, record_evaluation

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL_INDEX = IndexParams(maintenance_work_mem="64MB", parallel_workers=0)


def test_refresh_writes_every_video_and_real_user_and_switches(
    trained, snapshot_dir, conn, db_url, tmp_path
):
    import tensorflow as tf

    from swiperec.features.config import datetime_to_us
    from swiperec.features.events import load_snapshot
    from swiperec.features.preprocessing import video_row_spec
    from swiperec.features.raw_features import video_raw_features
    from swiperec.features.video_evidence import RANKING_FEATURE_NAMES
    from swiperec.model.export import load_serving_tower, serialize_raw
    from swiperec.model.train import read_model_card
    from swiperec.snapshot import read_metadata

    # The trained model, served with a new-release bonus of its own (not the default), which
    # its video set must carry.
    model_dir = str(tmp_path / "model")
    shutil.copytree(trained.model_dir, model_dir)
    card = read_model_card(model_dir)
    card["hyperparameters"]["new_release_bonus"] = 2.5
    with open(os.path.join(model_dir, "model_card.json"), "w") as f:
        json.dump(card, f)

    first = write_embeddings(
        model_dir, "v1", snapshot_dir, database_url=db_url,
        rows_per_chunk=64, decisions_per_shard=400, index=SMALL_INDEX,
    )  # fmt: skip
    catalogue, events, _ = load_snapshot(snapshot_dir)
    real_users = {k for k, pseudo, _ in events.user_slices() if not pseudo}
    assert first.rows == {"video": len(catalogue.video_id), "user": len(real_users)}
    # The video set's index build began once the videos were in, while the users were being
    # embedded. (Each figure is rounded to 10 ms.)
    began = first.began
    assert began["embed_videos"] + first.seconds["embed_videos"] <= began["index_video"] + 0.02
    assert began["index_video"] < began["embed_users"] + first.seconds["embed_users"]
    assert began["embed_users"] + first.seconds["embed_users"] <= began["index_user"] + 0.02
    assert serving_version(conn) is None  # written, ready, not serving: promotion switches
    assert promote(conn, "v1", force=True, reason="not evaluated: a test") is None
    assert serving_version(conn) == "v1"
    with conn.cursor() as cur:
        cur.execute("select count(*) from embedding_set_shards where model_version = 'v1'")
        decisions = read_metadata(snapshot_dir).row_counts["decisions"]
        assert cur.fetchone()[0] == -(-len(catalogue.video_id) // 64) + -(-decisions // 400)
        # A stored vector is the SavedModel's embedding of that video's raw features.
        cur.execute("select video_id, embedding, rank_bias, rank_scale from video_embeddings "
                    "where model_version = 'v1' order by video_id limit 3")  # fmt: skip
        stored = cur.fetchall()
        cur.execute("select max(vector_dims(embedding)), min(vector_norm(embedding)), "
                    "max(vector_norm(embedding)) from user_embeddings")  # fmt: skip
        dims, low, high = cur.fetchone()
    conn.rollback()
    assert dims == 768 and abs(low - 1) < 1e-4 and abs(high - 1) < 1e-4
    cutoff = read_metadata(snapshot_dir).cutoff
    as_of = datetime_to_us(datetime.fromisoformat(cutoff.isoformat()))
    rows = [video_raw_features(catalogue, i, as_of) for i in range(3)]
    tower = load_serving_tower(os.path.join(model_dir, "video_tower"))
    expected = tower(examples=tf.constant(serialize_raw(rows, video_row_spec())))
    assert [r[0] for r in stored] == catalogue.video_id[:3].tolist()
    vectors = np.stack([r[1].to_numpy() for r in stored])
    np.testing.assert_allclose(vectors, expected["embedding"].numpy(), atol=1e-6)
    # Beside each vector, the video's ranking terms that the serving function ranks by.
    np.testing.assert_allclose([r[2] for r in stored], expected["rank_bias"].numpy(), atol=1e-6)
    np.testing.assert_allclose([r[3] for r in stored], expected["rank_scale"].numpy(), rtol=1e-6)
    # The video set carries the model's match weights (the swipes' with the exposure prior
    # added), their recency half-life and the new releases' exploration bonus; the user set
    # none.
    with conn.cursor() as cur:
        cur.execute("select kind, match_weights, match_half_life_days, new_release_bonus "
                    "from embedding_sets where model_version = 'v1' order by kind")  # fmt: skip
        sets = cur.fetchall()
    conn.rollback()
    card = read_model_card(model_dir)
    assert sets[0] == ("user", None, None, None)
    assert sets[1][3] == 2.5
    assert sets[1][0] == "video"
    weights = [card["match_weights"][name] for name in RANKING_FEATURE_NAMES]
    weights[-1] += card["hyperparameters"]["exposure_prior"]
    assert RANKING_FEATURE_NAMES[-1] == "video_swipes"
    assert card["hyperparameters"]["exposure_prior"] > 0
    np.testing.assert_allclose(sets[1][1], weights, rtol=1e-6)
    assert sets[1][2] == card["input"]["feature_config"]["recency_half_life_days"]
    assert any(w != 0 for w in weights)

    # The same version again: nothing to do, nothing added.
    again = write_embeddings(model_dir, "v1", snapshot_dir, database_url=db_url,
                             index=SMALL_INDEX)  # fmt: skip
    assert sorted(again.skipped) == ["user", "video"] and again.rows == {}
    with conn.cursor() as cur:
        cur.execute("select count(*) from video_embeddings")
        assert cur.fetchone()[0] == len(catalogue.video_id)
    conn.rollback()

    # A second version loads beside the first and takes over only when promoted.
    write_embeddings(model_dir, "v2", snapshot_dir, database_url=db_url,
                     index=SMALL_INDEX)  # fmt: skip
    assert serving_version(conn) == "v1"
    assert {(s["version"], s["state"]) for s in status(conn)} == {("v1", "ready"), ("v2", "ready")}


def test_a_failed_user_load_cancels_the_video_index_build(
    trained, snapshot_dir, conn, db_url, monkeypatch
):
    from swiperec.embeddings import store, writer

    # The video set's finish begins with a long statement on its connection, and the users'
    # pipeline fails: the write must cancel that statement and fail at once with the users'
    # error, the video set still loading, never ready; the next write completes it.
    real_finish = store.finish_set

    def slow_finish(on, version, kind, index=None):
        with on.cursor() as cur:
            cur.execute("select pg_sleep(300)")
        return real_finish(on, version, kind, index)

    def failing_chunk(keyed, shards):
        raise ValueError("a user shard that cannot be built")

    monkeypatch.setattr(store, "finish_set", slow_finish)
    monkeypatch.setattr(writer, "user_chunk", failing_chunk)
    started = time.monotonic()
    with pytest.raises(Exception, match="a user shard that cannot be built"):
        write_embeddings(trained.model_dir, "broken", snapshot_dir, database_url=db_url,
                         index=SMALL_INDEX)  # fmt: skip
    assert time.monotonic() - started < 200  # not after the 300 s statement
    assert {(s["kind"], s["state"]) for s in status(conn) if s["version"] == "broken"} == {
        ("video", "loading"),
        ("user", "loading"),
    }
    with conn.cursor() as cur:  # nothing of the write still runs in the database
        cur.execute("select count(*) from pg_stat_activity where query like '%pg_sleep(300)%' "
                    "and state = 'active' and pid <> pg_backend_pid()")  # fmt: skip
        assert cur.fetchone()[0] == 0
    conn.rollback()

    monkeypatch.undo()
    again = write_embeddings(trained.model_dir, "broken", snapshot_dir, database_url=db_url,
                             index=SMALL_INDEX)  # fmt: skip
    assert again.skipped == [] and set(again.rows) == {"video", "user"}
    assert {s["state"] for s in status(conn) if s["version"] == "broken"} == {"ready"}


def test_commands_and_component(trained, snapshot_dir, conn, db_url, tmp_path):
    import subprocess
    import sys

    from kfp import dsl, local

    from components.write_embeddings import write_embeddings as write_component

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))

    @dsl.pipeline
    def write_only(model_uri: str, snapshot_uri: str, url: str):
        model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
        snapshot = dsl.importer(artifact_uri=snapshot_uri, artifact_class=dsl.Dataset)
        write_component(model=model.output, snapshot=snapshot.output, model_version="c1",
                        database_url=url)  # fmt: skip

    write_only(model_uri=trained.model_dir, snapshot_uri=snapshot_dir, url=db_url)
    assert {(s["version"], s["state"]) for s in status(conn)} == {("c1", "ready")}
    assert serving_version(conn) is None  # the component writes; the registry promotes

    env = {**os.environ, "DATABASE_URL": db_url}

    def swiperec(*args):
        return subprocess.run([sys.executable, "-m", "swiperec.cli", "embeddings", *args],
                              capture_output=True, text=True, timeout=600, env=env)  # fmt: skip

    # An unevaluated version is refused; forced with a reason, it serves and the log says so.
    refused = swiperec("activate", "c1")
    assert refused.returncode == 2 and "has no recorded evaluation" in refused.stderr
    assert "--force --reason" in refused.stderr and serving_version(conn) is None
    assert swiperec("activate", "c1", "--force").returncode == 2  # no reason, no override
    forced = swiperec("activate", "c1", "--force", "--reason", "first set, evaluated by hand")
    assert forced.returncode == 0 and "serving       c1 (was none" in forced.stdout
    assert serving_version(conn) == "c1"
    promoted = last_promotion(conn)
    assert promoted["version"] == "c1" and promoted["forced"] is True
    assert promoted["reason"] == "first set, evaluated by hand" and promoted["promoted_by"]
    assert promoted["at"] is not None

    written = swiperec("write", "--model", trained.model_dir, "--version", "c2",
                       "--snapshot", snapshot_dir)  # fmt: skip
    assert written.returncode == 0, written.stderr[-2000:]
    assert "video  set of c2:" in written.stdout and "serving" not in written.stdout
    listed = swiperec("status")
    assert "c1" in listed.stdout and "<- serving" in listed.stdout and "c2" in listed.stdout
    # Unblessed: refused. Blessed: promoted without force, and logged as not forced.
    record_evaluation(conn, "c2", trained.model_dir, {}, {"blessed": False, "reasons": ["x"]})
    unblessed = swiperec("activate", "c2")
    assert unblessed.returncode == 2 and "'c2' is not blessed" in unblessed.stderr
    assert serving_version(conn) == "c1"
    record_evaluation(conn, "c2", trained.model_dir, {}, {"blessed": True, "reasons": []})
    switched = swiperec("activate", "c2")
    assert switched.returncode == 0 and "serving       c2 (was c1)" in switched.stdout
    assert serving_version(conn) == "c2" and last_promotion(conn)["forced"] is False
    missing = swiperec("activate", "nope", "--force", "--reason", "no such set")
    assert missing.returncode == 2 and "cannot serve" in missing.stderr


def test_a_killed_writers_index_build_does_not_run_on(conn, db_url):
    # The connection the video set's build runs on, in a process killed in mid-statement: the
    # server ends the statement within seconds, not when it would have finished.
    script = (
        "import sys\n"
        "from swiperec.embeddings.writer import index_connection\n"
        "cur = index_connection(sys.argv[1]).cursor()\n"
        "cur.execute('select pg_backend_pid()')\n"
        "print(cur.fetchone()[0], flush=True)\n"
        "cur.execute('select pg_sleep(300)')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, db_url], stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    backend = int(child.stdout.readline())
    deadline, sleeping = time.monotonic() + 30, False
    while not sleeping and time.monotonic() < deadline:  # the statement has begun
        with conn.cursor() as cur:
            cur.execute("select count(*) from pg_stat_activity where pid = %s and state = 'active'"
                        " and query like '%%pg_sleep(300)%%'", (backend,))  # fmt: skip
            sleeping = cur.fetchone()[0] > 0
        conn.rollback()
        time.sleep(0.05)
    assert sleeping, "the statement never began"
    child.kill()
    child.wait()
    child.stdout.close()
    deadline, alive = time.monotonic() + 30, True
    while alive and time.monotonic() < deadline:
        with conn.cursor() as cur:
            cur.execute("select count(*) from pg_stat_activity where pid = %s", (backend,))
            alive = cur.fetchone()[0] > 0
        conn.rollback()
        time.sleep(0.2)
    assert not alive, "the killed writer's statement ran on"


def test_the_towers_load_once_per_process_until_the_model_changes(trained, tmp_path):
    from swiperec.embeddings.towers import shared_towers

    model_dir = str(tmp_path / "model")
    shutil.copytree(trained.model_dir, model_dir)
    first = shared_towers(model_dir)
    assert shared_towers(model_dir) is first  # the users' pipeline takes the videos' towers
    # The folder trained again (its SavedModel rewritten): loaded again.
    saved = os.path.join(model_dir, "video_tower", "saved_model.pb")
    os.utime(saved, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    second = shared_towers(model_dir)
    assert second is not first and shared_towers(model_dir) is second
    # New variables under a graph file with the same size and mtime (written within the same
    # second): the fingerprint differs, and the towers are loaded again.
    fingerprint = os.path.join(model_dir, "user_tower", "fingerprint.pb")
    graph = os.stat(os.path.join(model_dir, "user_tower", "saved_model.pb"))
    with open(fingerprint, "ab") as handle:
        handle.write(b"\x00")
    assert os.stat(os.path.join(model_dir, "user_tower", "saved_model.pb")) == graph
    assert shared_towers(model_dir) is not second
