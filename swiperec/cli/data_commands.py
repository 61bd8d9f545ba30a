"""`swiperec data ...`: synthetic data, CSV import, the ground-truth oracle, a summary."""

from __future__ import annotations

import sys
from pathlib import Path

from swiperec.cli.common import UserError, ready_connection, stage_bar

GENERATE_STAGES = ["catalogue", "people", "decisions", "reviews", "done"]
LOAD_STAGES = ["copy videos", "copy reviews", "copy decisions", "build indexes", "analyze"]


def add_commands(commands) -> None:
    data = commands.add_parser("data", help="synthetic data, CSV import, ground truth, summary")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    generate_parser = actions.add_parser(
        "generate", help="generate a synthetic data set with a known ground truth and load it"
    )
    add_generation_options(generate_parser)
    generate_parser.add_argument(
        "--out", type=Path, help="also write the CSV files (import format) here"
    )
    generate_parser.add_argument(
        "--replace",
        action="store_true",
        help="wipe videos, reviews, decisions and embeddings first",
    )
    generate_parser.add_argument(
        "--no-db", action="store_true", help="only write CSV files (with --out); no database"
    )
    generate_parser.set_defaults(func=generate)

    import_parser = actions.add_parser(
        "import",
        help="validate and load CSV files; bad rows go to the quarantine with a reason. "
        "Videos and reviews already stored are updated from the file (an empty cell clears "
        "that column); decisions are events and are only ever added",
    )
    import_parser.add_argument("--videos", type=Path, help="videos.csv")
    import_parser.add_argument("--decisions", type=Path, help="decisions.csv")
    import_parser.add_argument("--reviews", type=Path, help="reviews.csv")
    import_parser.set_defaults(func=import_csv)

    oracle_parser = actions.add_parser(
        "oracle", help="ground-truth P(like) for (user, video) pairs of a synthetic data set"
    )
    oracle_parser.add_argument(
        "--pairs", type=Path, required=True, help="CSV with columns user_id,video_external_id"
    )
    oracle_parser.add_argument(
        "--ground-truth",
        type=Path,
        help="ground_truth.npz (default: the last generated, under $SWIPEREC_HOME)",
    )
    oracle_parser.set_defaults(func=oracle)

    actions.add_parser(
        "summary", help="table counts, like rate, ratings, time ranges"
    ).set_defaults(func=summary)


def add_generation_options(parser) -> None:
    from swiperec.data.synthetic import SyntheticConfig

    defaults = SyntheticConfig()
    options = [
        ("--videos", int, defaults.videos, "catalogue size (default: %(default)s, today's)"),
        ("--users", int, defaults.users, "real users who swipe like/nope (default: %(default)s)"),
        (
            "--pseudo-users",
            int,
            defaults.pseudo_users,
            "reviewers who rate 1-5 (default: %(default)s)",
        ),
        ("--decisions-per-user", float, defaults.decisions_per_user, "mean swipes per user"),
        (
            "--reviews-per-pseudo-user",
            float,
            defaults.reviews_per_pseudo_user,
            "mean reviews per reviewer",
        ),
        ("--seed", int, defaults.seed, "the same seed gives the same data (default: %(default)s)"),
    ]
    for flag, kind, default, text in options:
        parser.add_argument(flag, type=kind, default=default, help=text)
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="a data set for moving training from reviewers to app users: app users sign up "
        "few at first and many in the app's last months (reviews cover the whole span from "
        "the start), reviewers' tastes are shifted from app users', they like more of what "
        "they review and rate strictly (a 3 often hides a like), some harsher than others",
    )
    parser.add_argument(
        "--quality-weighted",
        action="store_true",
        help="a data set where a video's general appeal (its quality) weighs more than how "
        "well it matches a person's taste, so each video's like rate alone ranks well: "
        "a model must beat that baseline on this data set too",
    )


def config_from_args(args):
    from swiperec.data.synthetic import SyntheticConfig

    try:
        config = SyntheticConfig(
            videos=args.videos,
            users=args.users,
            pseudo_users=args.pseudo_users,
            decisions_per_user=args.decisions_per_user,
            reviews_per_pseudo_user=args.reviews_per_pseudo_user,
            seed=args.seed,
        )
        if getattr(args, "timeline", False):
            config = config.with_timeline()
        if getattr(args, "quality_weighted", False):
            config = config.with_quality_weighted()
        return config
    except ValueError as err:
        raise UserError(str(err)) from err


def generate_into(conn, config, *, replace: bool, out: Path | None = None) -> dict[str, int]:
    """`generate_and_load` with progress bars."""
    from swiperec.data.load import generate_and_load

    generate_bar, generate_advance = stage_bar(GENERATE_STAGES, "generate")
    load_bar, load_advance = stage_bar(LOAD_STAGES, "load")
    try:
        return generate_and_load(
            conn,
            config,
            replace=replace,
            out=out,
            generate_progress=generate_advance,
            load_progress=load_advance,
        )
    finally:
        generate_bar.close()
        load_bar.close()


def generate(args) -> int:
    from swiperec.data.load import ground_truth_path

    config = config_from_args(args)
    if args.no_db:
        from swiperec.data.synthetic import generate as generate_dataset
        from swiperec.data.synthetic import write_csv

        if args.out is None:
            raise UserError("--no-db writes CSV files only: give --out DIR")
        for name, path in write_csv(generate_dataset(config), args.out).items():
            print(f"wrote {name}: {path}")
        return 0
    conn = ready_connection()
    counts = generate_into(conn, config, replace=args.replace, out=args.out)
    conn.close()
    for table, rows in counts.items():
        print(f"loaded {rows:>10,} rows into {table}")
    print(f"ground truth: {ground_truth_path()}")
    if args.out:
        print(f"CSV files: {args.out}")
    return 0


def import_csv(args) -> int:
    from tqdm import tqdm

    from swiperec.data.importer import import_files

    if not (args.videos or args.decisions or args.reviews):
        raise UserError("give at least one of --videos, --decisions, --reviews")
    conn = ready_connection()
    bar = tqdm(desc="import", unit=" rows", leave=False, file=sys.stderr)
    done: dict[str, int] = {}

    def advance(kind: str, rows_read: int) -> None:
        bar.set_postfix_str(kind)
        bar.update(rows_read - done.get(kind, 0))
        done[kind] = rows_read

    try:
        report = import_files(
            conn,
            videos=args.videos,
            decisions=args.decisions,
            reviews=args.reviews,
            progress=advance,
        )
    finally:
        bar.close()
        conn.close()
    print(report.format_report())
    return report.exit_code


def oracle(args) -> int:
    """Prints P(like) under the ground truth for (user, video) pairs read from a CSV."""
    import csv

    from swiperec.data.load import ground_truth_path
    from swiperec.data.synthetic import GroundTruth

    path = args.ground_truth or ground_truth_path()
    if not Path(path).exists():
        raise UserError(f"no ground truth at {path}: run `swiperec data generate` first")
    truth = GroundTruth.load(path)
    described = Path(path).with_name("dataset.json")
    if described.exists():
        print(f"ground truth of the data set {described.read_text().strip()}", file=sys.stderr)
    with open(args.pairs, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"user_id", "video_external_id"} - set(rows[0] if rows else {})
    if missing:
        raise UserError(f"{args.pairs} needs columns user_id,video_external_id (missing {missing})")
    try:
        probabilities = truth.p_like(
            [r["user_id"] for r in rows], [r["video_external_id"] for r in rows]
        )
    except KeyError as err:
        raise UserError(f"unknown id in {args.pairs}: {err}") from err
    writer = csv.writer(sys.stdout)
    writer.writerow(["user_id", "video_external_id", "p_like"])
    for row, p in zip(rows, probabilities, strict=True):
        writer.writerow([row["user_id"], row["video_external_id"], f"{p:.6f}"])
    return 0


def summary(args) -> int:
    from swiperec.data.summary import summarize

    conn = ready_connection()
    print(summarize(conn).format())
    conn.close()
    return 0
