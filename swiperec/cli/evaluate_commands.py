"""`swiperec evaluate`: the evaluation step on its own."""

from __future__ import annotations

import json
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


def register(commands) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="evaluate a trained model on the test period against popularity, matrix "
        "factorisation and (synthetic data) the ground truth; decide its blessing",
    )
    parser.add_argument("--model", required=True, help="the model folder (`swiperec train`)")
    parser.add_argument(
        "--examples", required=True, help="the examples folder (`swiperec transform`)"
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
    from dataclasses import replace

    from swiperec.data.load import ground_truth_path
    from swiperec.evaluation.blessing import BlessingThresholds
    from swiperec.evaluation.step import REPORT_FILE, run_evaluation

    for folder, name in ((args.model, "model_card.json"), (args.examples, "metadata.json")):
        if not os.path.exists(os.path.join(folder, name)):
            raise UserError(f"{folder} has no {name}: not a finished step output")
    truth = args.ground_truth
    if truth is None and ground_truth_path().exists():
        truth = str(ground_truth_path())
    production, conn = None, None
    if args.production:
        with open(args.production) as handle:
            production = json.load(handle)
    elif args.version:
        from swiperec.cli.common import ready_connection
        from swiperec.registry.versions import production_evaluation

        conn = ready_connection()
        found = production_evaluation(conn, excluding=args.version)
        if found:
            print(f"compared with {found[0]}, the version now serving")
            production = found[1]
    overrides = {
        field: getattr(args, flag.lstrip("-").replace("-", "_"))
        for flag, (field, _) in _THRESHOLDS.items()
        if getattr(args, flag.lstrip("-").replace("-", "_")) is not None
    }
    thresholds = replace(BlessingThresholds(), **overrides)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model)), "evaluation")
    outcome = run_evaluation(args.model, args.examples, out, truth, thresholds, production)
    if conn is not None:
        from swiperec.registry.versions import record_evaluation

        record_evaluation(conn, args.version, os.path.abspath(args.model), outcome.results,
                          outcome.blessing)  # fmt: skip
        conn.close()
        print(f"registry      {args.version} recorded as "
              f"{'blessed' if outcome.blessing['blessed'] else 'candidate'}")  # fmt: skip
    if args.report:
        import shutil

        shutil.copyfile(os.path.join(out, REPORT_FILE), args.report)
    print(format_summary(outcome.results, outcome.blessing))
    print(f"written       {out}/ (evaluation.json, blessing.json, report.html)")
    return 0


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
