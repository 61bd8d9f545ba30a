"""Benchmark: the cost of a monitoring pass over 10 million served rows, and of the next pass
after one more hour of traffic.

    python -m tests.performance.bench_monitoring                 # 10,000,000 served rows
    python -m tests.performance.bench_monitoring --served 1000000

Prepares a fresh embedded PostgreSQL: a synthetic catalogue and users, then served lists of 20
items spread over 30 days (hourly buckets), with swipes following half of the served items
(40 % likes) and one request row per list, all by bulk INSERT ... SELECT (not the simulator).
Then measures:
- the first pass (`swiperec.monitoring.compute.run_pass`: every bucket, from the first served
  row): seconds, and peak memory of this process and of the database backend that ran it;
- one new hour of traffic, then the next pass: seconds, buckets computed, and whether any old
  day partition was read (`pg_stat_user_tables` scans of every partition before the new day:
  unchanged means the incremental pass did not read them).
Baseline in the same run: one plain aggregate over every served row (`count(*)`, `avg(score)`
by day), the least work any full pass must do; the passes are reported as ratios to it.
Writes tests/performance/results/monitoring.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.performance.record import add_out_argument, save

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).parent / "results"
ITEMS = 20
DAYS = 30


def backend_peak(pid: int, stop: threading.Event, out: dict) -> None:
    """Sample the backend's resident memory every 50 ms (the database runs on this machine)."""
    import psutil

    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            out["peak"] = max(out.get("peak", 0), process.memory_info().rss)
        except psutil.Error:
            return
        stop.wait(0.05)


def timed_pass(conn, config, now, deliver) -> dict:
    from swiperec.monitoring.compute import run_pass

    with conn.cursor() as cur:
        cur.execute("select pg_backend_pid()")
        pid = cur.fetchone()[0]
    conn.rollback()
    stop, peak = threading.Event(), {}
    sampler = threading.Thread(target=backend_peak, args=(pid, stop, peak))
    sampler.start()
    started = time.perf_counter()
    summary = run_pass(conn, config, now=now, deliver=deliver)
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    return {"seconds": round(seconds, 2), "buckets": len(summary.buckets),
            "metric_rows": summary.rows, "stages_seconds": summary.seconds,
            "backend_peak_rss_mb": round(peak.get("peak", 0) / 2**20, 1)}  # fmt: skip


def insert_traffic(cur, start: datetime, hours: int, requests_per_hour: int, users: list[str],
                   videos: int) -> None:  # fmt: skip
    """`requests_per_hour` lists of ITEMS items per hour from `start`, the swipes that followed
    half of the items, and one request row per list, by bulk INSERT ... SELECT."""
    cur.execute(
        """
        create temporary table bench_requests on commit drop as
        select gen_random_uuid() as request_id,
               (%(users)s::uuid[])[1 + (random() * (cardinality(%(users)s::uuid[]) - 1))::int]
                   as user_id,
               %(start)s::timestamptz + (h * interval '1 hour')
                   + random() * interval '59 minutes' as created_at
        from generate_series(0, %(hours)s - 1) h, generate_series(1, %(per_hour)s) r
        """,
        {"users": users, "start": start, "hours": hours, "per_hour": requests_per_hour},
    )
    cur.execute(
        """
        insert into public.served_recommendations
            (request_id, user_id, video_id, position, score, model_version, source, reason,
             created_at)
        select q.request_id, q.user_id, 1 + (random() * (%(videos)s - 1))::int, p, 0.5,
               'bench', 'embedding', 'because you liked it', q.created_at
        from bench_requests q, generate_series(1, %(items)s) p
        """,
        {"videos": videos, "items": ITEMS},
    )
    cur.execute(
        """
        insert into public.serving_requests
            (request_id, user_id, status, duration_ms, model_version, route, source, items,
             created_at)
        select request_id, user_id, 200, 15 + random() * 20, 'bench', 'default', 'embedding',
               %(items)s, created_at
        from bench_requests
        """,
        {"items": ITEMS},
    )
    cur.execute(
        """
        insert into public.user_video_decisions (user_id, video_id, decision, created_at)
        select s.user_id, s.video_id, case when random() < 0.4 then 'like' else 'nope' end,
               s.created_at + s.position * interval '3 seconds'
        from public.served_recommendations s
        join bench_requests q using (request_id)
        where s.position % 2 = 1
        on conflict do nothing
        """
    )


def main(argv=None) -> int:
    from swiperec.data.load import load_synthetic
    from swiperec.data.synthetic import SyntheticConfig, generate, uuid_strings
    from swiperec.db import connect
    from swiperec.db.embedded import EmbeddedServer
    from swiperec.db.migrate import migrate
    from swiperec.monitoring.compute import floor_to_bucket
    from swiperec.monitoring.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--served", type=int, default=10_000_000, help="served rows")
    add_out_argument(parser, "monitoring.json")
    args = parser.parse_args(argv)
    per_hour = max(1, args.served // (ITEMS * DAYS * 24))

    with tempfile.TemporaryDirectory(prefix="swiperec-bench-") as tmp:
        server = EmbeddedServer(Path(tmp) / "home")
        url = server.start().url
        try:
            conn = connect(url)
            migrate(conn, local_bootstrap=True)
            dataset = generate(SyntheticConfig(videos=20_000, users=5_000, pseudo_users=0,
                                               decisions_per_user=5.0))  # fmt: skip
            load_synthetic(conn, dataset)
            users = uuid_strings(dataset.user_ids)
            with conn, conn.cursor() as cur:
                cur.execute("delete from swiperec_private.embedding_queue")
                cur.execute("insert into model_versions (model_version) values ('bench')")
                cur.execute("insert into serving_state (model_version) values ('bench')")
            now = datetime.now(UTC)
            first_hour = floor_to_bucket(now, 3600) - timedelta(days=DAYS)
            config = load_config()
            # Partitions for the 30 days first, so the rows land in day partitions.
            with conn, conn.cursor() as cur:
                for table in ("public.served_recommendations", "public.serving_requests"):
                    last = now.date() + timedelta(days=3)
                    cur.execute("select swiperec_private.ensure_day_partitions(%s, %s, %s)",
                                (table, first_hour.date(), last))  # fmt: skip
            started = time.perf_counter()
            with conn, conn.cursor() as cur:
                insert_traffic(cur, first_hour, DAYS * 24 - 2, per_hour, users, 20_000)
            generate_s = time.perf_counter() - started
            with conn, conn.cursor() as cur:
                cur.execute("analyze")
                cur.execute("select count(*) from public.served_recommendations")
                served = cur.fetchone()[0]

            # Baseline: one aggregate over every served row.
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute("select date_trunc('day', created_at), count(*), avg(score)"
                            " from public.served_recommendations group by 1")  # fmt: skip
                cur.fetchall()
            conn.rollback()
            baseline_s = time.perf_counter() - started

            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            full = timed_pass(conn, config, now, deliver=lambda alert: True)
            full["process_peak_rss_mb"] = round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # fmt: skip

            # One new hour of traffic, then the next pass an hour later.
            def partition_reads() -> dict:
                with conn.cursor() as cur:
                    cur.execute(
                        "select relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0)"
                        " from pg_stat_user_tables where schemaname = 'swiperec_private'"
                        " and relname ~ '^served_recommendations_[0-9]{8}$'"
                        " and relname < %s",
                        ("served_recommendations_" + (now.date()).strftime("%Y%m%d"),),
                    )  # fmt: skip
                    rows = dict(cur.fetchall())
                conn.rollback()
                return rows

            with conn, conn.cursor() as cur:
                insert_traffic(cur, floor_to_bucket(now, 3600), 1, per_hour, users, 20_000)
            with conn.cursor() as cur:
                cur.execute("select pg_stat_force_next_flush()")
            conn.rollback()
            time.sleep(1.0)
            before = partition_reads()
            incremental = timed_pass(conn, config, now + timedelta(hours=1),
                                     deliver=lambda alert: True)  # fmt: skip
            with conn.cursor() as cur:
                cur.execute("select pg_stat_force_next_flush()")
            conn.rollback()
            time.sleep(1.0)
            after = partition_reads()
            reread = sorted(name for name in before if after.get(name) != before[name])
            conn.close()
        finally:
            server.stop()

    figures = {
        "served_rows": served,
        "items_per_list": ITEMS,
        "days": DAYS,
        "generate_seconds": round(generate_s, 1),
        "baseline_aggregate_seconds": round(baseline_s, 2),
        "full_pass": {**full, "ratio_to_baseline": round(full["seconds"] / baseline_s, 1)},
        "incremental_pass": {
            **incremental,
            "ratio_to_baseline": round(incremental["seconds"] / baseline_s, 2),
            "old_day_partitions_read": reread,
            "old_day_partitions_checked": len(before),
        },
        "peak_process_rss_before_pass_mb": round(rss_before / 1024, 1),
    }
    name = "monitoring.json" if args.served == 10_000_000 else f"monitoring_{args.served}.json"
    path = save(figures, args.out, name)
    print(f"monitoring pass over {served:,} served rows ({DAYS} days, hourly buckets), 2 cores")
    print(f"  baseline: one aggregate over every served row   {baseline_s:8.2f} s")
    print(f"  first pass, every bucket ({full['buckets']})"
          f"        {full['seconds']:8.2f} s  ({figures['full_pass']['ratio_to_baseline']}x)"
          f"  backend peak {full['backend_peak_rss_mb']} MB,"
          f" this process {full['process_peak_rss_mb']} MB")  # fmt: skip
    print(f"  next pass after one new hour ({incremental['buckets']} buckets)"
          f" {incremental['seconds']:8.2f} s  ({figures['incremental_pass']['ratio_to_baseline']}x)"
          f"  old day partitions read: {len(reread)} of {len(before)}")  # fmt: skip
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
