"""Experiment: does monitoring stay quiet on a healthy model, and catch a broken one?

    python -m tests.performance.bench_alerts                  # runs `swiperec demo` first
    python -m tests.performance.bench_alerts --home .swiperec # a home where the demo ran

1. A home with the demo's data set, its ground truth and a blessed model serving (the script
   runs `swiperec demo --simulate-seconds 0` in a fresh one unless --home is given).
2. Simulated app traffic (`swiperec.simulate`: the data set's users with their ground truth,
   over HTTP through the Edge Function under Deno) for `--healthy-minutes`, while a monitoring
   pass runs every 15 s. Time is compressed: a bucket is one minute, standing for one hour of
   a production deployment (the alert rule counts buckets, not seconds).
3. Serving switches to a deliberately broken version: the same model with its video
   embeddings shuffled among the videos (forced promotion, recorded with its reason). Traffic
   goes on until the like-rate rule fires, or `--broken-minutes` pass.
Reports every bucket's like-rate and sample size, the alerts fired while healthy (the goal is
none), and for the broken version: after how many served items and how many buckets (and
seconds) the alert fired. The rule is the packaged `like-rate drop` rule with one-minute
buckets. Writes tests/performance/results/alerts.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

RESULTS = Path(__file__).parent / "results"
BROKEN = "broken-shuffled"
PASS_EVERY = 15.0


def experiment_config():
    """The packaged rules, on one-minute buckets with outcomes settled after 45 s."""
    from swiperec.monitoring.config import Buckets, load_config

    packaged = load_config()
    like_rate = next(r for r in packaged.alerts if r.name == "like-rate drop")
    buckets = Buckets(seconds=60, attribution_seconds=30, settle_seconds=45,
                      session_gap_seconds=300)  # fmt: skip
    return replace(packaged, buckets=buckets, alerts=(like_rate,)), like_rate


def make_broken_version(conn, serving: str, seed: int = 0) -> int:
    """BROKEN: `serving`'s user vectors, and its video vectors shuffled among the videos."""
    from swiperec.embeddings import store
    from swiperec.registry.versions import promote

    rng = np.random.default_rng(seed)
    for kind, key in (("video", "video_id"), ("user", "user_id")):
        with conn.cursor() as cur:
            cur.execute(f"select {key}, embedding from {kind}_embeddings"
                        f" where model_version = %s order by 1", (serving,))  # fmt: skip
            rows = cur.fetchall()
        conn.rollback()
        ids = [r[0] for r in rows]
        vectors = np.stack([r[1].to_numpy() for r in rows])
        if kind == "video":
            vectors = vectors[rng.permutation(len(vectors))]
        store.begin_set(conn, BROKEN, kind, vectors.shape[1], expected_shards=1)
        store.copy_shard(conn, BROKEN, kind, "all", ids, vectors)
        store.finish_set(conn, BROKEN, kind, store.IndexParams(parallel_workers=0))
    with conn, conn.cursor() as cur:
        cur.execute("insert into model_versions (model_version, model_uri) select %s, model_uri"
                    " from model_versions where model_version = %s", (BROKEN, serving))  # fmt: skip
    promote(conn, BROKEN, force=True, reason="experiment: video embeddings shuffled")
    return len(ids)


class Monitor(threading.Thread):
    """A monitoring pass every PASS_EVERY seconds until stopped; remembers every alert."""

    def __init__(self, url: str, config):
        super().__init__(daemon=True)
        self.url, self.config = url, config
        self.stop = threading.Event()
        self.alerts: list[dict] = []
        self.passes: list[float] = []

    def run(self) -> None:
        from swiperec.db import connect
        from swiperec.monitoring.compute import run_pass

        conn = connect(self.url)
        try:
            while not self.stop.wait(PASS_EVERY):
                started = time.perf_counter()
                summary = run_pass(conn, self.config, deliver=lambda alert: True)
                self.passes.append(time.perf_counter() - started)
                for alert in summary.alerts:
                    self.alerts.append({**alert, "fired_at": datetime.now(UTC)})
        finally:
            conn.close()


def main(argv=None) -> int:
    from swiperec.data.load import ground_truth_path
    from swiperec.data.synthetic_truth import GroundTruth
    from swiperec.db import connect, database_url
    from swiperec.embeddings.store import serving_version
    from swiperec.simulate import SimulationOptions, simulate

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", help="a SWIPEREC_HOME where `swiperec demo` ran")
    parser.add_argument("--healthy-minutes", type=float, default=12)
    parser.add_argument("--broken-minutes", type=float, default=8)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second")
    args = parser.parse_args(argv)

    temporary = None
    if args.home is None:
        temporary = tempfile.TemporaryDirectory(prefix="swiperec-alerts-")
        args.home = temporary.name
        os.environ["SWIPEREC_HOME"] = args.home
        subprocess.run([sys.executable, "-m", "swiperec.cli", "demo", "--simulate-seconds", "0"],
                       check=True, env={**os.environ, "SWIPEREC_HOME": args.home})  # fmt: skip
    os.environ["SWIPEREC_HOME"] = args.home
    os.environ.pop("DATABASE_URL", None)
    url = database_url()
    conn = connect(url)
    healthy_version = serving_version(conn)
    if healthy_version is None:
        sys.exit(f"nothing serves in {args.home}: run `swiperec demo` there first")
    truth = GroundTruth.load(ground_truth_path())
    config, rule = experiment_config()
    with conn, conn.cursor() as cur:  # earlier passes of other bucket sizes do not matter
        cur.execute("delete from monitoring_alerts")

    monitor = Monitor(url, config)
    monitor.start()
    options = SimulationOptions(rate=args.rate, duration=args.healthy_minutes * 60, users=800,
                                new_videos_per_minute=2, new_users_per_minute=1)  # fmt: skip
    healthy = simulate(url, truth, options)
    time.sleep(config.buckets.settle_seconds + PASS_EVERY + 5)  # the last healthy buckets settle
    healthy_alerts = list(monitor.alerts)

    switch_started = time.perf_counter()
    shuffled = make_broken_version(conn, healthy_version)
    switched_at = datetime.now(UTC)
    switch_s = time.perf_counter() - switch_started

    stop = threading.Event()

    def until_alert():
        deadline = time.monotonic() + args.broken_minutes * 60
        while time.monotonic() < deadline and not stop.is_set():
            if any(a["fired_at"] > switched_at for a in monitor.alerts):
                time.sleep(5)
                stop.set()
            time.sleep(1)
        stop.set()

    watcher = threading.Thread(target=until_alert, daemon=True)
    watcher.start()
    broken = simulate(url, truth, replace(options, duration=args.broken_minutes * 60, seed=1),
                      stop=stop)  # fmt: skip
    watcher.join()
    time.sleep(PASS_EVERY + 1)
    monitor.stop.set()
    monitor.join()

    fired = [a for a in monitor.alerts if a["fired_at"] > switched_at]
    first = fired[0] if fired else None
    with conn.cursor() as cur:
        cur.execute(
            "select bucket_start, value, samples from monitoring_metrics where bucket_seconds = 60"
            " and metric = 'like_rate' and model_version = '*' and route = '*' and segment = 'all'"
            " order by bucket_start"
        )
        buckets = [{"bucket_start": b.isoformat(), "like_rate": v, "samples": n}
                   for b, v, n in cur.fetchall()]  # fmt: skip
        served_before_alert = None
        if first:
            cur.execute("select count(*) from served_recommendations where model_version = %s"
                        " and created_at <= %s", (BROKEN, first["fired_at"]))  # fmt: skip
            served_before_alert = cur.fetchone()[0]
    conn.rollback()
    conn.close()

    figures = {
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor()},
        "rule": {
            k: getattr(rule, k)
            for k in (
                "name",
                "metric",
                "kind",
                "threshold",
                "baseline_buckets",
                "min_baseline_buckets",
                "min_samples",
                "cooldown_buckets",
            )
        },
        "buckets": {
            "seconds": 60,
            "stands_for": "one hour",
            "attribution_seconds": 30,
            "settle_seconds": 45,
        },
        "healthy": {
            "version": healthy_version,
            "minutes": args.healthy_minutes,
            "report": healthy.to_dict(),
            "alerts": len(healthy_alerts),
            "alert_messages": [a["message"] for a in healthy_alerts],
        },
        "broken": {
            "version": BROKEN,
            "videos_shuffled": shuffled,
            "switch_seconds": round(switch_s, 1),
            "report": broken.to_dict(),
            "alert": None
            if first is None
            else {
                "message": first["message"],
                "bucket_start": first["bucket_start"].isoformat(),
                "seconds_after_switch": round((first["fired_at"] - switched_at).total_seconds(), 1),
                "buckets_after_switch": round(
                    (first["bucket_start"] - switched_at).total_seconds() / 60 + 1, 1
                ),
                "served_items_before_alert": served_before_alert,
            },
        },
        "like_rate_by_bucket": buckets,
        "monitoring_pass_seconds": {
            "count": len(monitor.passes),
            "p50": round(float(np.median(monitor.passes)), 3),
            "max": round(max(monitor.passes), 3),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "alerts.json"
    path.write_text(json.dumps(figures, indent=2, default=str))
    requests = healthy.to_dict().get("requests")
    print(f"healthy {healthy_version}: {args.healthy_minutes:g} one-minute buckets (hours), "
          f"{requests} requests, {len(healthy_alerts)} alerts")  # fmt: skip
    for b in buckets:
        print(f"  {b['bucket_start']}  like-rate {b['like_rate']}  n={b['samples']}")
    if first is None:
        print(f"broken: no alert within {args.broken_minutes:g} minutes")
    else:
        a = figures["broken"]["alert"]
        print(f"broken: '{first['message']}'\n  fired {a['seconds_after_switch']} s after the "
              f"switch, in bucket {a['buckets_after_switch']} after it, after "
              f"{served_before_alert} served items")  # fmt: skip
    print(f"saved {path}")
    if temporary is not None:
        subprocess.run([sys.executable, "-m", "swiperec.cli", "db", "stop"], check=False)
        temporary.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
