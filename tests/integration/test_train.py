"""The training step on the session's real transform output: fit, export, skew, component, CLI."""

import glob
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import datetime

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf
import tensorflow_transform as tft

from swiperec.features.config import FeatureConfig, datetime_to_us, stored_feature_config
from swiperec.features.events import load_snapshot
from swiperec.features.preprocessing import example_spec, user_feature_spec, video_row_spec
from swiperec.features.raw_features import video_raw_features
from swiperec.features.user_history import UserHistory
from swiperec.features.video_evidence import RANKING_FEATURE_NAMES
from swiperec.model.config import TrainConfig
from swiperec.model.data import Catalogue, count_video_rows, example_dataset
from swiperec.model.export import load_keras_tower, load_serving_tower, serialize_raw
from swiperec.model.towers import (
    USER_TOWER_INPUTS,
    VIDEO_TOWER_INPUTS,
    build_user_tower,
    build_video_tower,
    table_sizes,
)
from swiperec.model.train import read_model_card, train
from swiperec.model.two_tower import TwoTowerModel
from tests.conftest import SMALL_TRAIN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = SMALL_TRAIN


def outputs(transformed):
    return {
        graph: tft.TFTransformOutput(os.path.join(transformed.transform_dir, graph))
        for graph in ("user", "video")
    }


def test_fit_smoke_on_ten_rows(transformed):
    tf.keras.utils.set_random_seed(1)
    graphs = outputs(transformed)
    row_counts = count_video_rows(transformed.examples_dir)
    catalogue = Catalogue.load(
        transformed.examples_dir, graphs["video"].transformed_feature_spec(), row_counts
    )
    config = stored_feature_config(transformed.metadata["config"])
    sizes = table_sizes(graphs["video"], graphs["user"], config)
    model = TwoTowerModel(
        build_user_tower(sizes, SMALL),
        build_video_tower(sizes, np.array([1, 2]), SMALL),
        SMALL,
        train_examples=1_000,
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    ten_rows = example_dataset(
        transformed.examples_dir,
        "train",
        graphs["user"].transformed_feature_spec(),
        catalogue,
        batch_size=10,
    ).take(1)
    [batch] = list(ten_rows)
    assert batch["label"].shape == (10,) and 0 < int(tf.reduce_sum(batch["label"])) < 10
    before = [w.numpy().copy() for w in model.user_tower.trainable_weights]
    history = model.fit(ten_rows, epochs=5, verbose=0).history
    losses = history["total_loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    after = model.user_tower.trainable_weights
    assert any(not np.allclose(b, a.numpy()) for b, a in zip(before, after, strict=True))
    user, video = model(batch)
    assert user.shape == video.shape == (10, 768)
    np.testing.assert_allclose(np.linalg.norm(user, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(video, axis=1), 1.0, atol=1e-5)


def test_the_input_pipelines_are_not_autotuned(transformed):
    """Deleting an autotuned iterator waits for its tuning thread, seconds at random; Keras
    makes one for every epoch and validation pass, the catalogue's embedding one per call."""
    from swiperec.model.data import _records, tfrecord_files

    graphs = outputs(transformed)
    catalogue = Catalogue.load(
        transformed.examples_dir, graphs["video"].transformed_feature_spec(), {}
    )
    spec = graphs["user"].transformed_feature_spec()
    pipelines = [
        example_dataset(transformed.examples_dir, "train", spec, catalogue, 64, 1000, seed=1),
        example_dataset(transformed.examples_dir, "validation", spec, catalogue, 64),
        catalogue.all_rows(64),
        _records(tfrecord_files(transformed.examples_dir, "train")).batch(64),
    ]
    assert [p.options().autotune.enabled for p in pipelines] == [False] * 4
    # and still every example, once
    total = sum(int(b["label"].shape[0]) for b in pipelines[1])
    validation_files = tfrecord_files(transformed.examples_dir, "validation")
    assert total == sum(1 for _ in _records(validation_files))


def test_training_writes_towers_and_a_model_card(trained, transformed):
    model_dir = trained.model_dir
    for name in ("user_tower", "video_tower"):
        assert os.path.exists(os.path.join(model_dir, name, "saved_model.pb"))
        assert os.path.exists(os.path.join(model_dir, f"{name}.keras"))
    card = read_model_card(model_dir)
    assert card == json.loads(json.dumps(trained.card))
    assert card["embedding_dim"] == 768
    assert TrainConfig.from_dict(card["hyperparameters"]) == SMALL
    meta = transformed.metadata
    assert card["input"]["snapshot_content_hash"] == meta["snapshot"]["content_hash"]
    assert card["input"]["examples"]["train"] == meta["counts"]["train"]["examples"]
    assert card["training"]["epochs_run"] <= SMALL.epochs and card["training"]["seconds"] > 0
    validation = card["metrics"]["validation"]
    assert 0.5 < validation["auc"] <= 1 and np.isfinite(validation["retrieval_loss"])
    # Early stopping restored the best epoch: the card reports it, and the model in hand
    # scores exactly that on the validation split again.
    history = card["history"]["val_auc"]
    assert validation["auc"] == pytest.approx(max(history), abs=1e-6)
    assert card["training"]["best_epoch"] == int(np.argmax(history)) + 1
    spec = outputs(transformed)["user"].transformed_feature_spec()
    again = trained.model.evaluate(
        example_dataset(transformed.examples_dir, "validation", spec, trained.catalogue, 128),
        return_dict=True,
        verbose=0,
    )
    assert again["auc"] == pytest.approx(validation["auc"], abs=1e-6)
    assert not glob.glob(os.path.join(os.path.dirname(model_dir), ".*partial"))


def raw_videos(snapshot_dir, transformed):
    """Raw catalogue rows as of the transform's cutoff, as the serving side would send them."""
    catalogue, _, _ = load_snapshot(snapshot_dir)
    as_of = datetime_to_us(datetime.fromisoformat(transformed.metadata["catalogue"]["as_of"]))
    return [video_raw_features(catalogue, i, as_of) for i in range(len(catalogue.video_id))]


def raw_users(snapshot_dir, transformed, n=12):
    """Raw features of `n` users as of the cutoff from their whole history, and of a user
    with no history at all (a brand-new user)."""
    catalogue, events, _ = load_snapshot(snapshot_dir)
    as_of = datetime_to_us(datetime.fromisoformat(transformed.metadata["catalogue"]["as_of"]))
    config = FeatureConfig()
    rows = [UserHistory(catalogue, config, is_pseudo=False).features(as_of)]
    for _, is_pseudo, rows_of_user in list(events.user_slices())[:n]:
        history = UserHistory(catalogue, config, is_pseudo)
        for video, label, time_us in zip(
            events.video_id[rows_of_user].tolist(),
            events.label[rows_of_user].tolist(),
            events.time_us[rows_of_user].tolist(),
            strict=True,
        ):
            history.add(video, label, time_us)
        rows.append(history.features(as_of))
    return rows


def beam_transform_users(rows, transform_dir, tmp_path):
    """Raw user rows through the user graph the way the transform step applies it: TFT's
    TransformDataset on Beam, then tf.Example encoding. Returns serialized transformed rows."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from tfx_bsl.coders import example_coder

    from swiperec.features.raw_features import arrow_schema, tensor_adapter_config, to_record_batch

    spec = example_spec()  # the graph was analysed on examples: give the passthroughs too
    passthrough = {"label": 0, "weight": 1.0, "sampling_probability": 0.0, "video_id": 1,
                   "video_age_days": 0.0, "example_time_us": 0, "user_key": "skew",
                   "negative_source": "", **dict.fromkeys(RANKING_FEATURE_NAMES, 0.0)}  # fmt: skip
    batch = to_record_batch([{**row, **passthrough} for row in rows], arrow_schema(spec))
    out = str(tmp_path / "transformed")
    context = tft_beam.Context(temp_dir=str(tmp_path / "tft"))
    with context, beam.Pipeline(runner=FnApiRunner()) as pipeline:
        transform_fn = pipeline | tft_beam.ReadTransformFn(os.path.join(transform_dir, "user"))
        transformed, metadata = (
            (pipeline | beam.Create([batch]), tensor_adapter_config(spec)),
            transform_fn,
        ) | tft_beam.TransformDataset(output_record_batches=True)
        encoder = example_coder.RecordBatchToExamplesEncoder(metadata.schema)
        _ = (
            transformed
            | beam.FlatMap(lambda b: encoder.encode(b[0]))
            | beam.io.WriteToTFRecord(out, shard_name_template="")
        )
    return [bytes(r.numpy()) for r in tf.data.TFRecordDataset(out)]


def test_exported_video_tower_on_raw_features_matches_training(trained, transformed, snapshot_dir):
    # Training path: the catalogue the transform step wrote (TFT on Beam), read as the trainer
    # reads it, through the tower in memory. Serving path: raw rows into the SavedModel.
    catalogue = trained.catalogue
    training = np.concatenate(
        [
            trained.model.video_tower({k: b[k] for k in VIDEO_TOWER_INPUTS}).numpy()
            for b in catalogue.all_rows(batch_size=128)
        ]
    )
    ranking = np.concatenate(
        [
            trained.model.video_ranker({k: b[k] for k in VIDEO_TOWER_INPUTS}).numpy()
            for b in catalogue.all_rows(batch_size=128)
        ]
    )
    rows = raw_videos(snapshot_dir, transformed)
    serving_tower = load_serving_tower(os.path.join(trained.model_dir, "video_tower"))
    out = serving_tower(examples=tf.constant(serialize_raw(rows, video_row_spec())))
    served = out["embedding"].numpy()
    order = np.argsort([row["video_id"] for row in rows])
    assert [rows[i]["video_id"] for i in order] == catalogue.video_ids.tolist()
    assert served.shape == (len(rows), 768)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(served[order], training, atol=1e-5)
    # The ranking terms too: the same bias and scale serving stores beside each vector.
    terms = np.stack([out["rank_bias"].numpy(), out["rank_scale"].numpy()], axis=1)
    np.testing.assert_allclose(terms[order], ranking, rtol=1e-4, atol=1e-5)
    assert (terms[:, 1] > 0).all()
    # Videos differ: not one vector for all.
    assert np.abs(served - served.mean(axis=0)).max() > 1e-2


def test_exported_user_tower_on_raw_features_matches_training(
    trained, transformed, snapshot_dir, tmp_path
):
    rows = raw_users(snapshot_dir, transformed)
    records = beam_transform_users(rows, transformed.transform_dir, tmp_path)
    spec = outputs(transformed)["user"].transformed_feature_spec()
    parsed = tf.io.parse_example(tf.constant(records), spec)
    # TFT's Beam output order is the input order here (one batch, one bundle).
    assert parsed["user_like_ratio"].numpy().tolist() == pytest.approx(
        [row["like_ratio"] for row in rows]
    )
    training = trained.model.user_tower({k: parsed[k] for k in USER_TOWER_INPUTS}).numpy()
    serving_tower = load_serving_tower(os.path.join(trained.model_dir, "user_tower"))
    served = serving_tower(examples=tf.constant(serialize_raw(rows, user_feature_spec())))
    served = served["embedding"].numpy()
    assert served.shape == (len(rows), 768)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(served, training, atol=1e-5)


def test_keras_files_round_trip(trained, transformed):
    spec = outputs(transformed)["user"].transformed_feature_spec()
    [batch] = list(
        example_dataset(
            transformed.examples_dir, "test", spec, trained.catalogue, batch_size=64
        ).take(1)
    )
    for name, inputs in (("user_tower", USER_TOWER_INPUTS), ("video_tower", VIDEO_TOWER_INPUTS)):
        loaded = load_keras_tower(os.path.join(trained.model_dir, f"{name}.keras"))
        features = {k: batch[k] for k in inputs}
        in_memory = getattr(trained.model, name)(features).numpy()
        np.testing.assert_allclose(loaded(features).numpy(), in_memory, atol=1e-6)


def test_train_command(transformed, tmp_path, capsys):
    out = tmp_path / "model"
    result = subprocess.run(
        [sys.executable, "-m", "swiperec.cli", "train", "--transform", transformed.transform_dir,
         "--examples", transformed.examples_dir, "--out", str(out), "--epochs", "1",
         "--batch-size", "256", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "validation    AUC 0." in result.stdout and "768-d" in result.stdout
    assert read_model_card(str(out))["training"]["epochs_run"] == 1
    # A folder that is no transform output: a clear error, exit status 2, no traceback. In
    # this process (`swiperec.cli.main`, what `python -m swiperec.cli` exits with): an error
    # it does not handle would raise here.
    from swiperec.cli import main

    capsys.readouterr()
    code = main(["train", "--transform", str(tmp_path / "none"), "--out", str(tmp_path / "x")])
    bad = capsys.readouterr()
    assert code == 2 and "not a finished transform output" in bad.err
    assert "Traceback" not in bad.err


def test_a_failed_run_leaves_the_earlier_model_untouched(trained, transformed, tmp_path,
                                                         monkeypatch):  # fmt: skip
    model_dir = tmp_path / "model"
    shutil.copytree(trained.model_dir, model_dir)
    before = read_model_card(str(model_dir))

    def export_fails_halfway(model, tft_outputs, staging):
        os.makedirs(os.path.join(staging, "user_tower"))
        raise OSError("disk full")

    monkeypatch.setattr("swiperec.model.export.export_towers", export_fails_halfway)
    with pytest.raises(OSError, match="disk full"):
        train(transformed.transform_dir, transformed.examples_dir, str(model_dir),
              replace(SMALL, epochs=1), 0)  # fmt: skip
    assert read_model_card(str(model_dir)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_component_records_metrics_and_model_metadata(train_component):
    # The session's model was trained through the component (conftest `train_component`).
    model, metrics = train_component.model, train_component.metrics
    assert train_component.result.model_dir == model.path
    card = read_model_card(model.path)
    assert model.metadata["embedding_dim"] == 768
    assert model.metadata["snapshot_content_hash"] == card["input"]["snapshot_content_hash"]
    assert metrics.metadata["validation/auc"] == card["metrics"]["validation"]["auc"]
    assert metrics.metadata["training_seconds"] == card["training"]["seconds"]
