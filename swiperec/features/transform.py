"""The feature-transform step: a snapshot in; two TFT graphs, the catalogue and the examples out.

    run_transform("artifacts/snapshot", "artifacts/transform", "artifacts/examples",
                  FeatureConfig(), ["--direct_num_workers=2",
                                    "--direct_running_mode=multi_processing"])

Two TensorFlow Transform graphs, one per tower:
- the video graph is analysed on the catalogue (each video once) and applied to it: the
  transformed catalogue is the candidate set the trainer and the evaluator rank;
- the user graph is analysed on the training examples and applied to all three splits.

Two Beam pipelines. The first reads the snapshot's decisions and reviews, groups them per user,
and walks each user's history in time order (`build_user_examples`): every example carries the
user's features as of its own time, so no feature sees a decision at or after it. It writes the
raw examples as Arrow IPC streams (`examples_dir/_raw/`, removed at the end), so the second
pipeline, the two TFT graphs, reads each split from disk for each use and no stage holds every
example. An example names its video by id; the trainer joins it to the transformed catalogue.
Rows travel as Arrow record batches, TFT's efficient input format.

Outputs:
    transform_dir/video/, transform_dir/user/     the two TFT outputs (graphs, vocabularies)
    examples_dir/videos/part-*.tfrecord           the transformed catalogue, one row per video
    examples_dir/{train,validation,test}/part-*.tfrecord   transformed examples (uncompressed:
                                                  gzip was an eighth of the time)
    metadata.json in both: counts, vocabulary sizes, split boundaries, config, snapshot hash

Beyond one machine: the same pipeline takes Beam's pipeline options. The driver reads only the
snapshot's metadata; the workers read the catalogue, the decisions and the reviews from the
snapshot themselves and compute the side inputs (split boundaries, the sampler's popularity, the
videos' swipe counts) inside the pipeline, so the job graph holds paths, not data: 0.3 MB and
2.0 MB for the two pipelines at 2k, 32k or 200k videos (`job_graph_bytes`).
    Dataflow: --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
              --staging_location=gs://B/staging --sdk_container_image=<the pipeline image>
    Flink:    --runner=FlinkRunner --flink_master=HOST:8081 --environment_type=DOCKER
              --environment_config=<the pipeline image>
    Spark:    --runner=SparkRunner --spark_master_url=spark://HOST:7077 (same environment flags)
with the snapshot and output folders on gs:// (or another filesystem all workers see).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from swiperec.beam_pipeline import new_pipeline
from swiperec.errors import SwiperecError
from swiperec.features.config import FeatureConfig, datetime_to_us
from swiperec.features.events import load_catalogue, parse_events
from swiperec.features.examples import (
    NegativeSampler,
    SplitBoundaries,
    boundaries_from_times,
    build_user_examples,
    train_event_counts,
)
from swiperec.features.preprocessing import example_spec
from swiperec.features.raw_features import (
    arrow_schema,
    catalogue_record_batches,
    tensor_adapter_config,
    to_record_batch,
    video_ages_days,
)
from swiperec.features.video_evidence import (
    VIDEO_EVIDENCE_NAMES,
    VideoSwipeCounts,
    vote_changes,
)
from swiperec.snapshot import read_metadata, read_table_groups

SPLITS = ("train", "validation", "test")
_CATALOGUE_ROWS = 10_000  # videos per record batch of the catalogue's raw features
_BATCH_ROWS = 512  # raw examples per record batch built, about (whole users)
_TABLE_ROWS = 4_096  # raw examples per table written, about
_DAY_US = 86_400 * 1_000_000


@dataclass
class TransformResult:
    transform_dir: str
    examples_dir: str
    metadata: dict


def _kind_and_groups(kind: str, snapshot: str):
    """The snapshot's table `kind` ("decisions" or "reviews") -> (kind, one Parquet row group)
    per row group, in the file's order."""
    for group in read_table_groups(snapshot, kind):
        yield kind, group


def _parse_batch(kind_and_batch: tuple, catalogue, config: FeatureConfig):
    """(kind, one Parquet row group of decisions or reviews) -> `Events`, by the snapshot's one
    parser (`parse_events`); what it rejects is counted under Beam's "snapshot" metrics."""
    from apache_beam.metrics import Metrics

    kind, batch = kind_and_batch
    events = parse_events(catalogue, batch if kind == "decisions" else None,
                          batch if kind == "reviews" else None, config)  # fmt: skip
    for name, count in events.stats.items():
        if count:
            Metrics.counter("snapshot", name).inc(count)
    return events


def _keyed_events(events):
    """`Events` of one record batch -> (user_key, (time_us, video_id, label, is_pseudo)) per
    user in it, four arrays: a user's events travel to the grouping as a few arrays rather
    than as one element each."""
    for key, _, rows in events.user_slices():
        yield key, (events.time_us[rows], events.video_id[rows], events.label[rows],
                    events.is_pseudo[rows])  # fmt: skip


def _user_events(keyed) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user_key, the grouped arrays of `_keyed_events`) -> (user_key, time_us, video_id,
    label, is_pseudo), ordered by time, then video id, then label: a deterministic order for
    equal times, whichever batches the events came in."""
    user_key, chunks = keyed
    times, videos, labels, pseudo = (np.concatenate(c) for c in zip(*chunks, strict=True))
    order = np.lexsort((labels, videos, times))
    return user_key, times[order], videos[order], labels[order], pseudo[order]


def _event_times(events):
    """`Events` -> (real users' times, pseudo-users' times): what the split boundaries need."""
    pseudo = np.asarray(events.is_pseudo, dtype=bool)
    return events.time_us[~pseudo], events.time_us[pseudo]


def _user_train_counts(keyed, catalogue, boundaries):
    """One user's grouped events -> their `train_event_counts` (the sampler's popularity)."""
    _, times, videos, _, _ = _user_events(keyed)
    return train_event_counts(catalogue, videos, times, boundaries)


def _user_vote_changes(keyed, catalogue):
    """One user's grouped events -> their `vote_changes` (none for a pseudo-user)."""
    _, times, videos, labels, pseudo = _user_events(keyed)
    real = ~pseudo.astype(bool)
    if real.any():
        positions = catalogue.index_of(videos[real])
        yield vote_changes(positions, np.zeros(int(real.sum()), np.int64), times[real],
                           labels[real])  # fmt: skip


def _combine_fns():
    import apache_beam as beam

    class ConcatArrays(beam.CombineFn):
        """Tuples of equally many arrays -> one tuple of their concatenations (None if none)."""

        def create_accumulator(self):
            return []

        def add_input(self, parts, arrays):
            parts.append(arrays)
            return parts

        def merge_accumulators(self, accumulators):
            return [arrays for parts in accumulators for arrays in parts]

        def compact(self, parts):
            return [self.extract_output(parts)] if len(parts) > 1 else parts

        def extract_output(self, parts):
            if not parts:
                return None
            return tuple(np.concatenate(column) for column in zip(*parts, strict=True))

    class SumArrays(beam.CombineFn):
        """Arrays of one shape -> their sum (None if none)."""

        def create_accumulator(self):
            return None

        def add_input(self, total, array):
            return array if total is None else total + array

        def merge_accumulators(self, accumulators):
            totals = [a for a in accumulators if a is not None]
            return sum(totals[1:], totals[0]) if totals else None

        def extract_output(self, total):
            return total

    return ConcatArrays(), SumArrays()


def _build_examples_fn(config: FeatureConfig):
    import apache_beam as beam
    from apache_beam.transforms.window import GlobalWindows

    class BuildUserExamples(beam.DoFn):
        """Users' grouped events -> Arrow tables of their examples, one split per table
        (tagged outputs). A bundle's users share record batches of about `_BATCH_ROWS` rows
        (Arrow converts each column of a batch in one call; held longer, the rows' Python
        objects would lengthen every pass of the garbage collector) and tables of about
        `_TABLE_ROWS` rows, each passed to the writer once."""

        def setup(self):
            self.arrow_schema = arrow_schema(example_spec())

        def start_bundle(self):
            self.rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
            self.batches: dict[str, list] = {split: [] for split in SPLITS}
            # summed here, added to Beam's counters once a bundle (`finish_bundle`)
            self.counts: Counter[str] = Counter()

        def process(self, keyed, catalogue, sampler, swipe_counts, boundaries):
            for example in _user_examples(
                keyed, catalogue, sampler, swipe_counts, boundaries, config
            ):
                self.counts.update(_counter_names(example))
                self.rows[example["split"]].append(example)
            for split in SPLITS:
                if len(self.rows[split]) >= _BATCH_ROWS:
                    self._to_batch(split)
                if sum(batch.num_rows for batch in self.batches[split]) >= _TABLE_ROWS:
                    yield beam.pvalue.TaggedOutput(split, self._to_table(split))

        def finish_bundle(self):
            from apache_beam.metrics import Metrics

            for name, count in self.counts.items():
                Metrics.counter("examples", name).inc(count)
            # What is left goes out in the global window, where all of this pipeline runs.
            for split in SPLITS:
                self._to_batch(split)
                if self.batches[split]:
                    table = GlobalWindows.windowed_value(self._to_table(split))
                    yield beam.pvalue.TaggedOutput(split, table)

        def _to_batch(self, split: str) -> None:
            if self.rows[split]:
                self.batches[split].append(to_record_batch(self.rows[split], self.arrow_schema))
                self.rows[split] = []

        def _to_table(self, split: str):
            import pyarrow as pa

            # One chunk per column: a table of many chunks pickles slowly on its way to the
            # writer (which runs in a stage of its own, after its side input).
            table = pa.Table.from_batches(self.batches[split]).combine_chunks()
            self.batches[split] = []
            return table

    return BuildUserExamples()


def _user_examples(keyed, catalogue, sampler, swipe_counts, boundaries, config: FeatureConfig):
    """(user_key, events) -> the user's raw examples, each with its video's age and swipe
    evidence (`VIDEO_EVIDENCE_NAMES`) at that time."""
    user_key, times, videos, labels, pseudo = _user_events(keyed)
    examples = build_user_examples(
        user_key,
        bool(pseudo[0]),
        videos,
        labels,
        times,
        catalogue,
        sampler,
        boundaries,
        config,
    )
    if not examples:
        return examples
    positions = catalogue.index_of(np.array([e["video_id"] for e in examples], np.int64))
    times = np.array([e["example_time_us"] for e in examples], np.int64)
    # The video's age when the user saw it; the catalogue's own age is as of the cutoff.
    ages = video_ages_days(catalogue, positions, times).tolist()
    evidence = swipe_counts.evidence(positions, times).tolist()
    for example, age, values in zip(examples, ages, evidence, strict=True):
        example["video_age_days"] = age
        example.update(zip(VIDEO_EVIDENCE_NAMES, values, strict=True))
    return examples


def _build_examples_pipeline(pipeline, snapshot, raw_dir, config) -> None:
    """Pipeline 1: events -> per-user examples -> raw example files per split (Arrow IPC).

    The workers read everything from the snapshot: the catalogue (one worker loads
    videos.parquet; the runner hands it to the others as a side input), the events (parsed
    per Parquet row group, the decisions first), and from those the side inputs the example
    builder needs (the split boundaries, the negative sampler's popularity, the videos' swipe
    counts). The job graph holds the snapshot's path, not its contents. The boundaries and
    the catalogue's size go to `raw_dir/summary.json` for the driver.

    Raw examples go to disk between the two pipelines so that no stage has to hold them all:
    Beam's local runner keeps a PCollection that feeds two consumers (TFT's analysis and its
    transform) in memory, which does not fit at 200k videos and 10k users.
    """
    import apache_beam as beam
    from apache_beam.pvalue import AsSingleton

    from swiperec.features.preprocessing import example_spec

    concat, total = _combine_fns()
    catalogue = AsSingleton(
        pipeline | "Snapshot" >> beam.Create([snapshot]) | "Catalogue" >> beam.Map(load_catalogue)
    )
    # Both tables in one stage, the decisions first: the grouping by user below then meets the
    # users in the same order on every run of Beam's in-process runner, which keeps the order
    # in which keys arrive. (Two read stages ran in an order of the runner's choosing: the
    # pseudo-users' examples came first in some runs, the real users' in others, and the same
    # snapshot trained another model.) On a cluster one worker now reads and parses both
    # tables (vectorised, per row group); the heavy work, building the examples, follows the
    # grouping and is spread across the workers as before.
    events = (
        pipeline
        | "Event tables" >> beam.Create(["decisions", "reviews"], reshuffle=False)
        | "Read events" >> beam.FlatMap(_kind_and_groups, snapshot)
        | "Parse events" >> beam.Map(_parse_batch, catalogue, config)
    )
    per_user = (
        events | "Key by user" >> beam.FlatMap(_keyed_events) | "Per user" >> beam.GroupByKey()
    )

    boundaries = (
        events
        | "Event times" >> beam.Map(_event_times)
        | "All times" >> beam.CombineGlobally(concat)
        | "Split boundaries"
        >> beam.Map(lambda times: boundaries_from_times(*(times or ((), ())), config))
    )
    sampler = (
        per_user  # already materialised by the grouping: nothing more to buffer for the wait
        | "Train counts"
        >> beam.Map(_user_train_counts, catalogue, AsSingleton(boundaries))
        | "Sum counts" >> beam.CombineGlobally(total)
        | "Sampler"
        >> beam.Map(
            lambda counts, c: NegativeSampler.from_counts(
                c, np.zeros(len(c), np.int64) if counts is None else counts, config
            ),
            catalogue,
        )
    )  # fmt: skip
    swipe_counts = (
        per_user
        | "Vote changes" >> beam.FlatMap(_user_vote_changes, catalogue)
        | "All changes" >> beam.CombineGlobally(concat)
        | "Swipe counts"
        >> beam.Map(
            lambda changes, c: VideoSwipeCounts.from_changes(
                len(c), changes or tuple(np.zeros(0, np.int64) for _ in range(4))
            ),
            catalogue,
        )
    )  # fmt: skip
    _ = (
        boundaries
        | "Summary"
        >> beam.Map(
            lambda b, c: json.dumps({"val_start_us": b.val_start_us,
                                     "test_start_us": b.test_start_us, "videos": len(c)}),
            catalogue,
        )
        | "Write summary"
        >> beam.io.WriteToText(os.path.join(raw_dir, "summary"), file_name_suffix=".json",
                               shard_name_template="")
    )  # fmt: skip

    raw = per_user | "Build examples" >> beam.ParDo(
        _build_examples_fn(config), catalogue, AsSingleton(sampler),
        AsSingleton(swipe_counts), AsSingleton(boundaries),
    ).with_outputs(*SPLITS)  # fmt: skip
    schema = arrow_schema(example_spec())
    for split in SPLITS:
        _ = raw[split] | f"Write raw {split}" >> _write_arrow_files(
            os.path.join(raw_dir, split), os.path.join(raw_dir, "_temp", split), schema
        )


def _write_arrow_files(folder: str, temp_dir: str, schema):
    """Arrow tables -> files `folder/part-i-of-N.arrows` in Arrow's IPC stream format,
    LZ4-compressed, written under `temp_dir` and moved into `folder` when all are written
    (`_check_shards` checks they arrived): the raw examples between the two pipelines, which
    live only as long as the run, written and read back at several times Parquet's speed."""
    from apache_beam.io import fileio
    from apache_beam.options.value_provider import StaticValueProvider

    return fileio.WriteToFiles(
        folder,
        file_naming=fileio.default_file_naming("part", ".arrows"),
        temp_directory=StaticValueProvider(str, temp_dir),
        sink=lambda _: _ArrowStreamSink(schema),
    )


def _read_arrow_files(folder: str):
    """The files `_write_arrow_files` wrote into `folder` -> their record batches. A folder
    without files (a split without examples) yields none; nothing is checked when the pipeline
    is built, so `job_graph_bytes` can build it before the files exist."""
    import apache_beam as beam
    from apache_beam.io import fileio

    @beam.ptransform_fn
    def read(pipeline):
        return (
            pipeline
            | "Match" >> fileio.MatchFiles(os.path.join(folder, "part-*.arrows"))
            | "Spread" >> beam.Reshuffle()  # the files across the workers
            | "Open" >> fileio.ReadMatches()
            | "Batches" >> beam.FlatMap(_read_arrow_stream)
        )

    return read()


class _ArrowStreamSink:
    """Arrow tables -> one Arrow IPC stream (a `fileio.FileSink`). Beam's `WriteToFiles`
    makes a sink per file and flushes it once, just before closing the file: the stream ends
    there, and a write after it is an error."""

    def __init__(self, schema):
        self._schema = schema
        self._writer = None

    def open(self, fh):
        import pyarrow as pa

        options = pa.ipc.IpcWriteOptions(compression="lz4")
        self._writer = pa.ipc.new_stream(fh, self._schema, options=options)

    def write(self, table):
        if self._writer is None:
            raise RuntimeError("a raw examples file written after its stream ended (flush)")
        self._writer.write_table(table)

    def flush(self):
        if self._writer is not None:
            self._writer.close()  # writes the end-of-stream marker; the file stays open
            self._writer = None

    def create_metadata(self, destination, full_file_name):
        from apache_beam.io.fileio import FileMetadata
        from apache_beam.io.filesystem import CompressionTypes

        return FileMetadata("application/vnd.apache.arrow.stream", CompressionTypes.UNCOMPRESSED)


def _read_arrow_stream(readable_file):
    """One file `_ArrowStreamSink` wrote (a `fileio.ReadableFile`) -> its record batches."""
    import pyarrow as pa

    with readable_file.open() as handle:
        yield from pa.ipc.open_stream(handle)


def _catalogue_rows_fn(snapshot: str, cutoff_us: int):
    import apache_beam as beam

    from swiperec.features.preprocessing import video_row_spec

    class CatalogueRows(beam.DoFn):
        """A (start, stop) range of catalogue positions -> its raw video features, one record
        batch; each worker reads the catalogue from the snapshot once."""

        def setup(self):
            self.catalogue = load_catalogue(snapshot)
            self.spec = video_row_spec()

        def process(self, rows):
            start, stop = rows
            yield from catalogue_record_batches(
                self.catalogue, cutoff_us, self.spec, rows=range(start, stop)
            )

    return CatalogueRows()


def _build_transform_pipeline(
    pipeline, snapshot, raw_dir, transform_dir, examples_dir, config, videos: int, cutoff_us: int
) -> None:
    """Pipeline 2 (inside a `tft_beam.Context`): the two TFT graphs, analysed and applied."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam

    from swiperec.features.preprocessing import (
        example_spec,
        make_user_preprocessing_fn,
        make_video_preprocessing_fn,
        video_row_spec,
    )

    # -- the catalogue: analysed and transformed once per video ----------------------------
    ranges = [(start, min(start + _CATALOGUE_ROWS, videos))
              for start in range(0, videos, _CATALOGUE_ROWS)]  # fmt: skip
    rows = (
        pipeline
        | "Catalogue ranges" >> beam.Create(ranges)
        | "Catalogue rows" >> beam.ParDo(_catalogue_rows_fn(snapshot, cutoff_us))
    )
    (transformed_videos, video_metadata), video_fn = (
        rows,
        tensor_adapter_config(video_row_spec()),
    ) | "Video transform" >> tft_beam.AnalyzeAndTransformDataset(
        make_video_preprocessing_fn(config), output_record_batches=True
    )
    _ = video_fn | "Write video graph" >> tft_beam.WriteTransformFn(
        os.path.join(transform_dir, "video")
    )
    written = os.path.join(raw_dir, "_written")  # files being written; removed with raw_dir
    _write_examples(transformed_videos, video_metadata, os.path.join(examples_dir, "videos"),
                    "videos", written)  # fmt: skip

    # -- the examples: the user graph, analysed on the training split only -------------------
    adapter_config = tensor_adapter_config(example_spec())

    def read_raw(split: str, purpose: str):
        # Each consumer reads the files itself: nothing is held in memory for a second one.
        return pipeline | f"Read raw {split} for {purpose}" >> _read_arrow_files(
            os.path.join(raw_dir, split)
        )

    # Validation and test statistics must not leak into the analysis.
    user_fn = (read_raw("train", "analysis"), adapter_config) | "User analyze" >> (
        tft_beam.AnalyzeDataset(make_user_preprocessing_fn(config))
    )
    _ = user_fn | "Write user graph" >> tft_beam.WriteTransformFn(
        os.path.join(transform_dir, "user")
    )
    for split in SPLITS:
        transformed, metadata = (
            (read_raw(split, "transform"), adapter_config),
            user_fn,
        ) | f"Transform {split}" >> tft_beam.TransformDataset(output_record_batches=True)
        _write_examples(transformed, metadata, os.path.join(examples_dir, split), split, written)


def _write_examples(transformed, metadata, folder: str, label: str, temp_dir: str) -> None:
    """Transformed record batches -> serialized tf.Examples in TFRecord files."""
    import apache_beam as beam
    from tfx_bsl.coders import example_coder

    encoder = example_coder.RecordBatchToExamplesEncoder(metadata.schema)
    batches = transformed | f"Encode {label}" >> beam.Map(lambda batch: encoder.encode(batch[0]))
    _ = batches | f"Write {label}" >> _write_tfrecords(folder, os.path.join(temp_dir, label))


def _write_tfrecords(folder: str, temp_dir: str):
    """Lists of serialized records -> uncompressed TFRecord files `folder/part-i-of-N.tfrecord`,
    written under `temp_dir` and moved into `folder` when all are written (`_check_shards`
    checks they arrived). A list travels as one element: one element per record cost the
    transform nearly a tenth of its time in Beam's per-element work."""
    from apache_beam.io import fileio
    from apache_beam.options.value_provider import StaticValueProvider

    return fileio.WriteToFiles(
        folder,
        file_naming=fileio.default_file_naming("part", ".tfrecord"),
        temp_directory=StaticValueProvider(str, temp_dir),
        sink=_tfrecord_batch_sink(),
    )


def _check_shards(
    folder: str, written: bool, suffix: str = ".tfrecord", empty_shard: bool = True
) -> None:
    """Every shard `fileio.WriteToFiles` named (`part-i-of-N<suffix>`) is in `folder`, or
    raise: `WriteToFiles` logs a failed move into place and goes on. `written` says whether
    anything was written (a split with examples): then a folder without shards is an error
    too. A split with no examples gets one empty shard when `empty_shard` (as Beam's TFRecord
    sink wrote, so readers find the split empty rather than missing), else nothing."""
    import re

    import tensorflow as tf

    files = tf.io.gfile.glob(os.path.join(folder, f"part-*{suffix}"))
    if not files:
        if written:
            raise SwiperecError(
                f"{folder}: no shards in place, where some were written: moving them there "
                "failed; run the transform again"
            )
        if empty_shard:
            tf.io.gfile.makedirs(folder)
            with tf.io.gfile.GFile(os.path.join(folder, f"part-00000-of-00001{suffix}"), "wb") as f:
                f.write(b"")  # a GFile nothing is written to is never created
        return
    totals = sorted({int(re.search(rf"-of-(\d+){re.escape(suffix)}$", path).group(1))
                     for path in files})  # fmt: skip
    if totals != [len(files)]:
        raise SwiperecError(
            f"{folder}: {len(files)} of {' or '.join(map(str, totals))} shards in place: "
            "moving them there failed; run the transform again"
        )


def _tfrecord_batch_sink():
    from apache_beam.io import fileio
    from apache_beam.io.tfrecordio import _TFRecordUtil

    class TFRecordBatchSink(fileio.FileSink):
        """Lists of serialized records -> a TFRecord file (framed by Beam's TFRecord code)."""

        def open(self, fh):
            self._fh = fh

        def write(self, records):
            for record in records:
                _TFRecordUtil.write_record(self._fh, record)

        def flush(self):
            self._fh.flush()

    return TFRecordBatchSink


def run_transform(
    snapshot: str,
    transform_dir: str,
    examples_dir: str,
    config: FeatureConfig | None = None,
    pipeline_args: list[str] | None = None,
) -> TransformResult:
    """Run the feature transform over `snapshot` (local paths or gs:// URIs throughout)."""
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam

    config = config or FeatureConfig()
    started = time.time()
    snapshot_meta = read_metadata(snapshot)  # the workers read the rest of the snapshot
    cutoff_us = datetime_to_us(snapshot_meta.cutoff)
    rows = snapshot_meta.row_counts
    if config.val_start is None and rows.get("decisions", 0) + rows.get("reviews", 0) == 0:
        raise ValueError("no events to derive split boundaries from; set val_start and test_start")

    raw_dir = os.path.join(examples_dir, "_raw")
    # A re-run replaces what an earlier (maybe failed) run left: stale shards would be read,
    # and a metadata.json would call a half-rewritten output finished.
    for folder in (
        raw_dir,
        *(os.path.join(examples_dir, s) for s in (*SPLITS, "videos")),
        *(os.path.join(transform_dir, tower) for tower in ("video", "user")),
    ):
        if tf.io.gfile.exists(folder):
            tf.io.gfile.rmtree(folder)
    for folder in (transform_dir, examples_dir):
        if tf.io.gfile.exists(os.path.join(folder, "metadata.json")):
            tf.io.gfile.remove(os.path.join(folder, "metadata.json"))
    examples_pipeline = new_pipeline(pipeline_args)
    _build_examples_pipeline(examples_pipeline, snapshot, raw_dir, config)
    counts = _run(examples_pipeline, _read_counts)
    for split in SPLITS:
        written = counts[split]["examples"] > 0
        _check_shards(os.path.join(raw_dir, split), written, ".arrows", empty_shard=False)
    examples_done = time.time()
    with tf.io.gfile.GFile(os.path.join(raw_dir, "summary.json")) as handle:
        summary = json.load(handle)
    boundaries = SplitBoundaries(summary["val_start_us"], summary["test_start_us"])
    if counts["train"]["positive"] == 0:
        tf.io.gfile.rmtree(raw_dir)
        raise SwiperecError(
            f"no training examples: no like falls before the validation start "
            f"({_iso(boundaries.val_start_us)}); move the split boundaries later"
        )
    # TFT's scratch space must be visible to every worker: under the output on gs://.
    remote = "://" in transform_dir
    temp_dir = (
        os.path.join(transform_dir, "_tft_tmp")
        if remote
        else tempfile.mkdtemp(prefix="swiperec-tft-")
    )
    transform_pipeline = new_pipeline(pipeline_args)
    with tft_beam.Context(temp_dir=temp_dir):
        _build_transform_pipeline(transform_pipeline, snapshot, raw_dir, transform_dir,
                                  examples_dir, config, summary["videos"], cutoff_us)  # fmt: skip
    try:
        _run(transform_pipeline)
        tft_done = time.time()
    finally:
        if remote:
            if tf.io.gfile.exists(temp_dir):
                tf.io.gfile.rmtree(temp_dir)
        else:
            shutil.rmtree(temp_dir, ignore_errors=True)
    del examples_pipeline, transform_pipeline
    gc.collect()
    for folder in (*SPLITS, "videos"):
        written = summary["videos"] if folder == "videos" else counts[folder]["examples"]
        _check_shards(os.path.join(examples_dir, folder), written > 0)
    tf.io.gfile.rmtree(raw_dir)

    outputs = {
        tower: tft.TFTransformOutput(os.path.join(transform_dir, tower))
        for tower in ("video", "user")
    }
    metadata = {
        "snapshot": {  # where it was read from: for people (`swiperec evaluate`'s default)
            "path": snapshot,
            "content_hash": snapshot_meta.content_hash,
            "cutoff": snapshot_meta.cutoff.isoformat(),
        },
        "config": config.to_dict(),
        "split_boundaries": {
            "validation_start": _iso(boundaries.val_start_us),
            "test_start": _iso(boundaries.test_start_us),
        },
        "counts": counts,
        "catalogue": {"videos": summary["videos"], "as_of": _iso(cutoff_us)},
        "vocabulary_sizes": _vocabulary_sizes(outputs, config),
        "transformed_features": {
            tower: sorted(output.transformed_feature_spec()) for tower, output in outputs.items()
        },
        "seconds": round(time.time() - started, 2),
        # pipeline 1 (grouping and building the raw examples), from the start of the run;
        # pipeline 2 (the two TFT graphs analysed and applied, the TFRecords written), from
        # the end of pipeline 1 (its graphs traced while it is built); what follows (checking
        # the shards, reading the TFT outputs back) is in neither
        "seconds_by_pipeline": {
            "examples": round(examples_done - started, 2),
            "tft": round(tft_done - examples_done, 2),
        },
    }
    for folder in (transform_dir, examples_dir):
        with tf.io.gfile.GFile(os.path.join(folder, "metadata.json"), "w") as handle:
            handle.write(json.dumps(metadata, indent=2))
    return TransformResult(transform_dir, examples_dir, metadata)


def job_graph_bytes(snapshot: str, config: FeatureConfig | None = None) -> dict[str, int]:
    """The serialized size of each of the transform's two job graphs for `snapshot` (built,
    not run): what a runner such as Dataflow receives before any worker starts. It holds
    paths and code, not data, so it stays the same size whatever the catalogue's."""
    import tensorflow_transform.beam as tft_beam

    config = config or FeatureConfig()
    meta = read_metadata(snapshot)
    examples = new_pipeline([])
    _build_examples_pipeline(examples, snapshot, "/unused/_raw", config)
    transform = new_pipeline([])
    with (
        tempfile.TemporaryDirectory(prefix="swiperec-graph-") as scratch,
        tft_beam.Context(temp_dir=scratch),
    ):
        _build_transform_pipeline(transform, snapshot, "/unused/_raw", "/unused/transform",
                                  "/unused/examples", config, meta.row_counts["videos"],
                                  datetime_to_us(meta.cutoff))  # fmt: skip
        return {
            "examples": examples.to_runner_api().ByteSize(),
            "transform": transform.to_runner_api().ByteSize(),
        }


def _run(pipeline, read=None):
    """Run `pipeline` to the end; returns `read(result)` when given."""
    try:
        result = pipeline.run()
        result.wait_until_finish()
        return read(result) if read else None
    finally:
        # Beam and TF objects left for the interpreter's final teardown can crash it (exit
        # code 139) after all work is done; release them while everything is still alive.
        del pipeline
        gc.collect()


def _counter_names(example: dict) -> tuple[str, ...]:
    """The "examples" counters `example` adds one to: "<split>/<positive, nope or sampled>",
    and "<split>/pseudo" for a pseudo-user's."""
    split = example["split"]
    kind = "positive" if example["label"] == 1 else example["negative_source"]
    if example["user_source"] == "pseudo":
        return f"{split}/{kind}", f"{split}/pseudo"
    return (f"{split}/{kind}",)


def _read_counts(result) -> dict:
    from apache_beam.metrics.metric import MetricsFilter

    counts = {split: {"positive": 0, "nope": 0, "sampled": 0, "pseudo": 0} for split in SPLITS}
    for counter in result.metrics().query(MetricsFilter().with_namespace("examples"))["counters"]:
        split, kind = counter.key.metric.name.split("/")
        counts[split][kind] = int(counter.committed or counter.attempted or 0)
    for split in SPLITS:
        c = counts[split]
        c["examples"] = c["positive"] + c["nope"] + c["sampled"]
    return counts


def _vocabulary_sizes(outputs: dict, config: FeatureConfig) -> dict[str, int]:
    from swiperec.features.preprocessing import (
        USER_VOCABULARIES,
        VIDEO_VOCABULARIES,
        vocabulary_size,
    )

    names = {"video": VIDEO_VOCABULARIES, "user": USER_VOCABULARIES}
    return {
        name: vocabulary_size(outputs[tower], name, config)
        for tower, vocabularies in names.items()
        for name in vocabularies
    }


def _iso(time_us: int) -> str:
    return str(np.datetime64(int(time_us), "us")) + "Z"


def read_transform_metadata(folder: str) -> dict:
    """The metadata.json of a finished transform run (its transform or examples folder)."""
    import tensorflow as tf

    path = os.path.join(folder, "metadata.json")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{folder} is not a finished transform output (no metadata.json)")
    with tf.io.gfile.GFile(path) as handle:
        return json.load(handle)
