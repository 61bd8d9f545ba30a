"""The batch embedding refresh: every video and every user through the exported towers, on
Beam, into a new pgvector set; then index, attach and (optionally) switch it live.

    write_embeddings("artifacts/model", "v7", "artifacts/snapshot", database_url=url)

1. Driver: read the snapshot, start both sets, the video set with the model's match weights
   if it has them (`store.begin_set`; a set already ready is skipped: re-running a version
   adds nothing).
2. Beam: chunks of catalogue rows and of users are the elements. A worker builds each row's raw
   features with the same code the transform used (`video_raw_features`, `UserHistory`), runs
   the SavedModel tower (its TFT graph inside) on the batch, and binary-COPYs the vectors (and
   each video's ranking terms, which the serving function ranks candidates by) into
   the loading set as one shard named by the chunk (`store.copy_shard`), so a retried bundle
   is skipped instead of loaded twice. Only real users get embeddings (`user_embeddings` is
   keyed by the auth user id); pseudo-users exist for training.
3. Driver, after every shard is in: primary key, HNSW, ANALYZE, attach (`store.finish_set`).
   The set is then ready but serves nobody: the registry promotes a version
   (`swiperec.registry.versions.promote`), which switches serving to it.

Beyond one machine: pass Beam options (`--runner=DataflowRunner ...` or Flink) and a database
URL the workers can reach. Each worker COPYs its own shards into the same loading set, in
parallel; nothing serves from it until the driver has finished it and the version is
promoted. Workers read the catalogue from the snapshot themselves (it must be on storage they
all see, e.g. gs://); the driver sends them row ranges and
users' events (~50 MB at 10k users: `--experiments=upload_graph` on Dataflow; reading the
decisions in the workers too is the step beyond that).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

from swiperec.embeddings import store
from swiperec.faults import fault_point

DAY_US = 86_400 * 1_000_000


@dataclass
class WriteResult:
    version: str
    rows: dict = field(default_factory=dict)  # kind -> rows in the set
    seconds: dict = field(default_factory=dict)  # stage -> seconds
    skipped: list = field(default_factory=list)  # kinds already ready


def _video_chunks(catalogue, rows_per_chunk: int):
    for start in range(0, len(catalogue.video_id), rows_per_chunk):
        yield ("video", f"videos-{start:09d}", (start, min(start + rows_per_chunk,
                                                            len(catalogue.video_id))))  # fmt: skip


def _user_chunks(events, users_per_chunk: int):
    """Real users' event slices, grouped `users_per_chunk` at a time, as plain arrays."""
    chunk, first = [], None
    for key, is_pseudo, rows in events.user_slices():
        if is_pseudo:
            continue
        first = first or key
        chunk.append((key, events.video_id[rows], events.label[rows], events.time_us[rows]))
        if len(chunk) == users_per_chunk:
            yield ("user", f"users-{first}", chunk)
            chunk, first = [], None
    if chunk:
        yield ("user", f"users-{first}", chunk)


class EmbedAndCopy:
    """Beam DoFn body: one chunk -> raw features -> tower -> one COPY'd shard."""

    def __init__(self, model_dir, version, database_url, snapshot, config, as_of_us):
        self.model_dir, self.version, self.database_url = model_dir, version, database_url
        self.snapshot, self.config, self.as_of_us = snapshot, config, as_of_us

    def setup(self):
        from swiperec.db import connect
        from swiperec.embeddings.towers import load_towers
        from swiperec.features.events import load_catalogue

        # Each worker reads the catalogue from the snapshot: shipping it inside the DoFn costs
        # a compressed pickle of every title (~15 s at 200k videos) and a large job graph.
        self.catalogue = load_catalogue(self.snapshot)
        self.towers = load_towers(self.model_dir)
        self.conn = connect(self.database_url)

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
        else:
            keys, vectors = embed_users(
                self.towers, self.catalogue, self.config, payload, self.as_of_us
            )
        loaded = store.copy_shard(self.conn, self.version, kind, shard, keys, vectors, ranking)
        yield kind, len(keys) if loaded else 0


def write_embeddings(
    model_dir: str,
    version: str,
    snapshot: str,
    *,
    database_url: str | None = None,
    pipeline_args: list[str] | None = None,
    rows_per_chunk: int = 4096,
    users_per_chunk: int = 256,
    index: store.IndexParams | None = None,
) -> WriteResult:
    """Embed every video and every real user of `snapshot` as set `version` (see above)."""
    import apache_beam as beam

    from swiperec.beam_pipeline import new_pipeline
    from swiperec.db import connect
    from swiperec.db import database_url as default_url
    from swiperec.features.config import FeatureConfig, datetime_to_us
    from swiperec.features.events import load_snapshot
    from swiperec.model.train import read_model_card

    url = database_url or default_url()
    result = WriteResult(version)
    card = read_model_card(model_dir)
    config = FeatureConfig.from_dict(card["input"]["feature_config"])
    started = time.perf_counter()
    conn = connect(url)
    try:
        with store.writing(conn, version):  # a second writer of this version is refused
            catalogue, events, meta = load_snapshot(snapshot, config)
            as_of_us = datetime_to_us(meta.cutoff)  # the time the embeddings describe
            chunks = {
                "video": list(_video_chunks(catalogue, rows_per_chunk)),
                "user": list(_user_chunks(events, users_per_chunk)),
            }
            del events
            # The shards are counted before the load; finishing checks that all of them are in.
            dimension = card["embedding_dim"]
            match = match_ranking(card, config)
            kinds = [
                k for k in ("video", "user")
                if store.begin_set(conn, version, k, dimension, expected_shards=len(chunks[k]),
                                   as_of=meta.cutoff, match=match if k == "video" else None)
            ]  # fmt: skip
            result.skipped = [k for k in ("video", "user") if k not in kinds]
            result.seconds["read"] = round(time.perf_counter() - started, 2)
            fault_point("writer.before_first_shard")

            if kinds:
                start = time.perf_counter()
                elements = [chunk for kind in kinds for chunk in chunks[kind]]
                del chunks
                pipeline = new_pipeline(pipeline_args)
                fn = EmbedAndCopy(model_dir, version, url, snapshot, config, as_of_us)
                _ = (
                    pipeline
                    | "Chunks" >> beam.Create(elements, reshuffle=False)
                    | "Embed and copy" >> beam.ParDo(_as_dofn(fn))
                )
                outcome = pipeline.run()
                outcome.wait_until_finish()
                del pipeline, outcome
                gc.collect()
                result.seconds["embed_and_copy"] = round(time.perf_counter() - start, 2)
                fault_point("writer.after_all_shards")

                for kind in kinds:
                    if kind != kinds[0]:
                        fault_point("writer.between_sets")
                    start = time.perf_counter()
                    finished = store.finish_set(conn, version, kind, index)
                    result.rows[kind] = finished["rows"]
                    result.seconds[f"index_{kind}"] = round(time.perf_counter() - start, 2)
            start = time.perf_counter()
            store.refresh_popularity(conn)  # the serving fallback's order, as of this refresh
            result.seconds["popularity"] = round(time.perf_counter() - start, 2)
            result.seconds["total"] = round(time.perf_counter() - started, 2)
        return result
    finally:
        conn.close()


def match_ranking(card: dict, config) -> tuple[list[float], float] | None:
    """A model card's match weights (in `RANKING_FEATURE_NAMES` order; 0 for the video
    evidence of a model trained without it) and the recency half-life of `config`, the feature
    config its features were made with, for the video set (`store.begin_set`); None without
    them."""
    from swiperec.model.data import card_ranking_weights

    weights = card_ranking_weights(card)
    if weights is None:
        return None
    return weights.tolist(), config.recency_half_life_days


def _as_dofn(body: EmbedAndCopy):
    import apache_beam as beam

    class EmbedAndCopyFn(beam.DoFn):
        def __init__(self, body):
            self.body = body

        def setup(self):
            self.body.setup()

        def teardown(self):
            self.body.teardown()

        def process(self, element):
            yield from self.body.process(element)

    return EmbedAndCopyFn(body)
