"""The feature transform end to end: database -> snapshot -> TFT on Beam -> examples.

The small synthetic data set of tests/conftest.py is loaded, snapshotted and transformed once
per session (`snapshot_dir`, `transformed`), through the KFP component's `.python_func`
(`transform_component`); the CLI runs it again through its command, in a process of its own,
and one more run in this process: both with the runner's stages in orders the tests choose,
and both must give the session's examples in its order. (The pipeline tests run the component
under the KFP local runner and isolated, as a cluster.)
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from swiperec.features.config import FeatureConfig
from swiperec.features.transform import SPLITS, read_transform_metadata, run_transform
from tests.conftest import TINY_DATA
from tests.installed import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def read_examples(examples_dir, split):
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(examples_dir, split, "part-*.tfrecord")))
    assert files, f"no TFRecord shards in {examples_dir}/{split}"
    return [bytes(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def parse(transform_dir, records, tower="user"):
    import tensorflow as tf
    import tensorflow_transform as tft

    spec = tft.TFTransformOutput(os.path.join(transform_dir, tower)).transformed_feature_spec()
    return tf.io.parse_example(tf.constant(records), spec)


def test_counts_ratio_and_metadata(transformed, snapshot_dir):
    import tensorflow_transform as tft

    meta = transformed.metadata
    assert (
        meta
        == read_transform_metadata(transformed.examples_dir)
        == read_transform_metadata(transformed.transform_dir)
    )
    from swiperec import snapshot

    assert meta["snapshot"]["content_hash"] == snapshot.read_metadata(snapshot_dir).content_hash
    for split in SPLITS:
        counts = meta["counts"][split]
        assert counts["positive"] > 0
        # 1 positive : 2 negatives, exactly, per user and so in total
        assert counts["nope"] + counts["sampled"] == 2 * counts["positive"]
        assert counts["sampled"] > 0  # nopes alone do not reach 1:2 at a ~38% like rate
    assert meta["split_boundaries"]["validation_start"] < meta["split_boundaries"]["test_start"]
    # the two pipelines' times: each part of the whole run's
    stages = meta["seconds_by_pipeline"]
    assert set(stages) == {"examples", "tft"} and min(stages.values()) > 0
    assert sum(stages.values()) <= meta["seconds"]
    sizes = meta["vocabulary_sizes"]
    assert sizes["text_ngrams"] == 1000  # the top-1000 of many more character n-grams
    video_graph = tft.TFTransformOutput(os.path.join(transformed.transform_dir, "video"))
    assert video_graph.vocabulary_size_by_name("text_ngrams") > 1000  # the file counts them all
    assert 5 <= sizes["genres"] <= 18 and sizes["makers"] > 1 and sizes["performers"] > 10
    assert 0 < sizes["user_genres"] <= sizes["genres"] and sizes["recent_videos"] > 10
    assert 10 < sizes["user_performers"] <= sizes["performers"]
    assert meta["catalogue"]["videos"] == TINY_DATA.videos


def test_the_catalogue_is_transformed_once_per_video(transformed):
    records = read_examples(transformed.examples_dir, "videos")
    videos = parse(transformed.transform_dir, records, tower="video")
    ids = videos["video_id"].numpy()
    assert sorted(ids) == list(range(1, TINY_DATA.videos + 1))
    assert np.isfinite(videos["video_duration_z"].numpy()).all()
    # Every video has some text n-grams inside the 1,000-term vocabulary.
    text_ids = videos["video_text_ids"]
    assert len(np.unique(text_ids.indices.numpy()[:, 0])) == TINY_DATA.videos


def test_examples_are_written_per_split_and_respect_the_time_split(transformed):
    meta = transformed.metadata
    bounds = meta["split_boundaries"]
    starts = {
        name: np.datetime64(bounds[name].rstrip("Z")).astype("datetime64[us]").astype(np.int64)
        for name in ("validation_start", "test_start")
    }
    for split in SPLITS:
        records = read_examples(transformed.examples_dir, split)
        assert len(records) == meta["counts"][split]["examples"]
        features = parse(transformed.transform_dir, records)
        labels = features["label"].numpy()
        assert 2 * labels.sum() == (labels == 0).sum()
        # Each negative says where it came from, as the counts do.
        source = features["negative_source"].numpy()
        assert set(source[labels == 1]) == {b""}
        assert (source == b"nope").sum() == meta["counts"][split]["nope"]
        assert (source == b"sampled").sum() == meta["counts"][split]["sampled"]
        times = features["example_time_us"].numpy()
        if split == "train":
            assert (times < starts["validation_start"]).all()
        elif split == "validation":
            assert ((times >= starts["validation_start"]) & (times < starts["test_start"])).all()
        else:
            assert (times >= starts["test_start"]).all()
        # Pseudo-users (reviews) and real users both feed the split, with their weights.
        pseudo = features["user_is_pseudo"].numpy() == 1.0
        assert pseudo.sum() == meta["counts"][split]["pseudo"]
        if split == "train":
            assert 0 < pseudo.sum() < len(pseudo)
        np.testing.assert_array_equal(features["weight"].numpy(), 1.0)  # default weight 1


def test_each_example_carries_its_videos_swipe_evidence_as_of_its_time(transformed, snapshot_dir):
    from swiperec.features.events import load_snapshot
    from swiperec.features.video_evidence import VIDEO_EVIDENCE_NAMES, VideoSwipeCounts

    catalogue, events, _ = load_snapshot(snapshot_dir, FeatureConfig())
    counts = VideoSwipeCounts(catalogue, events)
    for split in SPLITS:
        features = parse(transformed.transform_dir, read_examples(transformed.examples_dir, split))
        positions = catalogue.index_of(features["video_id"].numpy())
        times = features["example_time_us"].numpy()
        stored = np.stack([features[name].numpy() for name in VIDEO_EVIDENCE_NAMES], -1)
        np.testing.assert_allclose(stored, counts.evidence(positions, times), rtol=1e-6, atol=1e-6)
        # Real evidence, not a constant: swiped and never-swiped videos both appear.
        assert (stored[:, 1] > 0).any() and (stored[:, 1] == 0).any()


def test_each_tower_graph_takes_its_raw_features_as_serving_sends_them(transformed):
    import tensorflow as tf
    import tensorflow_transform as tft

    from swiperec.features.preprocessing import user_feature_spec, video_feature_spec

    def raw_batch(spec, values):
        batch = {}
        for name, feature in spec.items():
            value = values[name]
            if isinstance(feature, tf.io.VarLenFeature):
                batch[name] = tf.RaggedTensor.from_row_lengths(
                    tf.constant(value, dtype=feature.dtype), [len(value)]
                ).to_sparse()
            else:
                batch[name] = tf.constant([value], dtype=feature.dtype)
        return batch

    def layer(tower):
        output = tft.TFTransformOutput(os.path.join(transformed.transform_dir, tower))
        return output.transform_features_layer()

    video = layer("video")(
        raw_batch(
            video_feature_spec(),
            {
                "title": "初恋の放課後",
                "description": "告白の物語。",
                "genres": ["恋愛"],
                "maker": "",
                "performers": [],
                "duration_sec": 3600.0,
                "age_days": 3.0,
            },
        )
    )
    assert set(video) == {
        "video_text_ids",
        "video_text_weights",
        "video_genre_ids",
        "video_maker_id",
        "video_performer_ids",
        "video_duration_z",
        "video_age",
    }
    user_values = {
        name: [] if isinstance(f, tf.io.VarLenFeature) else 0.0
        for name, f in user_feature_spec().items()
    }
    user_values.update(user_source="real", liked_genres=["恋愛"], liked_genre_weights=[1.0],
                       noped_performers=["誰か"], noped_performer_weights=[1.0])  # fmt: skip
    user = layer("user")(raw_batch(user_feature_spec(), user_values))
    assert "user_liked_genre_ids" in user and "label" not in user
    assert user["user_noped_performer_ids"].values.shape == (1,)
    assert user["user_liked_performer_ids"].values.shape == (0,)
    assert all(name.startswith("user_") for name in user)


def _dense(features, order=slice(None)):
    import tensorflow as tf

    dense = {}
    for name, value in features.items():
        if isinstance(value, tf.SparseTensor):
            value = tf.sparse.to_dense(value)
        dense[name] = value.numpy()[order]
    return dense


def _assert_identical_examples(examples_dir, transform_dir, reference):
    """The same examples in the same order, every feature exactly: what Beam's local runner
    gives for one snapshot, in any process (serialised bytes may still order a tf.Example's
    features differently from one process to the next), so the trainer, which shuffles them
    in a seeded order, trains the same model."""
    for split in (*SPLITS, "videos"):
        tower = "video" if split == "videos" else "user"
        ours = _dense(parse(transform_dir, read_examples(examples_dir, split), tower))
        theirs = _dense(
            parse(reference.transform_dir, read_examples(reference.examples_dir, split), tower)
        )
        assert ours.keys() == theirs.keys()
        for name in ours:
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=f"{split}/{name}")


def _assert_same_examples(examples_dir, transform_dir, reference):
    """Same examples, feature by feature, in any order (a runner with several workers writes
    them in the order its bundles finish): ids, labels, times and tokens exactly, floats to
    1e-6."""

    def canonical(examples, transform, split):
        if split == "videos":
            features = parse(transform, read_examples(examples, split), tower="video")
            order = np.argsort(features["video_id"].numpy())
            return _dense(features, order)
        features = parse(transform, read_examples(examples, split))
        keys = [
            f"{u}|{v}|{t}|{label}"
            for u, v, t, label in zip(
                features["user_key"].numpy(),
                features["video_id"].numpy(),
                features["example_time_us"].numpy(),
                features["label"].numpy(),
                strict=True,
            )
        ]
        return _dense(features, np.argsort(keys))

    for split in (*SPLITS, "videos"):
        ours = canonical(examples_dir, transform_dir, split)
        theirs = canonical(reference.examples_dir, reference.transform_dir, split)
        assert ours.keys() == theirs.keys()
        for name in ours:
            if ours[name].dtype.kind == "f":
                # Beam sums analyzer partials in whatever order bundles finish: the last bit
                # of a scaled float may differ; everything else is exact.
                np.testing.assert_allclose(
                    ours[name], theirs[name], rtol=0, atol=1e-6, err_msg=f"{split}/{name}"
                )
            else:
                np.testing.assert_array_equal(ours[name], theirs[name], err_msg=f"{split}/{name}")


def test_component_python_func_writes_its_artifacts_and_their_metadata(transform_component):
    # The session's transform ran through the component: its artifacts hold what run_transform
    # wrote and returned, and carry its counts and vocabulary sizes.
    transformed = transform_component.result
    transform_graph, examples = transform_component.transform_graph, transform_component.examples
    assert (transformed.transform_dir, transformed.examples_dir) == (
        transform_graph.path,
        examples.path,
    )
    assert read_transform_metadata(examples.path) == transformed.metadata
    assert read_transform_metadata(transform_graph.path) == transformed.metadata
    assert (
        examples.metadata["train/positive"] == transformed.metadata["counts"]["train"]["positive"]
    )
    assert transform_graph.metadata["vocabulary_size/text_ngrams"] == 1000


def test_transform_command(transformed, snapshot_dir, tmp_path):
    import subprocess
    import sys

    # The command, with Beam's local runner running independent stages by name, descending
    # (`tests/integration/stage_order.py`; the next test runs them ascending).
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.stage_order",
            "descending",
            "transform",
            "--snapshot",
            snapshot_dir,
            "--out",
            str(tmp_path / "t"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,  # where `tests` is importable
    )
    assert result.returncode == 0, result.stderr[-2000:]
    train = transformed.metadata["counts"]["train"]
    assert f"{train['examples']:,} examples: {train['positive']:,} likes" in result.stdout
    written = read_transform_metadata(str(tmp_path / "t" / "examples"))
    assert written["counts"] == transformed.metadata["counts"]
    # The command's run and the session's (the component's) give the same examples.
    _assert_identical_examples(
        str(tmp_path / "t" / "examples"), str(tmp_path / "t" / "transform"), transformed
    )
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "swiperec.cli",
            "transform",
            "--snapshot",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "u"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_the_examples_do_not_depend_on_the_order_the_runner_runs_its_stages(
    transformed, snapshot_dir, tmp_path
):
    # Beam's local runner picks one of the valid orders of a pipeline's stages, not always the
    # same one. The events were read in two stages, one per table, and the order of those two
    # decided whether the real users' or the pseudo-users' examples came first: one snapshot
    # gave the trainer two inputs, and it trained two models. Run here with the stages by
    # name, ascending (descending in `test_transform_command`): the session's examples, in the
    # session's order.
    from tests.integration.stage_order import stages_by_name

    with stages_by_name(descending=False):
        again = run_transform(snapshot_dir, str(tmp_path / "t"), str(tmp_path / "e"))
    _assert_identical_examples(again.examples_dir, again.transform_dir, transformed)


def test_no_training_likes_is_a_clear_error(snapshot_dir, tmp_path):
    from datetime import UTC, datetime

    from swiperec.errors import SwiperecError

    early = FeatureConfig(
        val_start=datetime(2000, 1, 1, tzinfo=UTC), test_start=datetime(2000, 1, 2, tzinfo=UTC)
    )
    with pytest.raises(SwiperecError, match="no training examples"):
        run_transform(snapshot_dir, str(tmp_path / "t"), str(tmp_path / "e"), early)
    assert not (tmp_path / "e" / "_raw").exists()


def test_a_snapshot_without_events_is_a_clear_error_before_any_pipeline(snapshot_dir, tmp_path):
    from swiperec.snapshot import read_tables, write_tables

    tables = read_tables(snapshot_dir)
    empty = {name: table.slice(0, 0) if name != "videos" else table
             for name, table in tables.items()}  # fmt: skip
    write_tables(tmp_path / "s", empty)
    with pytest.raises(ValueError, match="no events to derive split boundaries from"):
        run_transform(str(tmp_path / "s"), str(tmp_path / "t"), str(tmp_path / "e"))
    assert not (tmp_path / "e").exists()  # refused before anything was written
