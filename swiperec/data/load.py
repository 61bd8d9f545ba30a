"""Loads a generated synthetic data set into the database with binary COPY, all or nothing.

The whole load is one transaction: a failure or a kill leaves whatever was there before. With
`replace`, the catalogue, reviews, decisions and embeddings are truncated in that same
transaction, which also lets PostgreSQL skip WAL for the COPYs (`wal_level=minimal`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from swiperec.db.binary_copy import Column, copy_binary
from swiperec.errors import SwiperecError

DATA_TABLES = (
    "public.user_video_decisions",
    "public.video_reviews",
    "public.video_embeddings",
    "public.user_embeddings",
    "public.videos",
)


class DatabaseNotEmptyError(SwiperecError):
    """The target already holds data and `replace` was not asked for."""


def load_synthetic(
    conn, dataset, *, replace: bool = False, progress: Callable[[str], None] | None = None
) -> dict[str, int]:
    """COPY videos, reviews and decisions of a `SyntheticDataset`; returns rows per table."""
    say = progress or (lambda stage: None)
    try:
        with conn.cursor() as cur:
            existing = _row_counts(cur)
            if any(existing.values()) and not replace:
                raise DatabaseNotEmptyError(
                    "the database already holds data ("
                    + ", ".join(f"{t.split('.')[1]}: {n:,}" for t, n in existing.items() if n)
                    + "); pass --replace to wipe it and load the synthetic set instead"
                )
            if replace:
                cur.execute(f"truncate {', '.join(DATA_TABLES)} restart identity")
            # Keys and indexes of the big tables are rebuilt after the COPY, not maintained
            # row by row; the transaction hides the gap from every other session.
            rebuild = [
                *drop_keys_and_indexes(cur, "public.user_video_decisions"),
                *drop_keys_and_indexes(cur, "public.video_reviews"),
            ]
            say("copy videos")
            counts = {"videos": _copy_videos(cur, dataset.videos)}
            cur.execute(
                "select setval(pg_get_serial_sequence('public.videos', 'id'),"
                " greatest(max(id), 1)) from public.videos"
            )
            say("copy reviews")
            counts["video_reviews"] = _copy_reviews(cur, dataset)
            say("copy decisions")
            counts["user_video_decisions"] = copy_decisions(cur, dataset)
            say("build indexes")
            for ddl in rebuild:
                cur.execute(ddl)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    say("analyze")
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("analyze public.videos, public.video_reviews, public.user_video_decisions")
    finally:
        conn.autocommit = autocommit
    return counts


def _row_counts(cur) -> dict[str, int]:
    counts = {}
    for table in DATA_TABLES:
        cur.execute(f"select exists (select 1 from {table})")
        counts[table] = int(cur.fetchone()[0])
    return counts


def drop_keys_and_indexes(cur, table: str) -> list[str]:
    """Drop `table`'s primary/unique/foreign keys and plain indexes; returns the DDL that
    recreates them. Checking a foreign key row by row and maintaining B-trees per row makes a
    COPY ~20x slower than the COPY itself; rebuilding them once afterwards costs a few seconds
    (measured by tests/performance/bench_synthetic_load.py)."""
    cur.execute(
        """
        select c.conname, pg_get_constraintdef(c.oid)
        from pg_constraint c
        where c.conrelid = %s::regclass and c.contype in ('p', 'u', 'f')
        order by c.contype = 'f'  -- foreign keys last
        """,
        (table,),
    )
    constraints = cur.fetchall()
    cur.execute(
        """
        select i.oid::regclass::text, pg_get_indexdef(i.oid)
        from pg_index x join pg_class i on i.oid = x.indexrelid
        where x.indrelid = %s::regclass
          and not exists (select 1 from pg_constraint c where c.conindid = i.oid)
        """,
        (table,),
    )
    indexes = cur.fetchall()
    for name, _ in constraints:
        cur.execute(f'alter table {table} drop constraint "{name}"')
    for name, _ in indexes:
        cur.execute(f"drop index {name}")  # regclass text: already quoted and qualified
    return [f'alter table {table} add constraint "{name}" {ddl}' for name, ddl in constraints] + [
        ddl for _, ddl in indexes
    ]


def _copy_videos(cur, videos: dict) -> int:
    n = len(videos["external_id"])
    return copy_binary(
        cur,
        "public.videos",
        [
            Column("id", "int8", np.arange(1, n + 1, dtype=np.int64)),
            Column("external_id", "text", videos["external_id"]),
            Column("title", "text", videos["title"]),
            Column("description", "text", videos["description"]),
            Column("genres", "text[]", videos["genres"]),
            Column("maker", "text", videos["maker"]),
            Column("label", "text", videos["label"]),
            Column("series", "text", videos["series"]),
            Column("performers", "text[]", videos["performers"]),
            Column("release_date", "date", videos["release_date"]),
            Column("duration_sec", "int4", np.asarray(videos["duration_sec"], dtype=np.int32)),
            # A synthetic video enters the catalogue on its release day, so snapshots taken
            # "as of" a past cutoff see the catalogue as it was then.
            Column("created_at", "timestamptz", np.asarray(videos["release_date"])),
        ],
        chunk_rows=20_000,
    )


def _copy_reviews(cur, dataset) -> int:
    reviews = dataset.reviews
    reviewer_ids = np.asarray(dataset.reviewer_ids, dtype=object)
    return copy_binary(
        cur,
        "public.video_reviews",
        [
            Column("reviewer_id", "text", reviewer_ids[reviews["reviewer_index"]]),
            Column("video_id", "int8", reviews["video_id"]),
            Column("rating", "int2", reviews["rating"].astype(np.int16)),
            Column("created_at", "timestamptz", reviews["created_at"]),
        ],
    )


def copy_decisions(cur, dataset, table: str = "public.user_video_decisions") -> int:
    """COPY the data set's swipes into `table` (a table shaped like user_video_decisions)."""
    decisions = dataset.decisions
    return copy_binary(
        cur,
        table,
        [
            Column("user_id", "uuid", dataset.user_ids[decisions["user_index"]]),
            Column("video_id", "int8", decisions["video_id"]),
            # 'like' and 'nope' are both four bytes, so this column stays fixed-width.
            Column("decision", "text", np.where(decisions["like"], b"like", b"nope")),
            Column("created_at", "timestamptz", decisions["created_at"]),
        ],
        chunk_rows=500_000,
    )


def ground_truth_path(home=None):
    """Where `generate_and_load` keeps the ground truth of the data set it loaded last."""
    from pathlib import Path

    from swiperec.db.embedded import default_home

    return Path(home or default_home()) / "synthetic" / "ground_truth.npz"


def generate_and_load(
    conn, config, *, replace: bool, out=None, generate_progress=None, load_progress=None
) -> dict[str, int]:
    """Generate a synthetic data set, load it, and save its ground truth beside the embedded
    server's data (and the CSV files with it, into `out`, when given)."""
    from swiperec.data.synthetic import generate, write_csv

    dataset = generate(config, progress=generate_progress)
    counts = load_synthetic(conn, dataset, replace=replace, progress=load_progress)
    path = ground_truth_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.ground_truth.save(path)
    # Which data set the ground truth belongs to: reviewer ids repeat across seeds, so an
    # oracle answer is only meaningful for the data set it was saved with.
    path.with_name("dataset.json").write_text(json.dumps(asdict(config)))
    if out is not None:
        write_csv(dataset, out)
    return counts
