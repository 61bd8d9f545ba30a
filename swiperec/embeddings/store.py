"""Embedding sets in pgvector: load, index, attach, activate, retire; and small live writes.

The life of a model version's set (one per kind, `video` and `user`):

    with writing(conn, "v7"):                      one writer per version at a time
    begin_set(conn, "v7", "video", 768, 49)        loading: an empty table, 49 shards expected
    copy_shard(conn, "v7", "video", "0", ids, x)   binary COPY, once per shard (any worker)
    finish_set(conn, "v7", "video")                all shards in? primary key, HNSW (videos), attach
    switch_serving(cur, "v7")                      both kinds ready -> serving_state = v7
    retire(conn, keep=3)                           drop old sets not in use

Switching is the registry's to decide (`swiperec.registry.versions.promote` checks the
version's blessing and records the promotion in the same transaction).

Why this order: COPY into a table without indexes is the fast path (an HNSW index maintained
row by row is ~100x slower), and building the index once over all rows gives the best graph.
Only video sets get an HNSW index: videos are searched by distance, users are only read by id
(the primary key), and an HNSW index on users would make every real-time user upsert ~2.5x
slower for nothing.
The set becomes a partition of `video_embeddings` / `user_embeddings` only when complete, and
serves only when `serving_state` names its version, which is one row updated in one short
transaction: a reader sees the old version or the new one, never a mix, never an empty set.

Faults: a load that dies leaves its set `loading` and the serving version untouched; running
the same version again starts its set afresh (or does nothing when it is already ready). On
many workers (Dataflow/Flink), each worker copies its own shards; a shard is recorded in the
transaction that copies it, so a retried shard is skipped rather than loaded twice; the driver
finishes and activates once, after every shard is in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace

import numpy as np
import psycopg2
from psycopg2 import errors, sql
from psycopg2.extras import execute_values

from swiperec.db.binary_copy import Column, copy_binary
from swiperec.faults import fault_point
from swiperec.features.video_evidence import RANKING_FEATURE_NAMES
from swiperec.model.config import EMBEDDING_DIM

KINDS = {"video": ("video_id", "int8"), "user": ("user_id", "uuid")}
# A video's ranking terms, stored beside its embedding (swiperec.model.layers.VideoRanking;
# the SQL function's ranking stage reads them).
RANKING_COLUMNS = ("rank_bias", "rank_scale")
SEARCHED_BY_DISTANCE = ("video",)  # the kinds that get an HNSW index
# Serving switches and retention take this transaction lock, so they never interleave: a set
# being promoted is never dropped by a retirement that decided before the switch.
_SERVING_LOCK = "swiperec: serving sets"
# pgvector's notice when an HNSW build's graph no longer fits in maintenance_work_mem
_GRAPH_SPILLED = "hnsw graph no longer fits into maintenance_work_mem"
log = logging.getLogger(__name__)


# From this many rows a set's HNSW graph is built with ef_construction 64 (IndexParams).
LARGE_SET_ROWS = 500_000


@dataclass(frozen=True)
class IndexParams:
    """HNSW build settings, chosen on 2 cores (tests/performance/bench_embeddings.py and
    bench_serving.py): m 16 (pgvector's default), and ef_construction by the set's size when
    not given (`for_rows`):
    - 32, the least pgvector allows at m 16 (2 m), below LARGE_SET_ROWS: Recall@10 against
      exact search at ef_search 100 is 0.999 at 32k videos and 0.80-0.89 on the 200k synthetic
      catalogue (64 there: 0.92, for a 1.3-1.4x longer build), but serving reranks 100
      candidates, so its Recall@20 holds at 0.94-0.96 at 200k;
    - 64 from LARGE_SET_ROWS: at 1M videos, 32 builds a graph whose Recall@10 is 0.67 and
      serving's Recall@20 0.89-0.95 (by build); 64 lifts serving's to 0.993 / 0.955 (the
      ~50- / 1,000-decision users, results/serving_1000000_efc64.json) for a 1.2-1.3x longer
      write and index (656 s against 496-549 s in three builds at 32).
    The memory budget keeps the graph in RAM (pgvector's graph takes 3.8 KB a 768-d row: 2 GB
    holds ~550k videos). It is a floor: the build takes the database's own
    `maintenance_work_mem` when that is larger, so a bigger catalogue's budget is set where
    PostgreSQL keeps it (`alter database ... set maintenance_work_mem = '6GB'` for 1M videos).
    A graph that outgrows the budget is built on disk, several times slower: `finish_set`
    records it and logs a warning.

    No parallel workers: the build takes one core and leaves the other to the queries against
    the serving set. Measured with an earlier model: the leader alone at ef_construction 32
    builds as fast (40 s) as leader + worker at 48, and the queries' p95 during the build
    stays at ~1.6 ms instead of 6.5-8 ms (two or three build processes on two cores);
    lowering the build's CPU priority (nice, SCHED_IDLE) did not help. On a database host with
    spare cores, raise `parallel_workers` to what the build may take."""

    m: int = 16
    ef_construction: int | None = None  # None: by the set's size (for_rows)
    maintenance_work_mem: str = "2GB"
    parallel_workers: int = 0

    def for_rows(self, rows: int) -> IndexParams:
        """These settings for a set of `rows` rows: ef_construction, when not given, 32 below
        LARGE_SET_ROWS and 64 from it."""
        if self.ef_construction is not None:
            return self
        return replace(self, ef_construction=64 if rows >= LARGE_SET_ROWS else 32)

    def to_dict(self) -> dict:
        return {"m": self.m, "ef_construction": self.ef_construction,
                "maintenance_work_mem": self.maintenance_work_mem,
                "parallel_workers": self.parallel_workers}  # fmt: skip

    def apply(self, cur) -> int:
        """Set this session's index build: its memory, the larger of `maintenance_work_mem`
        (kB without a unit, as PostgreSQL reads it) and the database's (or role's, or the
        connection's) own, its parallel workers, and notices on (`finish_set` reads pgvector's
        about the graph). `reset` undoes it. Returns the memory set, in MB."""
        floor = self.maintenance_work_mem.strip()
        cur.execute(
            "select greatest(s.reset_val::bigint * pg_size_bytes('1' || s.unit),"
            " pg_size_bytes(%s)) / 1048576 from pg_settings s"
            " where s.name = 'maintenance_work_mem'",
            (floor + "kB" if floor.isdigit() else floor,),
        )
        budget_mb = int(cur.fetchone()[0])
        cur.execute(sql.SQL("set maintenance_work_mem = {}").format(
            sql.Literal(f"{budget_mb}MB")))  # fmt: skip
        cur.execute(sql.SQL("set max_parallel_maintenance_workers = {}").format(
            sql.Literal(self.parallel_workers)))  # fmt: skip
        cur.execute("set client_min_messages = notice")
        return budget_mb

    @staticmethod
    def reset(cur) -> None:
        cur.execute("reset maintenance_work_mem")
        cur.execute("reset max_parallel_maintenance_workers")
        cur.execute("reset client_min_messages")


class EmbeddingSetError(RuntimeError):
    """A set cannot be loaded, finished or activated in its current state."""


def _table(version: str, kind: str) -> tuple[sql.Composed, str]:
    """The set's table (in `swiperec_private`) and its bare name: named by a hash of the
    version, as `swiperec_private.embedding_partition` names partitions, so any version string
    makes a valid, unique name."""
    name = f"{kind}_embeddings_{hashlib.md5(version.encode()).hexdigest()[:16]}"
    return sql.SQL("swiperec_private.{}").format(sql.Identifier(name)), name


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")


def set_state(conn, version: str, kind: str) -> str | None:
    with conn.cursor() as cur:
        cur.execute("select state from embedding_sets where model_version = %s and kind = %s",
                    (version, kind))  # fmt: skip
        row = cur.fetchone()
    return row[0] if row else None


def begin_set(
    conn,
    version: str,
    kind: str,
    dimension: int = EMBEDDING_DIM,
    *,
    expected_shards: int,
    as_of=None,
    match: tuple[list[float], float] | None = None,
    new_release_bonus: float | None = None,
) -> bool:
    """Start loading `version`'s set of `kind`, of `expected_shards` shards (checked when it is
    finished); False when it is already ready (nothing to do). `as_of`: the time the vectors
    describe (the snapshot's cutoff); when the version starts serving, everything that changed
    after it is queued for the real-time worker. `match`: a video set's (weights of the
    `RANKING_FEATURE_NAMES`, the match shares' recency half-life in days), which the serving
    function adds to each candidate's like logit; None: the model has none.
    `new_release_bonus`: a video set's exploration bonus for new releases among the candidates
    (`TrainConfig.new_release_bonus`); None: the one sets had before it (the SQL function's).

    A set left `loading` by an earlier run is started afresh: its table is dropped. Only one
    writer may load a version at a time (`writing`)."""
    _check_kind(kind)
    weights, half_life = _check_match(kind, match)
    _check_new_release_bonus(kind, new_release_bonus)
    table, name = _table(version, kind)
    key = KINDS[kind][0]
    with conn, conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"embeddings:{version}:{kind}",))
        cur.execute("select state from embedding_sets where model_version = %s and kind = %s "
                    "for update", (version, kind))  # fmt: skip
        row = cur.fetchone()
        if row and row[0] == "ready":
            return False
        if row and row[0] == "retiring":
            raise EmbeddingSetError(
                f"the {kind} set of {version!r} is being retired: retire again "
                "(`swiperec embeddings retire`), then write it"
            )
        cur.execute("delete from embedding_sets where model_version = %s and kind = %s",
                    (version, kind))  # fmt: skip
        cur.execute(sql.SQL("drop table if exists {}").format(table))
        # Standalone and unindexed while loading; the partition bound as a check constraint
        # lets ATTACH skip its validation scan later.
        ranking = sql.SQL(", rank_bias real, rank_scale real" if kind == "video" else "")
        cur.execute(sql.SQL(
            "create table {t} (model_version text not null, {key} {type} not null, "
            "embedding vector({dim}) not null, updated_at timestamptz not null default now()"
            "{ranking}, constraint {check} check (model_version is not null and "
            "model_version = {v}))"
        ).format(t=table, key=sql.Identifier(key),
                 type=sql.SQL("bigint" if kind == "video" else "uuid"),
                 dim=sql.Literal(int(dimension)), ranking=ranking,
                 check=sql.Identifier(f"{name}_bound"), v=sql.Literal(version)))  # fmt: skip
        # The vector in its row, not in TOAST: a vector(768) is 3,080 bytes, over the ~2 KB at
        # which PostgreSQL moves a wide value into the table's TOAST relation, where every read
        # is an index lookup and two chunk fetches and every write two chunk inserts with their
        # index entries. `plain` keeps it inline, two rows a page (the parent tables say the
        # same, 20261211000000_embeddings_inline.sql, but ATTACH keeps a table's own storage).
        cur.execute(sql.SQL("alter table {} alter column embedding set storage plain")
                    .format(table))  # fmt: skip
        cur.execute(sql.SQL("alter table {} enable row level security").format(table))
        cur.execute(
            "insert into embedding_sets (model_version, kind, state, table_name, dimension, "
            "expected_shards, as_of, match_weights, match_half_life_days, new_release_bonus) "
            "values (%s, %s, 'loading', %s, %s, %s, %s, %s, %s, %s)",
            (version, kind, f"swiperec_private.{name}", int(dimension), expected_shards, as_of,
             weights, half_life, new_release_bonus),
        )  # fmt: skip
    return True


def _check_match(kind: str, match) -> tuple[list[float] | None, float | None]:
    if match is None:
        return None, None
    weights, half_life = [float(w) for w in match[0]], float(match[1])
    if kind != "video":
        raise ValueError("match weights belong to a video set")
    if len(weights) != len(RANKING_FEATURE_NAMES) or not all(np.isfinite(weights)):
        raise ValueError(
            f"match weights must be {len(RANKING_FEATURE_NAMES)} finite numbers, got {match[0]!r}"
        )
    if not (np.isfinite(half_life) and half_life > 0):
        raise ValueError(f"the match half-life must be a positive number of days, got {half_life}")
    return weights, half_life


def _check_new_release_bonus(kind: str, bonus) -> None:
    if bonus is None:
        return
    if kind != "video":
        raise ValueError("a new-release bonus belongs to a video set")
    if not (np.isfinite(bonus) and bonus >= 0):
        raise ValueError(f"the new-release bonus must be a finite number >= 0, got {bonus!r}")


def copy_shard(conn, version: str, kind: str, shard: str, ids, vectors, ranking=None) -> bool:
    """Binary-COPY one shard (ids [n], vectors [n, dim] float32) into a loading set; for
    videos, `ranking` [n, 2] float32 (rank_bias, rank_scale) or None (null: rank by cosine).

    Returns False when this shard was already loaded (a retry): nothing is written twice.
    Raises `EmbeddingSetError` unless the set is loading, ValueError on a wrong dimension or
    a non-finite value."""
    _check_kind(kind)
    vectors = np.asarray(vectors, dtype=np.float32)
    ranking = _check_ranking(kind, ranking, len(vectors))
    with conn.cursor() as cur:
        cur.execute("select state, dimension, table_name from embedding_sets "
                    "where model_version = %s and kind = %s", (version, kind))  # fmt: skip
        row = cur.fetchone()
    conn.rollback()
    if not row or row[0] != "loading":
        raise EmbeddingSetError(f"the {kind} set of {version!r} is not loading (state {row})")
    _, dimension, table_name = row
    _check_vectors(kind, vectors, dimension)
    key, key_type = KINDS[kind]
    ids = np.asarray(ids) if kind == "video" else _uuid_bytes(ids)
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "insert into embedding_set_shards (model_version, kind, shard, row_count) "
                "values (%s, %s, %s, %s)", (version, kind, shard, len(vectors)),
            )  # fmt: skip
            columns = [
                Column("model_version", "text", _repeated_text(version, len(vectors))),
                Column(key, key_type, ids),
                Column("embedding", "vector", vectors),
            ]
            if ranking is not None:
                columns += [Column(name, "float4", ranking[:, i])
                            for i, name in enumerate(RANKING_COLUMNS)]  # fmt: skip
            copy_binary(cur, table_name, columns)
            fault_point("store.mid_copy")  # the shard's rows sent, not committed
    except errors.UniqueViolation:
        return False
    return True


def _repeated_text(value: str, n: int) -> np.ndarray:
    """`value` n times as fixed-width UTF-8 (`S<k>`): with every other column fixed-width too,
    `copy_binary` encodes the rows as one structured array, where one str per row sends them
    through its per-byte scatter (a 4,096-row shard of 768-d vectors: ~4 ms against ~54)."""
    encoded = value.encode("utf-8")
    if not encoded:
        return np.array([value] * n, object)
    return np.full(n, encoded, dtype=f"S{len(encoded)}")


def _check_vectors(kind: str, vectors: np.ndarray, dimension: int) -> None:
    """ValueError unless `vectors` is [n, dimension] of finite values."""
    if vectors.ndim != 2 or vectors.shape[1] != dimension:
        raise ValueError(f"{kind} embeddings must be [n, {dimension}], got {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{kind} embeddings contain NaN or infinite values")


def _check_ranking(kind: str, ranking, n: int) -> np.ndarray | None:
    """`ranking` as [n, 2] float32 with a positive scale, or None; ValueError otherwise."""
    if ranking is None:
        return None
    if kind != "video":
        raise ValueError("only video sets hold ranking terms")
    ranking = np.asarray(ranking, dtype=np.float32)
    if ranking.shape != (n, len(RANKING_COLUMNS)):
        raise ValueError(f"ranking terms must be [{n}, 2] (bias, scale), got {ranking.shape}")
    if not np.isfinite(ranking).all() or (ranking[:, 1] <= 0).any():
        raise ValueError("ranking terms must be finite, with a positive scale")
    return ranking


def _uuid_bytes(ids) -> np.ndarray:
    import uuid

    if isinstance(ids, np.ndarray) and ids.dtype == np.uint8:
        return ids.reshape(-1, 16)
    return np.frombuffer(b"".join(uuid.UUID(str(u)).bytes for u in ids), np.uint8).reshape(-1, 16)


def finish_set(conn, version: str, kind: str, index: IndexParams | None = None) -> dict:
    """Index, analyse and attach a loaded set: it becomes `ready`. Returns its row count and
    timings. Duplicate ids (a shard loaded under two names) fail here, leaving it loading.
    `index`: the HNSW build's settings (default IndexParams(); an ef_construction left unset
    is chosen by the set's row count, `IndexParams.for_rows`, and recorded as built)."""
    _check_kind(kind)
    table, name = _table(version, kind)
    key = KINDS[kind][0]
    parent = sql.Identifier(f"{kind}_embeddings")
    timings = {}
    if set_state(conn, version, kind) != "loading":
        conn.rollback()
        raise EmbeddingSetError(f"the {kind} set of {version!r} is not loading")
    index = (index or IndexParams()).for_rows(_check_complete(conn, version, kind, table))
    old_autocommit = conn.autocommit
    conn.autocommit = True  # each step commits; a crash between them leaves the set loading
    try:
        with conn.cursor() as cur:
            params = {**index.to_dict(), "build_memory_mb": index.apply(cur)}
            start = time.perf_counter()
            cur.execute(sql.SQL("alter table {t} add primary key (model_version, {key})").format(
                t=table, key=sql.Identifier(key)))  # fmt: skip
            timings["primary_key_s"] = round(time.perf_counter() - start, 2)
            fault_point("store.primary_key")
            if kind in SEARCHED_BY_DISTANCE:
                del conn.notices[:]
                start = time.perf_counter()
                cur.execute(sql.SQL(
                    "create index if not exists {i} on {t} using hnsw (embedding vector_cosine_ops)"
                    " with (m = {m}, ef_construction = {ef})"
                ).format(i=sql.Identifier(f"{name}_hnsw"), t=table, m=sql.Literal(index.m),
                         ef=sql.Literal(index.ef_construction)))  # fmt: skip
                timings["hnsw_s"] = round(time.perf_counter() - start, 2)
                params["graph_in_memory"] = not any(_GRAPH_SPILLED in n for n in conn.notices)
                if not params["graph_in_memory"]:
                    log.warning(
                        "the HNSW graph of the %s set of %s outgrew maintenance_work_mem (%s MB)"
                        " and was built on disk, several times slower: raise the database's "
                        "maintenance_work_mem", kind, version, params["build_memory_mb"],
                    )  # fmt: skip
            fault_point("store.hnsw")
            start = time.perf_counter()
            cur.execute(sql.SQL("analyze {}").format(table))
            cur.execute(sql.SQL("select count(*) from {}").format(table))
            rows = cur.fetchone()[0]
            index.reset(cur)
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL("alter table public.{p} attach partition {t} for values in ({v})")
                        .format(p=parent, t=table, v=sql.Literal(version)))  # fmt: skip
            fault_point("store.attach")  # attached, not committed
            cur.execute(
                "update embedding_sets set state = 'ready', row_count = %s, index_params = %s, "
                "ready_at = now() where model_version = %s and kind = %s",
                (rows, json.dumps(params), version, kind),
            )
        timings["analyze_attach_s"] = round(time.perf_counter() - start, 2)
    finally:
        conn.autocommit = old_autocommit
    return {"rows": rows, **timings}


def _check_complete(conn, version: str, kind: str, table) -> int:
    """The loading set's row count; EmbeddingSetError unless it holds exactly its expected
    shards, and the rows they recorded: a set missing a shard, or holding one twice, is never
    finished."""
    with conn.cursor() as cur:
        cur.execute(
            "select s.expected_shards, count(h.shard), coalesce(sum(h.row_count), 0) "
            "from embedding_sets s left join embedding_set_shards h using (model_version, kind) "
            "where s.model_version = %s and s.kind = %s group by s.expected_shards",
            (version, kind),
        )
        expected, shards, recorded = cur.fetchone()
        cur.execute(sql.SQL("select count(*) from {}").format(table))
        rows = cur.fetchone()[0]
    conn.rollback()
    if expected is not None and shards != expected:  # None: recorded before counts existed
        raise EmbeddingSetError(
            f"the {kind} set of {version!r} has {shards} of its {expected} shards: not finished"
        )
    if rows != recorded:
        raise EmbeddingSetError(
            f"the {kind} set of {version!r} holds {rows} rows, its shards recorded {recorded}: "
            "not finished (write the version again)"
        )
    return rows


@contextmanager
def writing(conn, version: str):
    """Hold the right to write `version`'s sets for the `with` block (a session lock on `conn`,
    released at the end, or when the writer's connection dies). A second writer of the same
    version is refused at once with EmbeddingSetError, so two loads never mix in one set."""
    key = _writer_key(version)
    with conn.cursor() as cur:
        cur.execute("select pg_try_advisory_lock(hashtext(%s))", (key,))
        acquired = cur.fetchone()[0]
    conn.commit()
    if not acquired:
        raise EmbeddingSetError(
            f"version {version!r} is being written by another process; wait for it to finish "
            "(or to die: its sets then start afresh on the next write)"
        )
    try:
        yield
    finally:
        # On a broken connection the lock went with the session; the first error is the one
        # to see, not a failing unlock.
        with suppress(psycopg2.Error):
            conn.rollback()
            with conn.cursor() as cur:
                cur.execute("select pg_advisory_unlock(hashtext(%s))", (key,))
            conn.commit()


def _writer_key(version: str) -> str:
    return f"swiperec: writing embeddings {version}"


def refresh_popularity(conn) -> None:
    """Recount likes per video for the serving fallback (`swiperec_private.video_popularity`,
    read by `enhanced_two_tower_recommendations` for users without likes). Concurrent: the
    function keeps reading the old counts meanwhile."""
    with conn, conn.cursor() as cur:
        cur.execute("refresh materialized view concurrently swiperec_private.video_popularity")


def switch_serving(cur, version: str) -> str | None:
    """Make `version` the serving one, inside the caller's transaction (`cur`); returns the
    previous version. Both its sets must be ready. The registry's `promote` is the one caller:
    it records the promotion in the same transaction."""
    cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (_SERVING_LOCK,))
    cur.execute("select kind from embedding_sets where model_version = %s and state = 'ready'",
                (version,))  # fmt: skip
    ready = {r[0] for r in cur.fetchall()}
    if ready != set(KINDS):
        missing = ", ".join(sorted(set(KINDS) - ready))
        raise EmbeddingSetError(f"version {version!r} cannot serve: no ready {missing} set")
    cur.execute("select model_version from serving_state for update")
    row = cur.fetchone()
    previous = row[0] if row else None
    cur.execute(
        "insert into serving_state (singleton, model_version, activated_at) "
        "values (true, %s, now()) on conflict (singleton) "
        "do update set model_version = excluded.model_version, activated_at = now()",
        (version,),
    )
    if previous != version:  # what changed since its snapshot goes to the real-time worker
        cur.execute("select swiperec_private.queue_changes_since_sets(%s)", (version,))
    return previous


def serving_version(conn) -> str | None:
    with conn.cursor() as cur:
        cur.execute("select model_version from serving_state")
        row = cur.fetchone()
    conn.rollback()
    return row[0] if row else None


def retire(conn, keep: int = 3) -> list[str]:
    """Drop the sets of all but the `keep` newest ready versions, never one in use (serving, or
    an experiment arm's) and never one a writer holds. Loading sets older than every kept one
    are dropped too. Returns the versions removed.

    Serving reads are never blocked. The sets are first marked `retiring` (in one transaction
    with the serving lock, so no promotion can pick them); then each table is detached from its
    parent CONCURRENTLY, which waits for the queries that may still read it while new ones go
    on, and dropped, and its row deleted (a plain DROP of a partition would lock the parent
    exclusively, and every new query would queue behind it). A retirement killed halfway leaves
    sets `retiring`; the next one finishes them (`drop_retiring`)."""
    with conn, conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (_SERVING_LOCK,))
        cur.execute(
            "select model_version, max(coalesce(ready_at, created_at)) as at from embedding_sets "
            "where state <> 'retiring' group by model_version order by at desc"
        )
        versions = [r[0] for r in cur.fetchall()]
        cur.execute("select model_version from swiperec_private.versions_in_use")
        in_use = {r[0] for r in cur.fetchall()}
        removed = []
        for version in (v for v in versions[keep:] if v not in in_use):
            # A writer loading this version holds its lock: leave its set to it.
            cur.execute("select pg_try_advisory_xact_lock(hashtext(%s))", (_writer_key(version),))
            if cur.fetchone()[0]:
                cur.execute("update embedding_sets set state = 'retiring' "
                            "where model_version = %s", (version,))  # fmt: skip
                removed.append(version)
    drop_retiring(conn)
    return removed


def drop_retiring(conn) -> list[str]:
    """Detach (concurrently) and drop the table of every `retiring` set, then forget the set;
    returns the tables dropped. A detach a killed retirement left pending is finalised first
    (a parent takes one pending detach at a time). One sweep at a time across processes."""
    old_autocommit = conn.autocommit
    conn.rollback()
    conn.autocommit = True  # DETACH ... CONCURRENTLY runs outside a transaction block
    dropped = []
    try:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_lock(hashtext(%s))", ("swiperec: retiring sets",))
            try:
                cur.execute(
                    "select s.model_version, s.kind, c.relname, p.relname, i.inhdetachpending "
                    "from embedding_sets s "
                    "left join pg_class c on c.oid = to_regclass(s.table_name) "
                    "left join pg_inherits i on i.inhrelid = c.oid "
                    "left join pg_class p on p.oid = i.inhparent "
                    "where s.state = 'retiring' "
                    "order by coalesce(i.inhdetachpending, false) desc, s.model_version, s.kind"
                )
                for version, kind, name, parent, pending in cur.fetchall():
                    if name is not None:
                        table = sql.SQL("swiperec_private.{}").format(sql.Identifier(name))
                        if parent is not None:
                            how = "finalize" if pending else "concurrently"
                            cur.execute(sql.SQL("alter table public.{} detach partition {} " + how)
                                        .format(sql.Identifier(parent), table))  # fmt: skip
                        cur.execute(sql.SQL("drop table if exists {}").format(table))
                        dropped.append(name)
                    cur.execute(
                        "delete from embedding_sets where model_version = %s and kind = %s "
                        "and state = 'retiring'",
                        (version, kind),
                    )
            finally:
                cur.execute("select pg_advisory_unlock(hashtext(%s))", ("swiperec: retiring sets",))
    finally:
        conn.autocommit = old_autocommit
    return dropped


def upsert(conn, version: str, kind: str, ids, vectors, ranking=None) -> int:
    """Insert or replace a handful of embeddings in a ready (possibly serving) set, in one
    transaction of its own: see `upsert_rows`."""
    with conn, conn.cursor() as cur:
        return upsert_rows(cur, version, kind, ids, vectors, ranking)


def upsert_rows(cur, version: str, kind: str, ids, vectors, ranking=None) -> int:
    """Insert or replace embeddings (and, for videos, their `ranking` terms as in
    `copy_shard`) in a ready (possibly serving) set, inside the caller's transaction: a new
    video, a user after a swipe. A video set's HNSW index is updated in the same transaction,
    so a query sees the row in the index once it is committed. Returns rows written. Checked
    as `copy_shard` checks: dimension, finite values."""
    _check_kind(kind)
    vectors = np.asarray(vectors, dtype=np.float32)
    ranking = _check_ranking(kind, ranking, len(vectors))
    cur.execute("select dimension from public.embedding_sets where model_version = %s "
                "and kind = %s and state = 'ready'", (version, kind))  # fmt: skip
    row = cur.fetchone()
    if not row:
        raise EmbeddingSetError(f"the {kind} set of {version!r} is not ready")
    keys = [int(i) for i in ids] if kind == "video" else [str(i) for i in ids]
    if not keys:
        return 0
    _check_vectors(kind, vectors, row[0])
    key = KINDS[kind][0]
    if kind == "video":  # a video's row always carries its ranking terms (null: none)
        terms = ranking.tolist() if ranking is not None else [[None, None]] * len(keys)
        rows = [(version, k, v, *t) for k, v, t in zip(keys, vectors, terms, strict=True)]
        # No terms given (a model without them) leaves a row's terms as they are: one row's
        # null terms among scored ones would put its cosine among like scores.
        extra = sql.SQL(
            ", rank_bias = coalesce(excluded.rank_bias, {p}.rank_bias),"
            " rank_scale = coalesce(excluded.rank_scale, {p}.rank_scale)"
        ).format(p=sql.Identifier(f"{kind}_embeddings"))
        columns, template = sql.SQL(", rank_bias, rank_scale"), "(%s, %s::int8, %s, %s, %s)"
    else:
        rows = [(version, k, v) for k, v in zip(keys, vectors, strict=True)]
        extra, columns, template = sql.SQL(""), sql.SQL(""), "(%s, %s::uuid, %s)"
    execute_values(
        cur,
        sql.SQL(
            "insert into public.{p} (model_version, {key}, embedding{columns}) values %s "
            "on conflict (model_version, {key}) do update set embedding = excluded.embedding"
            "{extra}, updated_at = now()"
        )
        .format(p=sql.Identifier(f"{kind}_embeddings"), key=sql.Identifier(key),
                columns=columns, extra=extra)
        .as_string(cur),
        rows,
        template=template,
    )  # fmt: skip
    return len(keys)


def status(conn) -> list[dict]:
    """Every set: version, kind, state, rows, serving or not, times."""
    with conn.cursor() as cur:
        cur.execute(
            "select s.model_version, s.kind, s.state, s.row_count, s.dimension, s.created_at, "
            "s.ready_at, s.model_version = (select model_version from serving_state) "
            "from embedding_sets s order by s.created_at, s.kind"
        )
        names = ("version", "kind", "state", "rows", "dimension", "created_at", "ready_at",
                 "serving")  # fmt: skip
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    conn.rollback()
    for row in rows:
        row["serving"] = bool(row["serving"])
    return rows
