"""`swiperec evaluate`: the evaluation step on its own."""

from __future__ import annotations

import os

from swiperec.cli.common import UserError

_THRESHOLDS = {  # flag -> (BlessingThresholds field, help)
    "--min-auc": ("min_auc", "minimum AUC-ROC of likes vs all negatives (default 0.55)"),
    "--min-recall-at-50": ("min_recall_at_50", "minimum Recall@50 (default 0)"),
    "--min-share": (
        "min_share_of_achievable_auc",
        "minimum share of the oracle's AUC, with a ground truth (default 0.3)",
    ),
    "--max-auc-drop": ("max_auc_drop", "largest AUC drop vs --production (default 0.01)"),
}


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="evaluate a trained model on the test period against popularity, the like rate, "
        "matrix factorisation and (synthetic data) the ground truth; decide its blessing",
    )
    parser.add_argument("--model", required=True, help="the model folder (`swiperec train`)")
    parser.add_argument(
        "--examples", required=True, help="the examples folder (`swiperec transform`)"
    )
    parser.add_argument(
        "--transform",
        help="the transform graph folder the model was trained on (default: the one its "
        "model_card.json names)",
    )
    parser.add_argument(
        "--snapshot",
        help="the snapshot the examples were made from (default: the one the transform read, "
        "when its metadata names it)",
    )
    parser.add_argument(
        "--out", help="folder for evaluation.json, blessing.json, report.html "
        "(default: evaluation/ beside --model)",
    )  # fmt: skip
    parser.add_argument("--report", help="also write the HTML report to this path")
    parser.add_argument(
        "--ground-truth",
        help="the synthetic data's ground_truth.npz, for the oracle ceiling (default: the one "
        "`swiperec demo`/`data generate` saved, when it matches the data)",
    )
    parser.add_argument(
        "--version",
        help="record the evaluation in the database's registry under this model version, and "
        "compare with the version now serving (its recorded evaluation)",
    )
    parser.add_argument(
        "--production",
        help="evaluation.json of the model now serving (instead of the registry's)",
    )
    for flag, (_, text) in _THRESHOLDS.items():
        parser.add_argument(flag, type=float, help=text)
    parser.set_defaults(func=evaluate)


def evaluate(args) -> int:
    from swiperec.data.load import ground_truth_path
    from swiperec.model.train import read_model_card
    from swiperec.pipeline import steps

    for folder, name in ((args.model, "model_card.json"), (args.examples, "metadata.json")):
        if not os.path.exists(os.path.join(folder, name)):
            raise UserError(f"{folder} has no {name}: not a finished step output")
    transform = args.transform or read_model_card(args.model)["input"]["transform_dir"]
    snapshot = args.snapshot or _snapshot_of(args.examples)
    truth = args.ground_truth
    if truth is None and ground_truth_path().exists():
        truth = str(ground_truth_path())
    database_url = ""
    if args.version:
        from swiperec.cli.common import ready_connection
        from swiperec.db import database_url as current_url

        ready_connection().close()  # the schema is up to date (or a clear error)
        database_url = current_url()
    thresholds = {
        field: getattr(args, flag.lstrip("-").replace("-", "_"))
        for flag, (field, _) in _THRESHOLDS.items()
        if getattr(args, flag.lstrip("-").replace("-", "_")) is not None
    }
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model)), "evaluation")
    result = steps.evaluate(
        args.model, args.examples, transform, snapshot, out, model_version=args.version or "",
        model_uri=os.path.abspath(args.model),
        ground_truth_uri=truth or "", thresholds=thresholds,
        production_evaluation_uri=args.production or "", report_path=args.report or "",
        database_url=database_url,
    )  # fmt: skip
    if args.version and result["compared_with"] and not args.production:
        print(f"compared with {result['compared_with']}, the version now serving")
    if args.version:
        print(f"registry      {args.version} recorded as "
              f"{'blessed' if result['blessed'] else 'candidate'}")  # fmt: skip
    print(format_summary(result["results"], result["blessing"]))
    print(f"written       {out}/ (evaluation.json, blessing.json, report.html)")
    return 0


def _snapshot_of(examples: str) -> str:
    """The snapshot a transform read, as its metadata names it: where it was read from, which
    on a cluster may be a copy that is gone (then give --snapshot)."""
    from swiperec.features.transform import read_transform_metadata

    path = read_transform_metadata(examples)["snapshot"].get("path")
    if not path:
        raise UserError(f"{examples} does not name its snapshot: give --snapshot")
    return path


def format_summary(results: dict, blessing: dict) -> str:
    """The evaluation as a short table: one line per scorer, then the blessing."""
    lines = [
        f"test period   from {results['test_start']}: {results['counts']['test_examples']:,} "
        f"examples, {results['counts']['test_users_with_likes']:,} users with likes",
        f"{'':<22}{'AUC':>7}{'AUC-PR':>8}{'nope AUC':>10}{'R@10':>8}{'R@50':>8}{'NDCG@50':>9}",
    ]
    for name, tasks in results["classification"].items():
        r = results["retrieval"][name]
        values = (
            tasks["like_vs_all"]["roc_auc"],
            tasks["like_vs_all"]["pr_auc"],
            tasks["like_vs_nope"]["roc_auc"],
            r["recall@10"],
            r["recall@50"],
            r["ndcg@50"],
        )
        widths = (7, 8, 10, 8, 8, 9)
        cells = "".join(
            f"{'–' if v is None else f'{v:.4f}':>{w}}" for v, w in zip(values, widths, strict=True)
        )
        lines.append(f"  {name:<20}{cells}")
    share = (results.get("share_of_achievable_auc") or {}).get("like_vs_all")
    if share is not None:
        lines.append(f"share of achievable AUC  {share:.2f} (model vs oracle, likes vs all)")
    elif results.get("oracle", {}).get("note"):
        lines.append(f"oracle        not evaluated: {results['oracle']['note']}")
    if blessing["blessed"]:
        lines.append("blessing      BLESSED")
    else:
        lines.append("blessing      NOT BLESSED")
        lines += [f"  - {reason}" for reason in blessing["reasons"]]
    return "\n".join(lines)
