"""Raw examples on their way to TFT and to the exported towers: Arrow columns, per-user event
grouping, TFRecord shards, serialized tf.Examples."""

import numpy as np
import pyarrow as pa
import pytest

from swiperec.features.raw_features import to_record_batch


def _schema():
    return pa.schema(
        [
            pa.field("title", pa.large_list(pa.large_binary())),
            pa.field("performers", pa.large_list(pa.large_binary())),
            pa.field("weights", pa.large_list(pa.float32())),
            pa.field("video_id", pa.large_list(pa.int64())),
        ]
    )


def test_scalars_become_lists_of_one_and_lists_keep_their_rows():
    rows = [
        {"title": "猫の動画", "performers": ["a", "b"], "weights": [0.5, 0.25], "video_id": 7},
        {"title": "", "performers": [], "weights": [], "video_id": 8},
        {"title": "x", "performers": "c", "weights": [1.0], "video_id": 9},  # a bare str: [c]
    ]
    batch = to_record_batch(rows, _schema())
    assert batch.schema == _schema()
    assert batch.column("title").to_pylist() == [["猫の動画".encode()], [b""], [b"x"]]
    assert batch.column("performers").to_pylist() == [[b"a", b"b"], [], [b"c"]]
    assert batch.column("weights").to_pylist() == [[0.5, 0.25], [], [1.0]]
    assert batch.column("video_id").to_pylist() == [[7], [8], [9]]


def test_runs_of_equal_lists_come_out_row_by_row_as_written():
    """A list equal to the row before's is converted once and repeated: the batch must read
    exactly as the rows, whether the equal lists are one object, copies or interleaved."""
    shared = ["a", "b"]
    rows = [
        {"title": "t1", "performers": shared, "weights": [0.5], "video_id": 1},
        {"title": "t1", "performers": shared, "weights": [0.5], "video_id": 2},
        {"title": "t2", "performers": list(shared), "weights": [], "video_id": 3},
        {"title": "t2", "performers": [], "weights": [], "video_id": 4},
        {"title": "t3", "performers": ["a", "b"], "weights": [0.25, 0.5], "video_id": 5},
        {"title": "t3", "performers": ["a"], "weights": [0.25, 0.5], "video_id": 6},
        {"title": "t3", "performers": ["a"], "weights": [float("nan")], "video_id": 7},
    ]
    batch = to_record_batch(rows, _schema())
    assert batch.column("title").to_pylist() == [[row["title"].encode()] for row in rows]
    assert batch.column("performers").to_pylist() == [
        [name.encode() for name in row["performers"]] for row in rows
    ]
    weights = batch.column("weights").to_pylist()
    assert weights[:-1] == [row["weights"] for row in rows[:-1]] and np.isnan(weights[-1][0])
    assert batch.column("video_id").to_pylist() == [[v] for v in range(1, 8)]
    # A None in a repeated list is still refused.
    bad = [dict(rows[0], performers=["a", None]), dict(rows[0], performers=["a", None])]
    with pytest.raises(ValueError, match="raw feature 'performers': a row holds None"):
        to_record_batch(bad, _schema())


def test_video_ages_for_arrays_are_the_one_at_a_time_ages():
    from types import SimpleNamespace

    from swiperec.features.raw_features import DAY_US, video_age_days, video_ages_days

    release = np.array(["2024-01-01", "NaT", "2024-03-01"], dtype="datetime64[D]")
    catalogue = SimpleNamespace(release_date=release)
    at = np.datetime64("2024-01-01", "us").astype(np.int64)
    positions = np.array([0, 1, 2, 0, 2])
    times = np.array([at, at, at, at + DAY_US // 2, at + 90 * DAY_US])
    ages = video_ages_days(catalogue, positions, times)
    assert ages.tolist() == [
        video_age_days(catalogue, int(p), int(t)) for p, t in zip(positions, times, strict=True)
    ]
    assert ages.tolist() == [0.0, 0.0, 0.0, 0.5, 30.0]  # no release date or not out yet: 0
    assert video_ages_days(catalogue, positions, at + DAY_US).tolist()[:2] == [1.0, 0.0]


def test_no_rows_make_an_empty_batch():
    batch = to_record_batch([], _schema())
    assert batch.num_rows == 0 and batch.schema == _schema()


@pytest.mark.parametrize(
    "name, row",
    [
        ("title", {"title": None, "performers": [], "weights": [], "video_id": 1}),
        ("performers", {"title": "t", "performers": ["a", None], "weights": [], "video_id": 1}),
        ("weights", {"title": "t", "performers": [], "weights": [1.0, None], "video_id": 1}),
        ("video_id", {"title": "t", "performers": [], "weights": [], "video_id": None}),
    ],
)
def test_a_row_holding_none_is_an_error_naming_the_feature(name, row):
    good = {"title": "t", "performers": ["a"], "weights": [1.0], "video_id": 2}
    with pytest.raises(ValueError, match=f"raw feature '{name}': a row holds None"):
        to_record_batch([good, row], _schema())


def test_a_users_events_from_several_batches_come_out_in_one_order():
    """The grouping hands a user's per-batch chunks over in any order; the examples must not
    depend on it: time, then video id, then label, as sorting (time, video, label) tuples."""
    from swiperec.features.events import Events
    from swiperec.features.transform import _keyed_events, _user_events

    rng = np.random.default_rng(3)
    n = 40
    time_us = rng.integers(0, 5, n).astype(np.int64)  # many equal times
    video_id = rng.integers(0, 4, n).astype(np.int64)
    label = rng.integers(0, 2, n).astype(np.int8)
    expected = sorted(zip(time_us.tolist(), video_id.tolist(), label.tolist(), strict=True))

    def batch(rows):
        order = np.lexsort((video_id[rows], time_us[rows]))  # a batch is sorted per user
        rows = rows[order]
        return Events(np.array(["u"] * len(rows), dtype=object), np.zeros(len(rows), bool),
                      video_id[rows], label[rows], time_us[rows])  # fmt: skip

    halves = np.array_split(rng.permutation(n), 2)
    for chunks in ([halves[0], halves[1]], [halves[1], halves[0]]):
        grouped = [value for batch_rows in chunks for _, value in _keyed_events(batch(batch_rows))]
        key, times, videos, labels, pseudo = _user_events(("u", grouped))
        assert key == "u" and not pseudo.any()
        got = list(zip(times.tolist(), videos.tolist(), labels.tolist(), strict=True))
        assert got == expected


def test_examples_are_read_from_plain_or_gzipped_shards_but_not_both(tmp_path):
    import tensorflow as tf

    from swiperec.model.data import _records, tfrecord_files

    def write(path, records, compression):
        with tf.io.TFRecordWriter(str(path), options=compression) as writer:
            for record in records:
                writer.write(record)

    plain, gzipped = tmp_path / "plain" / "train", tmp_path / "gzipped" / "train"
    for folder in (plain, gzipped):
        folder.mkdir(parents=True)
    write(plain / "part-00000-of-00001.tfrecord", [b"a", b"b"], "")
    write(gzipped / "part-00000-of-00001.tfrecord.gz", [b"c"], "GZIP")
    for root, records in ((plain.parent, [b"a", b"b"]), (gzipped.parent, [b"c"])):
        files = tfrecord_files(str(root), "train")
        assert [bytes(r.numpy()) for r in _records(files)] == records

    write(plain / "part-00001-of-00001.tfrecord.gz", [b"d"], "GZIP")
    with pytest.raises(ValueError, match="both gzipped and plain"):
        tfrecord_files(str(plain.parent), "train")
    with pytest.raises(FileNotFoundError, match="no examples"):
        tfrecord_files(str(tmp_path), "validation")


def test_record_lists_become_tfrecord_shards_and_an_empty_split_one_empty_shard(tmp_path):
    import apache_beam as beam

    from swiperec.features.transform import _check_shards, _write_tfrecords
    from swiperec.model.data import _records, tfrecord_files

    out = tmp_path / "examples"
    for split, lists in (("train", [[b"a", b"b"], [b"c"]]), ("test", [])):
        with beam.Pipeline() as pipeline:
            records = pipeline | beam.Create(lists)
            _ = records | _write_tfrecords(str(out / split), str(tmp_path / "temp" / split))
        _check_shards(str(out / split), bool(lists))
    train = [bytes(r.numpy()) for r in _records(tfrecord_files(str(out), "train"))]
    assert sorted(train) == [b"a", b"b", b"c"]
    assert list(_records(tfrecord_files(str(out), "test"))) == []


def test_raw_tables_written_as_arrow_files_read_back_as_their_rows(tmp_path):
    """The raw examples between the transform's two pipelines: every row comes back, and a
    split without examples (no file) reads as no batches."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from swiperec.features.transform import _check_shards, _read_arrow_files, _write_arrow_files

    tables = [
        to_record_batch([{"title": f"t{i}", "performers": ["a"] * (i % 3), "weights": [0.5],
                          "video_id": i} for i in range(start, start + 700)], _schema())
        for start in (0, 700, 1400)
    ]  # fmt: skip
    tables = [pa.Table.from_batches([batch]) for batch in tables]
    for split, written in (("train", tables), ("test", [])):
        with beam.Pipeline() as pipeline:
            _ = (pipeline | beam.Create(written, reshuffle=False)
                 | _write_arrow_files(str(tmp_path / split), str(tmp_path / "temp" / split),
                                      _schema()))  # fmt: skip
        _check_shards(str(tmp_path / split), bool(written), ".arrows", empty_shard=False)

    def as_text(row):
        return repr(sorted(row.items()))

    expected = [as_text(row) for table in tables for row in table.to_pylist()]
    for split, rows in (("train", expected), ("test", [])):
        with beam.Pipeline() as pipeline:
            batches = pipeline | _read_arrow_files(str(tmp_path / split))
            same_schema = batches | beam.Map(lambda batch: batch.schema.equals(_schema()))
            assert_that(same_schema | beam.Distinct(), equal_to([True] if rows else []))
            read = batches | beam.FlatMap(lambda batch: map(as_text, batch.to_pylist()))
            assert_that(read, equal_to(rows), label="rows")
    assert not list((tmp_path / "test").glob("part-*"))


def test_a_shard_that_never_arrived_fails_the_check(tmp_path):
    from swiperec.errors import SwiperecError
    from swiperec.features.transform import _check_shards

    (tmp_path / "part-00000-of-00002.tfrecord").write_bytes(b"")
    with pytest.raises(SwiperecError, match="1 of 2 shards in place"):
        _check_shards(str(tmp_path), written=True)
    # none arrived of a split that had examples: not mistaken for an empty split
    for suffix, empty_shard in ((".tfrecord", True), (".arrows", False)):
        with pytest.raises(SwiperecError, match="no shards in place, where some were written"):
            _check_shards(str(tmp_path / "none"), True, suffix, empty_shard)
        assert not (tmp_path / "none").exists()


def _tower_spec():
    import tensorflow as tf

    fixed, var = tf.io.FixedLenFeature, tf.io.VarLenFeature
    return {
        "title": fixed([], tf.string),
        "genres": var(tf.string),
        "weights": var(tf.float32),
        "video_id": fixed([], tf.int64),
        "age_days": fixed([], tf.float32),
    }


def test_serialized_raw_rows_parse_back_as_the_rows():
    import tensorflow as tf

    from swiperec.model.export import serialize_raw

    rows = [
        {"title": "猫の動画", "genres": ["ミステリー", "b"], "weights": [0.5, 0.25],
         "video_id": 7, "age_days": np.float64(2.5)},
        {"title": "", "genres": [], "weights": [], "video_id": 2**53 + 1, "age_days": 0},
        {"title": b"x", "genres": ["c"], "weights": [1], "video_id": 9, "age_days": 1e-3},
    ]  # fmt: skip
    spec = _tower_spec()
    records = serialize_raw(rows, spec)
    assert len(records) == 3 and all(isinstance(r, bytes) for r in records)
    parsed = tf.io.parse_example(records, spec)
    assert parsed["title"].numpy().tolist() == ["猫の動画".encode(), b"", b"x"]
    assert parsed["video_id"].numpy().tolist() == [7, 2**53 + 1, 9]
    np.testing.assert_array_equal(parsed["age_days"].numpy(), np.float32([2.5, 0, 1e-3]))
    genres = tf.RaggedTensor.from_sparse(parsed["genres"]).to_list()
    assert genres == [["ミステリー".encode(), b"b"], [], [b"c"]]
    assert tf.RaggedTensor.from_sparse(parsed["weights"]).to_list() == [[0.5, 0.25], [], [1.0]]


def test_a_list_empty_in_every_row_is_present_and_empty():
    import tensorflow as tf

    from swiperec.model.export import serialize_raw

    row = {"title": "t", "genres": [], "weights": [], "video_id": 1, "age_days": 0.0}
    parsed = tf.io.parse_example(serialize_raw([row, row], _tower_spec()), _tower_spec())
    assert tf.RaggedTensor.from_sparse(parsed["genres"]).to_list() == [[], []]
    assert parsed["title"].numpy().tolist() == [b"t", b"t"]


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("age_days", None, "'age_days': a row holds None"),
        ("weights", [1.0, None], "'weights': a row holds None"),
        ("genres", ["a", None], "'genres': a row holds None"),
    ],
)
def test_serializing_a_row_holding_none_is_an_error_naming_the_feature(name, value, message):
    from swiperec.model.export import serialize_raw

    row = {"title": "t", "genres": [], "weights": [], "video_id": 1, "age_days": 0.0}
    with pytest.raises(ValueError, match=message):
        serialize_raw([row, {**row, name: value}], _tower_spec())
