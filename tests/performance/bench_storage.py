"""Benchmark: embeddings stored in their rows (`plain`) against in TOAST (pgvector's default).

    python -m tests.performance.bench_storage                  # 200,000 videos x 768-d
    python -m tests.performance.bench_storage --videos 20000

A vector(768) is 3,080 bytes, over the ~2 KB at which PostgreSQL moves a value out of its row
into the table's TOAST relation, which is where pgvector's `external` storage lets it go. The
sets keep it in the row instead (`swiperec.embeddings.store.begin_set`,
supabase/migrations/20261211000000_embeddings_inline.sql). This measures what that changes,
on one embedded server and the same random unit vectors, each storage written as its own video
and user set by the store's own load path (`begin_set`, `copy_shard`, `finish_set`; the TOAST
sets have their column set back to `external` before the COPY):

- the load: binary COPY of every shard, then the primary key, HNSW build, ANALYZE and attach
  (`--rounds` sets of each storage, alternating which goes first, so drift on a shared machine
  falls on both; each storage's set before is dropped before its next is loaded);
- reads, on the last set of each storage, one kind of read at a time: a warm-up pass over
  `--queries` queries, then the same queries measured, the storages alternating query by query
  (and which goes first), p50/p95; without parallel workers, so each storage's scan is the same
  one-core work. Both sets share the server's 1 GB of shared buffers: in their rows, the
  vectors make a ~0.8 GB heap beside the ~0.8 GB HNSW index, where TOAST leaves a heap of ids
  (~17 MB). The exact scan runs last, since reading every TOAST chunk through the buffers
  would evict the indexes the other reads use (a sequential scan of a heap over a quarter of
  the buffers goes through a small ring of them instead, as the plain heap's does):
  - `ids`: the HNSW top 20, ids only (no vector in the result);
  - `nearest`: the HNSW top 100 with their vectors, which a second expression reads (the
    serving call's candidates);
  - `lookup`: 500 videos by primary key, their cosines to the query (the serving call's
    new-release pool);
  - `exact`: the top 20 by cosine over the whole set, no index (the serving benchmark's
    baseline: every vector read);
- writes: one user's vector replaced at a time (the real-time worker's upsert), p50/p95;
- sizes: heap, TOAST and indexes of each set.

Baseline in the same run: the TOAST sets; each figure's ratio plain / TOAST. Writes
tests/performance/results/storage.json (storage_<videos>.json at another --videos).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from tests.performance.record import add_out_argument, save

DIM = 768
SHARD_ROWS = 20_000
LOOKUP_ROWS = 500


def unit_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def percentiles(samples_ms: list[float]) -> dict:
    return {
        "n": len(samples_ms),
        "p50_ms": round(float(np.percentile(samples_ms, 50)), 3),
        "p95_ms": round(float(np.percentile(samples_ms, 95)), 3),
    }


def load(conn, version: str, storage: str, videos, users, index) -> dict:
    """One video set and one user set of `version`, their embedding column `storage`:
    COPY seconds, and finish (keys, HNSW, ANALYZE, attach) seconds."""
    from psycopg2 import sql

    from swiperec.embeddings.store import _table, begin_set, copy_shard, finish_set

    seconds = {"copy": 0.0, "finish": 0.0}
    for kind, vectors in (("video", videos), ("user", users)):
        keys = (np.arange(1, len(vectors) + 1) if kind == "video"
                else [str(uuid.UUID(int=i + 1)) for i in range(len(vectors))])  # fmt: skip
        shards = range(0, len(vectors), SHARD_ROWS)
        started = begin_set(conn, version, kind, expected_shards=len(shards))
        if not started:
            raise RuntimeError(f"the {kind} set of {version!r} exists already")
        if storage != "plain":
            with conn, conn.cursor() as cur:
                cur.execute(sql.SQL("alter table {} alter column embedding set storage {}")
                            .format(_table(version, kind)[0], sql.SQL(storage)))  # fmt: skip
        start = time.perf_counter()
        for shard, lo in enumerate(shards):
            part = slice(lo, lo + SHARD_ROWS)
            copy_shard(conn, version, kind, str(shard), keys[part], vectors[part])
        seconds["copy"] += time.perf_counter() - start
        start = time.perf_counter()
        finish_set(conn, version, kind, index if kind == "video" else None)
        seconds["finish"] += time.perf_counter() - start
    return {k: round(v, 2) for k, v in seconds.items()}


def retire_set(conn, version: str) -> None:
    """Drop both sets of `version` (never serving here) and their bookkeeping."""
    from psycopg2 import sql

    from swiperec.embeddings.store import _table

    with conn, conn.cursor() as cur:
        for kind in ("video", "user"):
            cur.execute(sql.SQL("drop table {}").format(_table(version, kind)[0]))
        cur.execute("delete from embedding_set_shards where model_version = %s", (version,))
        cur.execute("delete from embedding_sets where model_version = %s", (version,))


def sizes_mb(conn, version: str) -> dict:
    from swiperec.embeddings.store import _table

    out = {}
    with conn.cursor() as cur:
        for kind in ("video", "user"):
            _, name = _table(version, kind)
            cur.execute(
                "select pg_relation_size(c.oid), "
                "       coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0), "
                "       pg_indexes_size(c.oid) "
                "from pg_class c where c.oid = %s::regclass",
                (f"swiperec_private.{name}",),
            )
            heap, toast, indexes = cur.fetchone()
            out[kind] = {"heap": round(heap / 2**20, 1), "toast": round(toast / 2**20, 1),
                         "indexes": round(indexes / 2**20, 1)}  # fmt: skip
    conn.rollback()
    return out


READS = {  # in the order they run
    "ids": (
        "select video_id from video_embeddings where model_version = %(v)s "
        "order by embedding <=> %(q)s limit 20"
    ),
    "nearest": (
        "select sum(x.embedding <=> %(q2)s) from ("
        " select embedding from video_embeddings where model_version = %(v)s"
        " order by embedding <=> %(q)s limit 100) x"
    ),
    "lookup": (
        "select min(embedding <=> %(q)s) from video_embeddings "
        "where model_version = %(v)s and video_id = any(%(ids)s)"
    ),
    "exact": (
        "select video_id from video_embeddings where model_version = %(v)s "
        "order by (embedding <=> %(q)s) + 0 limit 20"  # `+ 0`: no index serves it
    ),
}


def reads(conn, versions: dict, queries: np.ndarray, videos: int, rng) -> dict:
    """Each read of READS in turn against each storage's set: a warm-up pass, then the same
    queries measured, alternating storage query by query."""
    samples = {name: {storage: [] for storage in versions} for name in READS}
    lookups = [(rng.choice(videos, LOOKUP_ROWS, replace=False) + 1).tolist()  # keys are 1..n
               for _ in queries]  # fmt: skip
    with conn.cursor() as cur:
        cur.execute("set hnsw.ef_search = 100; set max_parallel_workers_per_gather = 0")
        for name, query in READS.items():
            for warm_up in (True, False):
                for i, q in enumerate(queries):
                    params = {"q": q, "q2": queries[i - 1], "ids": lookups[i]}
                    for storage, version in list(versions.items())[:: 1 if i % 2 else -1]:
                        start = time.perf_counter()
                        cur.execute(query, {**params, "v": version})
                        cur.fetchall()
                        if not warm_up:
                            samples[name][storage].append((time.perf_counter() - start) * 1000)
    conn.rollback()
    return {name: {s: percentiles(v) for s, v in by.items()} for name, by in samples.items()}


def upserts(conn, versions: dict, users: np.ndarray, n: int, rng) -> dict:
    """One user's vector replaced per transaction, alternating storage: p50/p95."""
    from swiperec.embeddings.store import upsert

    samples = {storage: [] for storage in versions}
    for i in range(n):
        user = str(uuid.UUID(int=int(rng.integers(len(users))) + 1))
        vector = users[rng.integers(len(users))][None, :]
        for storage, version in list(versions.items())[:: 1 if i % 2 else -1]:
            start = time.perf_counter()
            upsert(conn, version, "user", [user], vector)
            samples[storage].append((time.perf_counter() - start) * 1000)
    return {s: percentiles(v) for s, v in samples.items()}


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def main(argv=None) -> int:
    from swiperec.db import connect
    from swiperec.db.embedded import SERVER_SETTINGS, EmbeddedServer
    from swiperec.db.migrate import migrate
    from swiperec.embeddings.store import IndexParams

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2, help="sets loaded per storage")
    parser.add_argument("--queries", type=int, default=50, help="queries per read and storage")
    parser.add_argument("--upserts", type=int, default=500, help="user upserts per storage")
    add_out_argument(parser, "storage.json")
    args = parser.parse_args(argv)
    SERVER_SETTINGS["shared_buffers"] = "1GB"  # as the refresh benchmark's server
    index = IndexParams().for_rows(args.videos)
    videos, users = unit_vectors(args.videos, 0), unit_vectors(args.users, 1)
    queries = unit_vectors(args.queries, 2)
    rng = np.random.default_rng(3)

    with tempfile.TemporaryDirectory(prefix="swiperec-bench-") as tmp:
        server = EmbeddedServer(Path(tmp) / "home")
        url = server.start().url
        try:
            conn = connect(url)
            migrate(conn, local_bootstrap=True)
            conn.close()
            conn = connect(url)
            loads = {"plain": [], "external": []}
            last = {}
            for r in range(args.rounds):
                for storage in ("external", "plain")[:: 1 if r % 2 == 0 else -1]:
                    if storage in last:  # the round before's set: its space back first
                        retire_set(conn, last[storage])
                    version = f"{storage}-{r}"
                    loads[storage].append(load(conn, version, storage, videos, users, index))
                    last[storage] = version
                    print(f"  round {r + 1}: {storage} loaded {loads[storage][-1]}", flush=True)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("checkpoint")
            conn.autocommit = False
            read_figures = reads(conn, last, queries, args.videos, rng)
            write_figures = upserts(conn, last, users, args.upserts, rng)
            size_figures = {s: sizes_mb(conn, v) for s, v in last.items()}
            conn.close()
        finally:
            server.stop()

    def median(storage, key):
        return float(np.median([x[key] for x in loads[storage]]))

    figures = {
        "videos": args.videos, "users": args.users, "dimension": DIM, "rounds": args.rounds,
        "queries": args.queries, "index": index.to_dict(),
        "baseline": "external: pgvector's default storage, the vector in TOAST",
        "load_seconds": loads,
        "load_ratio_plain_to_external": {
            k: ratio(median("plain", k), median("external", k)) for k in ("copy", "finish")
        },
        "reads": read_figures,
        "reads_ratio_plain_to_external": {
            name: {p: ratio(by["plain"][p], by["external"][p]) for p in ("p50_ms", "p95_ms")}
            for name, by in read_figures.items()
        },
        "user_upsert": write_figures,
        "user_upsert_ratio_plain_to_external": {
            p: ratio(write_figures["plain"][p], write_figures["external"][p])
            for p in ("p50_ms", "p95_ms")
        },
        "sizes_mb": size_figures,
    }  # fmt: skip
    name = "storage.json" if args.videos == 200_000 else f"storage_{args.videos}.json"
    path = save(figures, args.out, name)
    print(f"embeddings in their rows (plain) against in TOAST (external), {args.videos:,} "
          f"videos x {DIM}-d, {args.rounds} loads each")  # fmt: skip
    for k, r in figures["load_ratio_plain_to_external"].items():
        print(f"  load {k:<7} plain {median('plain', k):>7.2f} s  external "
              f"{median('external', k):>7.2f} s  ratio {r}")  # fmt: skip
    for name_, by in read_figures.items():
        print(f"  {name_:<8} p50 {by['plain']['p50_ms']:>8} / {by['external']['p50_ms']:>8} ms, "
              f"p95 {by['plain']['p95_ms']:>8} / {by['external']['p95_ms']:>8} ms "
              f"(plain / external)")  # fmt: skip
    w = write_figures
    print(f"  upsert   p50 {w['plain']['p50_ms']} / {w['external']['p50_ms']} ms, "
          f"p95 {w['plain']['p95_ms']} / {w['external']['p95_ms']} ms")  # fmt: skip
    print(f"  sizes MB: {size_figures}")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
