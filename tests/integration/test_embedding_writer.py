"""The batch embedding refresh end to end: trained towers + snapshot -> Beam -> pgvector."""

import os
from datetime import datetime

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from swiperec.embeddings.store import IndexParams, serving_version, status
from swiperec.embeddings.writer import write_embeddings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL_INDEX = IndexParams(maintenance_work_mem="64MB", parallel_workers=0)


def test_refresh_writes_every_video_and_real_user_and_switches(trained, snapshot_dir, conn, db_url):
    import tensorflow as tf

    from swiperec.data.snapshot import read_snapshot_metadata
    from swiperec.features.config import datetime_to_us
    from swiperec.features.events import load_snapshot
    from swiperec.features.preprocessing import video_row_spec
    from swiperec.features.raw_features import video_raw_features
    from swiperec.model.export import load_serving_tower, serialize_raw

    first = write_embeddings(
        trained.model_dir, "v1", snapshot=snapshot_dir, database_url=db_url, activate=True,
        rows_per_chunk=64, users_per_chunk=16, index=SMALL_INDEX,
    )  # fmt: skip
    catalogue, events, _ = load_snapshot(snapshot_dir)
    real_users = {k for k, pseudo, _ in events.user_slices() if not pseudo}
    assert first.rows == {"video": len(catalogue.video_id), "user": len(real_users)}
    assert first.activated and first.previous_version is None
    assert serving_version(conn) == "v1"
    with conn.cursor() as cur:
        cur.execute("select count(*) from embedding_set_shards where model_version = 'v1'")
        assert cur.fetchone()[0] == -(-len(catalogue.video_id) // 64) + -(-len(real_users) // 16)
        # A stored vector is the SavedModel's embedding of that video's raw features.
        cur.execute("select video_id, embedding from video_embeddings where model_version = 'v1' "
                    "order by video_id limit 3")  # fmt: skip
        stored = cur.fetchall()
        cur.execute("select max(vector_dims(embedding)), min(vector_norm(embedding)), "
                    "max(vector_norm(embedding)) from user_embeddings")  # fmt: skip
        dims, low, high = cur.fetchone()
    conn.rollback()
    assert dims == 768 and abs(low - 1) < 1e-4 and abs(high - 1) < 1e-4
    cutoff = read_snapshot_metadata(snapshot_dir).cutoff
    as_of = datetime_to_us(datetime.fromisoformat(cutoff.isoformat()))
    rows = [video_raw_features(catalogue, i, as_of) for i in range(3)]
    tower = load_serving_tower(os.path.join(trained.model_dir, "video_tower"))
    expected = tower(examples=tf.constant(serialize_raw(rows, video_row_spec())))["embedding"]
    assert [r[0] for r in stored] == catalogue.video_id[:3].tolist()
    vectors = np.stack([r[1].to_numpy() for r in stored])
    np.testing.assert_allclose(vectors, expected.numpy(), atol=1e-6)

    # The same version again: nothing to do, nothing added.
    again = write_embeddings(trained.model_dir, "v1", snapshot=snapshot_dir, database_url=db_url,
                             index=SMALL_INDEX)  # fmt: skip
    assert sorted(again.skipped) == ["user", "video"] and again.rows == {}
    with conn.cursor() as cur:
        cur.execute("select count(*) from video_embeddings")
        assert cur.fetchone()[0] == len(catalogue.video_id)
    conn.rollback()

    # A second version loads beside the first and takes over only when activated.
    second = write_embeddings(trained.model_dir, "v2", snapshot=snapshot_dir,
                              database_url=db_url, index=SMALL_INDEX)  # fmt: skip
    assert not second.activated and serving_version(conn) == "v1"
    assert {(s["version"], s["state"]) for s in status(conn)} == {("v1", "ready"), ("v2", "ready")}
