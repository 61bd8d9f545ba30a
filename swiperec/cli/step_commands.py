"""Pipeline steps one at a time (`swiperec snapshot`, `swiperec transform`) and `swiperec demo`."""

from __future__ import annotations

import argparse
import time

from swiperec.cli.common import UserError, ready_connection, stage_bar
from swiperec.cli.data_commands import add_generation_options, config_from_args, generate_into


def register(commands) -> None:
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
        "demo", help="the main job on the embedded defaults: database, schema, data, summary"
    )
    add_generation_options(demo_parser)
    demo_parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="run against DATABASE_URL too (the demo replaces the data it finds there)",
    )
    demo_parser.set_defaults(func=demo)


def _parse_time(text: str):
    from datetime import datetime

    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-10-01T00:00:00Z)"
        ) from None


def snapshot(args) -> int:
    from swiperec.data.snapshot import TABLES, take_snapshot

    conn = ready_connection()
    started = time.perf_counter()
    bar, advance = stage_bar([t.name for t in TABLES], "snapshot")
    try:
        meta = take_snapshot(
            conn, args.out, cutoff=args.cutoff, overwrite=args.overwrite, progress=advance
        )
    finally:
        bar.close()
        conn.close()
    print(f"snapshot      {meta.uri}")
    print(f"cutoff        {meta.cutoff.isoformat()}")
    for table, rows in meta.row_counts.items():
        span = meta.time_ranges.get(table)
        print(f"{table:<13} {rows:>10,} rows" + (f"  {span[0]} .. {span[1]}" if span else ""))
    print(f"content hash  {meta.content_hash}")
    print(f"took          {time.perf_counter() - started:.1f} s")
    return 0


def transform(args) -> int:
    import os
    from dataclasses import replace

    from swiperec.data.snapshot import read_snapshot_metadata
    from swiperec.features.config import FeatureConfig
    from swiperec.features.transform import run_transform

    read_snapshot_metadata(args.snapshot)  # a clear error for a missing or partial snapshot
    overrides = {
        name: getattr(args, name)
        for name in (
            "negatives_per_positive",
            "pseudo_user_weight",
            "popularity_alpha",
            "val_start",
            "test_start",
            "seed",
        )
        if getattr(args, name) is not None
    }
    try:
        config = replace(FeatureConfig(), **overrides)
    except ValueError as err:
        raise UserError(str(err)) from err
    result = run_transform(
        args.snapshot,
        os.path.join(args.out, "transform"),
        os.path.join(args.out, "examples"),
        config,
        args.beam_args,
    )
    meta = result.metadata
    print(f"transform     {result.transform_dir}")
    print(f"examples      {result.examples_dir}")
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
    """The main job on the embedded defaults: database, schema, data set, summary."""
    from swiperec.data.load import ground_truth_path
    from swiperec.data.summary import summarize
    from swiperec.db import database_url
    from swiperec.db.connection import redact, uses_embedded_server

    if not uses_embedded_server() and not args.allow_remote:
        raise UserError(
            "DATABASE_URL is set and the demo replaces the data it finds: unset DATABASE_URL "
            "to use the embedded server, or pass --allow-remote"
        )
    config = config_from_args(args)
    print(f"database    {redact(database_url())}")
    conn = ready_connection()
    print("schema      up to date")
    counts = generate_into(conn, config, replace=True)
    print(
        f"data set    {counts['videos']:,} videos, seed {config.seed} "
        f"(ground truth: {ground_truth_path()})"
    )
    print()
    print(summarize(conn).format())
    conn.close()
    return 0
