"""Benchmark: generate the 200k-video / 10k-user synthetic data set and load it with binary COPY.

    python -m tests.performance.bench_synthetic_load      # 200k videos, 10k users, ~3M decisions
    python -m tests.performance.bench_synthetic_load --videos 20000 --users 1000   # a quick look

Runs against a fresh embedded server in a temporary folder (never the developer's data).
Reports generation time, load time (COPY + key and index rebuild + ANALYZE, one transaction),
rows per second and peak memory. Then loads the same decisions twice more into an identical
scratch table (keys, foreign key, indexes): swiperec's way (binary COPY, keys and indexes
rebuilt once afterwards) and the usual simple way (CSV text COPY into the table as it is), the
baseline. Prints a table and writes JSON to tests/performance/results/synthetic_load.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psutil

from swiperec.data.load import copy_decisions, drop_keys_and_indexes, load_synthetic
from swiperec.data.synthetic import SyntheticConfig, generate
from swiperec.db import connect
from swiperec.db.embedded import EmbeddedServer
from swiperec.db.migrate import migrate
from tests.performance.record import add_out_argument, save


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def server_rss_mb(server: EmbeddedServer) -> float:
    """Resident memory of the PostgreSQL server and its backends, now."""
    root = psutil.Process(server.status().pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def _scratch_load(conn, load) -> float:
    """Seconds for `load(cur)` into a fresh copy of user_video_decisions (indexes included)."""
    with conn.cursor() as cur:
        cur.execute(
            "create table scratch_decisions (like public.user_video_decisions including all)"
        )
        conn.commit()
        start = time.perf_counter()
        load(cur)
        conn.commit()
        seconds = time.perf_counter() - start
        cur.execute("drop table scratch_decisions")
    conn.commit()
    return seconds


def csv_text_copy(dataset):
    """The usual simple approach: format rows with the csv module, COPY them as text."""
    decisions = dataset.decisions

    def load(cur):
        user_strings = [str(uuid.UUID(bytes=bytes(row))) for row in dataset.user_ids]
        created = np.datetime_as_string(decisions["created_at"], unit="us")
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for u, v, like, t in zip(
            decisions["user_index"],
            decisions["video_id"],
            decisions["like"],
            created,
            strict=True,
        ):
            writer.writerow((user_strings[u], int(v), "like" if like else "nope", t + "Z"))
        buffer.seek(0)
        cur.copy_expert(
            "copy scratch_decisions (user_id, video_id, decision, created_at)"
            " from stdin with (format csv)",
            buffer,
        )

    return load


def binary_copy(dataset):
    """swiperec's path: keys and indexes dropped, columns encoded with numpy, binary COPY,
    keys and indexes rebuilt once."""

    def load(cur):
        rebuild = drop_keys_and_indexes(cur, "scratch_decisions")
        copy_decisions(cur, dataset, "scratch_decisions")
        for ddl in rebuild:
            cur.execute(ddl)

    return load


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--pseudo-users", type=int, default=20_000)
    parser.add_argument("--decisions-per-user", type=float, default=300.0)
    parser.add_argument("--reviews-per-pseudo-user", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=7)
    add_out_argument(parser, "synthetic_load.json")
    args = parser.parse_args(argv)
    config = SyntheticConfig(
        videos=args.videos,
        users=args.users,
        pseudo_users=args.pseudo_users,
        decisions_per_user=args.decisions_per_user,
        reviews_per_pseudo_user=args.reviews_per_pseudo_user,
        seed=args.seed,
    )

    with tempfile.TemporaryDirectory(prefix="swiperec-bench-") as home:
        server = EmbeddedServer(Path(home))
        url = server.start().url
        try:
            conn = connect(url)
            migrate(conn, local_bootstrap=True)

            start = time.perf_counter()
            dataset = generate(config)
            generate_s = time.perf_counter() - start
            generate_rss = peak_rss_mb()

            start = time.perf_counter()
            counts = load_synthetic(conn, dataset)
            load_s = time.perf_counter() - start
            load_rss = peak_rss_mb()
            postgres_rss = server_rss_mb(server)

            # Like for like: the decisions alone, into an indexed scratch table, both ways.
            binary_s = _scratch_load(conn, binary_copy(dataset))
            baseline_s = _scratch_load(conn, csv_text_copy(dataset))
            conn.close()
        finally:
            server.stop()

    decisions = counts["user_video_decisions"]
    result = {
        "config": config.__dict__,
        "rows": counts,
        "generate_seconds": round(generate_s, 2),
        "load_seconds": round(load_s, 2),
        "total_seconds": round(generate_s + load_s, 2),
        "load_rows_per_second": round(sum(counts.values()) / load_s),
        "peak_rss_mb_after_generate": round(generate_rss),
        "peak_rss_mb_whole_run": round(load_rss),
        "postgres_rss_mb_after_load": round(postgres_rss),
        "decisions_baseline_csv_copy_keys_maintained_seconds": round(baseline_s, 2),
        "decisions_binary_copy_keys_rebuilt_seconds": round(binary_s, 2),
        "speedup_vs_baseline": round(baseline_s / binary_s, 2),
    }
    path = save(result, args.out, "synthetic_load.json")

    print(
        f"synthetic data: {config.videos:,} videos, {config.users:,} users, "
        f"{config.pseudo_users:,} pseudo-users -> {decisions:,} decisions, "
        f"{counts['video_reviews']:,} reviews"
    )
    rows = [
        ("generate", f"{generate_s:.1f} s", f"peak RSS {generate_rss:,.0f} MB"),
        (
            "load (binary COPY, keys, indexes, analyze)",
            f"{load_s:.1f} s",
            f"{result['load_rows_per_second']:,} rows/s; peak RSS (whole run) {load_rss:,.0f} MB; "
            f"postgres {postgres_rss:,.0f} MB",
        ),
        ("total", f"{generate_s + load_s:.1f} s", ""),
        ("decisions: binary COPY, keys rebuilt", f"{binary_s:.1f} s", "swiperec's path"),
        (
            "decisions: CSV COPY, keys maintained",
            f"{baseline_s:.1f} s",
            f"baseline; swiperec's path is {baseline_s / binary_s:.1f}x faster",
        ),
    ]
    for name, seconds, note in rows:
        print(f"  {name:<44}{seconds:>8}   {note}")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
