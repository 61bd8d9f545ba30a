"""The batch embedding refresh: every video and every user through the exported towers, on
Beam, into a new pgvector set; then index, attach and (optionally) switch it live.

    write_embeddings("artifacts/model", "v7", "artifacts/snapshot", database_url=url)

1. Driver: read the snapshot's metadata, start both sets, the video set with the model's
   match weights if it has them and its new-release bonus (`store.begin_set`; a set already
   ready is skipped: re-running a version adds nothing).
2. Beam, one pipeline for the videos, then one for the users: the elements are row ranges
   of the catalogue and the snapshot's decisions, which the workers read and parse
   themselves (`parse_events`, the transform's parser) and deal into a fixed number of user
   shards by a hash of the user. A worker builds each row's raw features with the same code
   the transform used (`video_raw_features`, `UserHistory`), runs the SavedModel tower (its
   TFT graph inside) on the chunk, and binary-COPYs the vectors (and each video's ranking
   terms, which the serving function ranks candidates by) into the loading set as one shard
   named by the chunk (`store.copy_shard`), so a retried bundle is skipped instead of loaded
   twice. Only real users get embeddings (`user_embeddings` is keyed by the auth user id);
   pseudo-users exist for training.
3. Driver, once a set's shards are all in: primary key, HNSW, ANALYZE, attach
   (`store.finish_set`). The video set's, which takes longest (its HNSW build is one
   PostgreSQL backend on one core), runs on a second connection while Beam embeds the users
   on the other. A set is then ready but serves nobody: the registry promotes a version
   (`swiperec.registry.versions.promote`), which switches serving to it.

Beyond one machine: pass Beam options (`--runner=DataflowRunner ...` or Flink) and a database
URL the workers can reach. The job carries the database's address but not its password, which
the workers find themselves (`swiperec.db.connection.WorkerDatabase`: a Beam secret on
Dataflow, their own environment elsewhere). Each worker COPYs its own shards into the same
loading set, in parallel; nothing serves from it until the driver has finished it and the
version is promoted. The workers read the catalogue and the decisions from the snapshot (it
must be on storage they all see, e.g. gs://): the job graph holds the snapshot's path, row
ranges and shard numbers, whatever the number of users.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from swiperec.db.connection import WorkerPasswordError
from swiperec.embeddings import store
from swiperec.faults import fault_point

DAY_US = 86_400 * 1_000_000


@dataclass
class WriteResult:
    version: str
    rows: dict = field(default_factory=dict)  # kind -> rows in the set
    # stage -> seconds; the video set's index build overlaps the users' embedding, so the
    # stages may sum to more than "total"
    seconds: dict = field(default_factory=dict)
    began: dict = field(default_factory=dict)  # stage -> seconds from the start of the write
    skipped: list = field(default_factory=list)  # kinds already ready

    def stage(self, name: str, write_start: float, stage_start: float) -> None:
        """Record stage `name` as from `stage_start` to now (perf_counter seconds)."""
        self.began[name] = round(stage_start - write_start, 2)
        self.seconds[name] = round(time.perf_counter() - stage_start, 2)


def _video_chunks(videos: int, rows_per_chunk: int):
    for start in range(0, videos, rows_per_chunk):
        yield ("video", f"videos-{start:09d}", (start, min(start + rows_per_chunk, videos)))


def user_shard(user_keys, shards: int) -> np.ndarray:
    """The shard (int64, 0..shards-1) of each user key: a stable hash, the same in every
    process and run (Python's own `hash` of a str is not); each distinct key hashed once."""
    keys, inverse = np.unique(np.asarray(user_keys, dtype=object).astype(str), return_inverse=True)
    hashed = [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
              % shards for k in keys.tolist()]  # fmt: skip
    return np.asarray(hashed, dtype=np.int64)[inverse].reshape(-1)


class DecisionsByShard:
    """Beam DoFn body: one Parquet record batch of decisions -> (shard, event arrays) per user
    shard it touches. Each worker reads the catalogue once: an event on a video outside it
    is rejected by the parser, as everywhere."""

    def __init__(self, snapshot, config, shards: int):
        self.snapshot, self.config, self.shards = snapshot, config, shards

    def setup(self):
        from swiperec.features.events import load_catalogue

        self.catalogue = load_catalogue(self.snapshot)

    def process(self, batch):
        from apache_beam.metrics import Metrics

        from swiperec.features.events import parse_events

        events = parse_events(self.catalogue, batch, None, self.config)
        for name, count in events.stats.items():  # rejected rows are counted, never lost
            if count:
                Metrics.counter("snapshot", name).inc(count)
        if len(events) == 0:
            return
        shard = user_shard(events.user_key.tolist(), self.shards)
        for s in np.unique(shard).tolist():
            rows = shard == s
            yield s, (events.user_key[rows], events.video_id[rows], events.label[rows],
                      events.time_us[rows])  # fmt: skip


def user_chunk(keyed, shards: int):
    """(shard, its event arrays from every batch) -> ("user", shard name, [(user key, video
    ids, labels, times)] per user, by key, each user's events in time order)."""
    shard, parts = keyed
    parts = [part for part in parts if part is not None]  # None: the shard's placeholder
    users = []
    if parts:
        keys, videos, labels, times = (np.concatenate(c) for c in zip(*parts, strict=True))
        names, codes = np.unique(keys.astype(str), return_inverse=True)
        order = np.lexsort((labels, videos, times, codes))
        codes, videos, labels, times = codes[order], videos[order], labels[order], times[order]
        starts = np.searchsorted(codes, np.arange(len(names) + 1))
        users = [(str(names[u]), videos[a:b], labels[a:b], times[a:b])
                 for u, (a, b) in enumerate(itertools.pairwise(starts.tolist()))]  # fmt: skip
    return ("user", f"users-{shard:05d}-of-{shards:05d}", users)


class EmbedAndCopy:
    """Beam DoFn body: one chunk -> raw features -> tower -> one COPY'd shard."""

    def __init__(self, model_dir, version, database, snapshot, config, as_of_us, dimension):
        self.model_dir, self.version = model_dir, version
        self.database = database  # a WorkerDatabase: the job's graph holds no password
        self.snapshot, self.config, self.as_of_us = snapshot, config, as_of_us
        self.dimension = dimension

    def setup(self):
        from swiperec.embeddings.towers import shared_towers
        from swiperec.features.events import load_catalogue

        self.conn = self.database.connect()  # first: a worker with no password fails at once
        # Each worker reads the catalogue from the snapshot: shipping it inside the DoFn costs
        # a compressed pickle of every title (~15 s at 200k videos) and a large job graph.
        self.catalogue = load_catalogue(self.snapshot)
        self.towers = shared_towers(self.model_dir)  # one load for the videos' and users' pipelines

    def teardown(self):
        self.conn.close()

    def process(self, element):
        from swiperec.embeddings.towers import embed_users, embed_videos_ranked

        kind, shard, payload = element
        ranking = None
        if kind == "video":
            start, stop = payload
            keys, vectors, ranking = embed_videos_ranked(
                self.towers, self.catalogue, range(start, stop), self.as_of_us
            )
        elif payload:
            keys, vectors = embed_users(
                self.towers, self.catalogue, self.config, payload, self.as_of_us
            )
        else:  # a shard no user hashed to: loaded empty, so the set counts it as in
            keys, vectors = [], np.zeros((0, self.dimension), np.float32)
        loaded = store.copy_shard(self.conn, self.version, kind, shard, keys, vectors, ranking)
        yield kind, len(keys) if loaded else 0


def write_embeddings(
    model_dir: str,
    version: str,
    snapshot: str,
    *,
    database_url: str | None = None,
    database_secret: str | None = None,
    pipeline_args: list[str] | None = None,
    rows_per_chunk: int = 4096,
    decisions_per_shard: int = 16_384,
    index: store.IndexParams | None = None,
) -> WriteResult:
    """Embed every video and every real user of `snapshot` as set `version` (see above): the
    videos `rows_per_chunk` to a shard, the users in ceil(decisions / `decisions_per_shard`)
    shards. The workers connect to the same database with no password in the job
    (`WorkerDatabase`); `database_secret`, a Beam `Secret` spec holding the whole URL, is
    where workers on other machines may read it."""
    import apache_beam as beam

    from swiperec.db import connect
    from swiperec.db import database_url as default_url
    from swiperec.db.connection import WorkerDatabase, parse_secret, where_connected
    from swiperec.features.config import datetime_to_us, stored_feature_config
    from swiperec.model.data import served_new_release_bonus
    from swiperec.model.train import read_model_card
    from swiperec.snapshot import read_metadata

    secret = parse_secret(database_secret)  # a bad spec fails here, before a set is begun
    url = database_url or default_url()
    result = WriteResult(version)
    card = read_model_card(model_dir)
    config = stored_feature_config(card["input"]["feature_config"])
    started = time.perf_counter()
    conn = connect(url)
    try:
        with store.writing(conn, version):  # a second writer of this version is refused
            meta = read_metadata(snapshot)  # the workers read the rest of the snapshot
            as_of_us = datetime_to_us(meta.cutoff)  # the time the embeddings describe
            video_chunks = list(_video_chunks(meta.row_counts["videos"], rows_per_chunk))
            user_shards = max(1, math.ceil(meta.row_counts["decisions"] / decisions_per_shard))
            # The shards are counted before the load; finishing checks that all of them are in.
            expected = {"video": len(video_chunks), "user": user_shards}
            dimension = card["embedding_dim"]
            match = match_ranking(card, config)
            bonus = served_new_release_bonus(card)
            kinds = [
                k for k in ("video", "user")
                if store.begin_set(conn, version, k, dimension, expected_shards=expected[k],
                                   as_of=meta.cutoff, match=match if k == "video" else None,
                                   new_release_bonus=bonus if k == "video" else None)
            ]  # fmt: skip
            result.skipped = [k for k in ("video", "user") if k not in kinds]
            result.stage("read", started, started)
            fault_point("writer.before_first_shard")

            if kinds:
                workers = WorkerDatabase.of(url, secret, where_connected(conn))
                fn = EmbedAndCopy(model_dir, version, workers, snapshot, config, as_of_us,
                                  dimension)  # fmt: skip
                if "video" in kinds:
                    videos = lambda p: p | "Video chunks" >> beam.Create(video_chunks)  # noqa: E731
                    _load(result, started, "video", videos, fn, pipeline_args,
                          "writer.videos_loaded")  # fmt: skip
                # The video set's primary key and HNSW build, the longest stage and a single
                # PostgreSQL backend, run on their own connection while this process embeds
                # the users on the other core.
                finishing = (_finishing_videos(result, started, url, index)
                             if "video" in kinds else nullcontext())  # fmt: skip
                with finishing:
                    if "user" in kinds:
                        users = lambda p: _user_chunks(p, snapshot, config, user_shards)  # noqa: E731
                        _load(result, started, "user", users, fn, pipeline_args,
                              "writer.users_loaded")  # fmt: skip
                if "user" in kinds:
                    fault_point("writer.between_sets")  # the video set ready, the user set not
                    _finish(result, started, conn, "user", index)
            start = time.perf_counter()
            store.refresh_popularity(conn)  # the serving fallback's order, as of this refresh
            result.stage("popularity", started, start)
            result.seconds["total"] = round(time.perf_counter() - started, 2)
        return result
    finally:
        conn.close()


def _load(result, started, kind: str, chunks, fn, pipeline_args, loaded_point: str) -> None:
    """Embed and COPY one kind's chunks (`chunks(pipeline)` makes them) through the
    `EmbedAndCopy` body `fn`, in a Beam pipeline of their own, timed as stage embed_<kind>s;
    then the fault point `loaded_point`."""
    import apache_beam as beam

    from swiperec.beam_pipeline import new_pipeline

    start = time.perf_counter()
    pipeline = new_pipeline(pipeline_args)
    _ = chunks(pipeline) | "Embed and copy" >> beam.ParDo(_as_dofn(fn))
    try:
        outcome = pipeline.run()
        outcome.wait_until_finish()
    except Exception as err:
        # A worker's error reaches here as the runner's, its type in the text: said plainly.
        if WorkerPasswordError.__name__ in str(err):
            raise fn.database.no_password() from err
        raise
    del pipeline, outcome
    gc.collect()
    result.stage(f"embed_{kind}s", started, start)
    fault_point(loaded_point)


def _finish(result, started, conn, kind: str, index) -> None:
    """`store.finish_set` of `kind`, timed as stage index_<kind> of `result`."""
    start = time.perf_counter()
    result.rows[kind] = store.finish_set(conn, result.version, kind, index)["rows"]
    result.stage(f"index_{kind}", started, start)


@contextmanager
def _finishing_videos(result, started, url: str, index):
    """Finish the video set in a thread on its own connection while the `with` block runs; the
    block's end waits for it and raises its error (a failed build is reported then, once the
    users are embedded). If the block fails (or is interrupted), the build is cancelled, again
    until the thread has stopped (a cancel that falls between two statements is lost): a set
    still building stays loading, and the next write starts it afresh; one whose build had
    already committed is ready, and the next write keeps it. Serving reads a set only once it
    is promoted."""
    indexer = index_connection(url)
    pool = ThreadPoolExecutor(1, thread_name_prefix="swiperec-index")
    try:
        finishing = pool.submit(_finish, result, started, indexer, "video", index)
        try:
            yield
            finishing.result()
        except BaseException:
            while not finishing.done():
                indexer.cancel()
                wait([finishing], timeout=0.5)
            raise
    finally:
        pool.shutdown()
        indexer.close()


def index_connection(url: str):
    """A connection for a set's index build whose statements end soon after this process does:
    PostgreSQL checks every second that the client is still there while a statement runs. A
    writer killed mid-build would otherwise leave its backend building on, a core and up to
    `maintenance_work_mem` for minutes at 1M videos, until the build ends and it finds no one
    to answer; the next write of the version waits for it to drop the set."""
    from swiperec.db import connect

    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("set client_connection_check_interval = '1s'")
        conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


def _user_chunks(pipeline, snapshot: str, config, shards: int):
    """The user chunks, one per shard (every shard, even one no user hashes to), from the
    snapshot's decisions as the workers read them."""
    import apache_beam as beam

    events = (
        pipeline
        | "Read decisions"
        >> beam.io.ReadFromParquetBatched(os.path.join(snapshot, "decisions.parquet"))
        | "By user shard" >> beam.ParDo(_as_dofn(DecisionsByShard(snapshot, config, shards)))
    )
    every = pipeline | "Every shard" >> beam.Create([(s, None) for s in range(shards)])
    return (
        (events, every)
        | "Events and shards" >> beam.Flatten()
        | "Per shard" >> beam.GroupByKey()
        | "User chunks" >> beam.Map(user_chunk, shards)
    )


def match_ranking(card: dict, config) -> tuple[list[float], float] | None:
    """A model card's served ranking weights (`served_ranking_weights`: in
    `RANKING_FEATURE_NAMES` order, 0 for the video evidence of a model trained without it, plus
    its exposure prior) and the recency half-life of `config`, the feature config its features
    were made with, for the video set (`store.begin_set`); None without them."""
    from swiperec.model.data import served_ranking_weights

    weights = served_ranking_weights(card)
    if weights is None:
        return None
    return weights.tolist(), config.recency_half_life_days


def _as_dofn(body):
    """A Beam DoFn of a plain body with setup / process (/ teardown)."""
    import apache_beam as beam

    class BodyFn(beam.DoFn):
        def __init__(self, body):
            self.body = body

        def setup(self):
            self.body.setup()

        def teardown(self):
            if hasattr(self.body, "teardown"):
                self.body.teardown()

        def process(self, element):
            yield from self.body.process(element)

    return BodyFn(body)
