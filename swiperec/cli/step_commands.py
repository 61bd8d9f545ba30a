"""Pipeline steps one at a time (`swiperec snapshot`, `swiperec transform`) and `swiperec demo`."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from swiperec.cli.common import UserError, ready_connection, stage_bar
from swiperec.cli.data_commands import add_generation_options, config_from_args, generate_into


def add_commands(commands) -> None:
    snapshot_parser = commands.add_parser(
        "snapshot",
        help="write videos, reviews and decisions up to a cutoff as Parquet files, "
        "read in one consistent transaction (the training pipeline's input)",
    )
    snapshot_parser.add_argument(
        "--out",
        required=True,
        help="folder to write: a local path or a gs:// URI; it must not hold a snapshot "
        "unless --overwrite",
    )
    snapshot_parser.add_argument(
        "--cutoff",
        type=_parse_time,
        help="include rows created up to this time, ISO 8601, e.g. 2026-10-01T00:00:00Z "
        "(no zone means UTC; default: now; a future time is refused)",
    )
    snapshot_parser.add_argument(
        "--overwrite", action="store_true", help="replace a snapshot already in --out"
    )
    snapshot_parser.set_defaults(func=snapshot)

    transform_parser = commands.add_parser(
        "transform",
        help="feature transform (TFT on Beam): a snapshot in; the transform graph and "
        "train/validation/test examples out, in OUT/transform and OUT/examples",
        epilog="Beam options go after --, e.g. `swiperec transform --snapshot gs://b/s --out "
        "gs://b/t -- --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp`",
    )
    transform_parser.add_argument("--snapshot", required=True, help="a snapshot folder or URI")
    transform_parser.add_argument("--out", required=True, help="output folder or gs:// URI")
    transform_parser.add_argument(
        "--negatives-per-positive", type=float, help="negatives per like (default 2: 1:2)"
    )
    transform_parser.add_argument(
        "--pseudo-user-weight",
        type=float,
        help="weight of pseudo-user (review) examples; 0 leaves them out (default 1)",
    )
    transform_parser.add_argument(
        "--popularity-alpha",
        type=float,
        help="sampled negatives ~ popularity ** alpha (0 uniform, 1 popularity; default 0.5)",
    )
    transform_parser.add_argument("--val-start", type=_parse_time, help="validation from (UTC)")
    transform_parser.add_argument("--test-start", type=_parse_time, help="test from (UTC)")
    transform_parser.add_argument("--seed", type=int, help="sampling seed (default 42)")
    transform_parser.add_argument(
        "beam_args", nargs="*", help="Beam pipeline options, after --", metavar="BEAM_OPTION"
    )
    transform_parser.set_defaults(func=transform)

    demo_parser = commands.add_parser(
        "demo",
        help="the main job on the embedded defaults: a synthetic data set, the training "
        "pipeline run locally, the result and ten recommendations for a sample user",
    )
    add_generation_options(demo_parser)
    demo_parser.set_defaults(**DEMO_DATA)
    demo_parser.add_argument(
        "--full",
        action="store_true",
        help="today's catalogue size (32,304 videos, 2,000 users, 5,000 reviewers) instead of "
        "the small default; sizes given explicitly still win",
    )
    demo_parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a training pipeline parameter, repeatable, e.g. --param epochs=5 "
        "(`swiperec pipeline parameters` lists them)",
    )
    demo_parser.add_argument(
        "--data-only", action="store_true", help="load the data set and stop (no pipeline)"
    )
    demo_parser.add_argument(
        "--simulate-seconds",
        type=float,
        default=20.0,
        help="end with this many seconds of simulated app traffic through the Edge Function "
        "and a monitoring pass (default 20; 0 skips it)",
    )
    demo_parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="run against DATABASE_URL too (the demo replaces the data it finds there)",
    )
    demo_parser.set_defaults(func=demo)


# The demo's default data set: small enough for the whole pipeline to finish in a few minutes
# on 2 cores. `--full` takes the generator's defaults, today's catalogue.
DEMO_DATA = {
    "videos": 8_000,
    "users": 800,
    "pseudo_users": 1_600,
    "decisions_per_user": 150.0,
    "reviews_per_pseudo_user": 20.0,
}


def _parse_time(text: str):
    from datetime import datetime

    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-10-01T00:00:00Z)"
        ) from None


def snapshot(args) -> int:
    from swiperec.db import database_url
    from swiperec.pipeline import steps
    from swiperec.snapshot import TABLES, SnapshotError

    ready_connection().close()  # the schema is up to date (or a clear error)
    started = time.perf_counter()
    bar, advance = stage_bar([t.name for t in TABLES], "snapshot")
    try:
        result = steps.ingest_snapshot(
            args.out, cutoff=args.cutoff.isoformat() if args.cutoff else "",
            database_url=database_url(), overwrite=args.overwrite, progress=advance,
        )  # fmt: skip
    except SnapshotError as err:
        raise UserError(str(err)) from err
    finally:
        bar.close()
    meta = result["snapshot"]
    print(f"snapshot      {result['uri']}")
    print(f"cutoff        {meta['cutoff']}")
    for table in ("videos", "reviews", "decisions"):
        span = result["time_ranges"].get(table)
        print(f"{table:<13} {meta[f'rows/{table}']:>10,} rows"
              + (f"  {span[0]} .. {span[1]}" if span else ""))  # fmt: skip
    print(f"content hash  {meta['content_hash']}")
    print(f"took          {time.perf_counter() - started:.1f} s")
    return 0


def transform(args) -> int:
    import os

    from swiperec.features.config import FeatureConfig
    from swiperec.pipeline import steps
    from swiperec.snapshot import read_metadata

    read_metadata(args.snapshot)  # a clear error for a missing or partial snapshot
    overrides = {
        name: getattr(args, name)
        for name in ("pseudo_user_weight", "popularity_alpha", "val_start", "test_start", "seed")
        if getattr(args, name) is not None
    }
    for name in ("val_start", "test_start"):
        if name in overrides:
            overrides[name] = overrides[name].isoformat()
    if args.negatives_per_positive is not None:
        overrides["negatives_per_positive"] = args.negatives_per_positive
    try:
        FeatureConfig.from_dict(overrides)  # a setting out of range: a clear error, no work
    except ValueError as err:
        raise UserError(str(err)) from err
    result = steps.feature_transform(
        args.snapshot, os.path.join(args.out, "transform"), os.path.join(args.out, "examples"),
        feature_config=overrides, beam_pipeline_args=args.beam_args,
    )  # fmt: skip
    meta = result["metadata"]
    print(f"transform     {os.path.join(args.out, 'transform')}")
    print(f"examples      {os.path.join(args.out, 'examples')}")
    catalogue = meta["catalogue"]
    print(f"catalogue     {catalogue['videos']:,} videos, ages as of {catalogue['as_of']}")
    bounds = meta["split_boundaries"]
    print(
        f"splits        validation from {bounds['validation_start']}, "
        f"test from {bounds['test_start']}"
    )
    for split, counts in meta["counts"].items():
        negatives = counts["nope"] + counts["sampled"]
        print(
            f"{split:<13} {counts['examples']:>9,} examples: {counts['positive']:,} likes, "
            f"{negatives:,} negatives ({counts['sampled']:,} sampled), "
            f"{counts['pseudo']:,} from pseudo-users"
        )
    sizes = ", ".join(f"{k} {v:,}" for k, v in meta["vocabulary_sizes"].items())
    print(f"vocabularies  {sizes}")
    print(f"took          {meta['seconds']:.1f} s")
    return 0


def demo(args) -> int:
    """The main job on the embedded defaults: database, schema, data set, then the training
    pipeline on KFP's local runner, its evaluation and registry record, and recommendations."""
    from swiperec.cli.pipeline_commands import run_and_report
    from swiperec.data.load import ground_truth_path
    from swiperec.data.summary import summarize
    from swiperec.data.synthetic import SyntheticConfig
    from swiperec.db import database_url
    from swiperec.db.connection import redact, uses_embedded_server
    from swiperec.embeddings.store import refresh_popularity
    from swiperec.pipeline.run import parse_arguments
    from swiperec.registry.versions import forget_all

    if not uses_embedded_server() and not args.allow_remote:
        raise UserError(
            "DATABASE_URL is set and the demo replaces the data it finds: unset DATABASE_URL "
            "to use the embedded server, or pass --allow-remote"
        )
    if args.full:
        full = SyntheticConfig()
        for name, small in DEMO_DATA.items():
            if getattr(args, name) == small:  # not given explicitly
                setattr(args, name, getattr(full, name))
    config = config_from_args(args)
    arguments = parse_arguments(args.param)  # a mistyped parameter fails before any work
    url = database_url()
    print(f"database    {redact(url)}")
    conn = ready_connection()
    print("schema      up to date")
    forget_all(conn)  # embeddings and models of a replaced data set mean nothing for the new one
    counts = generate_into(conn, config, replace=True)
    refresh_popularity(conn)
    print(
        f"data set    {counts['videos']:,} videos, seed {config.seed} "
        f"(ground truth: {ground_truth_path()})"
    )
    print()
    print(summarize(conn).format())
    conn.close()
    if args.data_only:
        return 0
    print()
    arguments.setdefault("database_url", url)
    arguments.setdefault("ground_truth_uri", str(ground_truth_path()))
    version = run_and_report(arguments, None)
    if print_recommendations(version) and args.simulate_seconds > 0:
        simulate_and_monitor(args.simulate_seconds)
    return 0


# The monitoring summary the demo prints: (metric, label, format).
DEMO_METRICS = (
    ("requests_logged", "requests", "{:.0f}"),
    ("served_items", "items served", "{:.0f}"),
    ("swipe_through", "swiped / served", "{:.1%}"),
    ("like_rate", "like rate of swiped items", "{:.1%}"),
    ("hit_rate", "lists with a like", "{:.1%}"),
    ("coverage", "catalogue coverage", "{:.1%}"),
    ("genre_diversity", "genre diversity", "{:.2f}"),
    ("latency_p95_ms", "latency p95", "{:.0f} ms"),
    ("error_rate", "errors", "{:.1%}"),
)


def simulate_and_monitor(seconds: float) -> None:
    """A short burst of simulated app traffic (the data set's users, over HTTP, through the
    Edge Function under Deno), then one monitoring pass and the current bucket's summary."""
    from swiperec.data.load import ground_truth_path
    from swiperec.data.synthetic_truth import GroundTruth
    from swiperec.db import connect, database_url
    from swiperec.errors import SwiperecError
    from swiperec.monitoring.compute import floor_to_bucket, run_pass
    from swiperec.monitoring.config import load_config
    from swiperec.simulate import SimulationOptions, simulate

    print()
    print(f"simulated app traffic for {seconds:.0f} s (swiperec simulate):")
    started = datetime.now(UTC)
    try:
        report = simulate(database_url(), GroundTruth.load(ground_truth_path()),
                          SimulationOptions(rate=5.0, duration=seconds, users=100))  # fmt: skip
    except SwiperecError as err:
        print(f"  skipped: {err}")
        return
    print("\n".join("  " + line for line in report.format().splitlines()))
    config = load_config()
    conn = connect()
    try:
        summary = run_pass(conn, config)
        with conn.cursor() as cur:
            # The bucket that holds most of the run (it may straddle two).
            cur.execute("select bucket_start from monitoring_metrics where bucket_seconds = %s"
                        " and bucket_start >= %s and metric = 'served_items'"
                        " and model_version = '*' and route = '*' and segment = 'all'"
                        " order by value desc, bucket_start limit 1",
                        (config.buckets.seconds,
                         floor_to_bucket(started, config.buckets.seconds)))  # fmt: skip
            row = cur.fetchone()
            bucket = row[0] if row else floor_to_bucket(started, config.buckets.seconds)
            cur.execute("select metric, value from monitoring_metrics where bucket_seconds = %s"
                        " and bucket_start = %s and model_version = '*' and route = '*'"
                        " and segment = 'all'", (config.buckets.seconds, bucket))  # fmt: skip
            values = dict(cur.fetchall())
        conn.rollback()
    finally:
        conn.close()
    print()
    print(f"monitoring (swiperec monitor run), the bucket of {bucket.astimezone(UTC):%H:%M} UTC:")
    for metric, label, form in DEMO_METRICS:
        if values.get(metric) is not None:
            print(f"  {label:<27} {form.format(values[metric])}")
    print(f"  alerts fired                {len(summary.alerts)}")
    print()
    print("dashboard   swiperec monitor serve   (then open http://127.0.0.1:8090/)")


def print_recommendations(version: str) -> bool:
    """Ten recommendations for a sample user (the real user with the most likes) from the
    version that serves now, through the Edge Function's SQL; False when nothing serves."""
    from swiperec.db import connect
    from swiperec.embeddings.store import serving_version
    from swiperec.registry.lineage import show_version
    from swiperec.serving.recommend import recommend, sample_user

    conn = connect()
    try:
        serving = serving_version(conn)
        blessed = show_version(conn, version)["blessed"]
        why = "was not blessed" if not blessed else "was not activated (activate=false)"
        print()
        if serving is None:
            print(f"serving       nothing: {version} {why}, and no earlier version serves")
            return False
        if serving != version:
            print(f"serving       {serving} ({version} {why}, so serving did not change)")
        row = sample_user(conn, serving)
        if row is None:
            print(f"serving       {serving} has no user embeddings: no real users yet")
            return False
        user_id, likes = row
        print(f"recommendations for user {user_id} ({likes} likes), model {serving}:")
        for i, rec in enumerate(recommend(conn, str(user_id), k=10), 1):
            print(f"  {i:>2}. {rec.score:.3f}  {rec.title}  ({rec.reason})")
        return True
    finally:
        conn.close()
