"""The steps on object storage: every artifact under gs://, served by a local GCS emulator.

`tests/gcs_emulator.py` starts gcp-storage-emulator in a child process and sets the
environment that points each storage client of the project at it (google-cloud-storage and
Beam's gcsio, pyarrow, TensorFlow through a local HTTPS proxy: its docstring says why). The
steps are given plain gs:// URIs, as on a cluster; the Beam steps run on PortableRunner with
SDK worker processes started after the environment is set, so they inherit it, as a cluster's
workers get theirs from their image.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from tests.gcs_emulator import GcsEmulator
from tests.integration.test_transform import _assert_same_examples

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.cluster]

BUCKET = "swiperec-test"


@pytest.fixture(scope="module")
def gcs():
    with GcsEmulator(BUCKET) as emulator, pytest.MonkeyPatch.context() as patch:
        for name, value in emulator.env().items():
            patch.setenv(name, value)
        yield emulator


def test_every_storage_client_reads_what_the_others_wrote(gcs):
    import apache_beam as beam
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq
    import tensorflow as tf
    from apache_beam.io.filesystems import FileSystems
    from google.cloud import storage

    from swiperec.beam_pipeline import new_pipeline

    fs, path = pafs.FileSystem.from_uri(f"gs://{BUCKET}/clients/table")
    pq.write_table(pa.table({"id": list(range(50))}), f"{path}/t.parquet", filesystem=fs)
    pipeline = new_pipeline([])
    rows = (
        pipeline
        | beam.io.ReadFromParquetBatched(f"gs://{BUCKET}/clients/table/*.parquet")
        | beam.Map(lambda table: str(table.num_rows))
    )
    _ = rows | beam.io.WriteToText(f"gs://{BUCKET}/clients/rows", shard_name_template="")
    pipeline.run().wait_until_finish()
    with tf.io.gfile.GFile(f"gs://{BUCKET}/clients/rows") as handle:
        assert handle.read().split() == ["50"]
    tf.io.gfile.makedirs(f"gs://{BUCKET}/clients/tmp/x")
    with tf.io.gfile.GFile(f"gs://{BUCKET}/clients/tmp/x/card.json", "w") as handle:
        handle.write("{}")
    tf.io.gfile.rename(f"gs://{BUCKET}/clients/tmp/x", f"gs://{BUCKET}/clients/final")
    assert FileSystems.exists(f"gs://{BUCKET}/clients/final/card.json")
    names = {blob.name for blob in storage.Client().list_blobs(BUCKET, prefix="clients/")}
    assert {"clients/table/t.parquet", "clients/rows", "clients/final/card.json"} <= names
    assert not any(name.startswith("clients/tmp/x/") for name in names)


def test_the_steps_read_and_write_only_gs_uris_on_portable_workers(gcs, snapshot_dir, transformed):
    import pyarrow.fs as pafs
    from google.cloud import storage

    from swiperec.beam_local_cluster import local_portable_cluster
    from swiperec.features.transform import run_transform
    from swiperec.model.train import read_model_card, train
    from swiperec.snapshot import read_metadata
    from tests.conftest import SMALL_TRAIN

    root = f"gs://{BUCKET}/run"
    gs, _ = pafs.FileSystem.from_uri(root)
    local = pafs.LocalFileSystem()
    pafs.copy_files(snapshot_dir, f"{BUCKET}/run/snapshot", local, gs)
    snapshot = f"{root}/snapshot"
    assert read_metadata(snapshot).content_hash == read_metadata(snapshot_dir).content_hash

    with local_portable_cluster(workers=2) as cluster:
        result = run_transform(snapshot, f"{root}/transform", f"{root}/examples",
                               pipeline_args=cluster)  # fmt: skip
    assert result.metadata["counts"] == transformed.metadata["counts"]
    _assert_same_examples(result.examples_dir, result.transform_dir, transformed)

    one_epoch = dataclasses.replace(SMALL_TRAIN, epochs=1)
    train(result.transform_dir, result.examples_dir, f"{root}/model", one_epoch, verbose=0)
    card = read_model_card(f"{root}/model")
    assert card["input"]["examples"]["train"] > 0
    names = {blob.name for blob in storage.Client().list_blobs(BUCKET, prefix="run/")}
    assert "run/model/model_card.json" in names and "run/examples/metadata.json" in names
    assert not any("_raw" in name or "_tft_tmp" in name for name in names)  # scratch removed
