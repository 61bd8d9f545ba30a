"""`swiperec train`: the training step on its own."""

from __future__ import annotations

import json
import os

from swiperec.cli.common import UserError

# Flags that override TrainConfig fields: flag -> (field, type, help).
_OVERRIDES = {
    "--epochs": ("epochs", int, "maximum epochs (early stopping may end sooner; default 15)"),
    "--batch-size": ("batch_size", int, "examples per batch (default 1024)"),
    "--learning-rate": ("learning_rate", float, "peak learning rate (default 2e-3)"),
    "--temperature": ("temperature", float, "in-batch softmax temperature (default 0.05)"),
    "--retrieval-weight": ("retrieval_weight", float, "weight of the in-batch softmax loss"),
    "--pointwise-weight": ("pointwise_weight", float, "weight of the like/nope loss"),
    "--patience": ("patience", int, "epochs without a better validation AUC before stopping"),
    "--seed": ("seed", int, "random seed (default 42)"),
}


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "train",
        help="train the two-tower model on a transform's output; writes the towers "
        "(SavedModels on raw features, .keras files) and model_card.json to --out",
    )
    parser.add_argument(
        "--transform",
        required=True,
        help="the transform graph folder (OUT/transform of `swiperec transform --out OUT`)",
    )
    parser.add_argument(
        "--examples", help="the examples folder (default: examples/ beside --transform)"
    )
    parser.add_argument("--out", required=True, help="model folder to write (local or gs://)")
    for flag, (_, kind, text) in _OVERRIDES.items():
        parser.add_argument(flag, type=kind, help=text)
    parser.add_argument(
        "--tuning-trials", type=int, default=0, metavar="N",
        help="hyper-parameter search (Optuna): train N models and keep the one with the best "
        "validation AUC; its model card records every trial under 'tuning' (default 0: one run)",
    )  # fmt: skip
    parser.add_argument(
        "--search-space", metavar="JSON",
        help="what --tuning-trials varies: TrainConfig field -> {\"low\": L, \"high\": H"
        "[, \"log\": true]} or {\"choices\": [...]} (default: swiperec.model.tune's "
        "DEFAULT_SEARCH_SPACE: learning_rate, dropout, temperature, weight_decay, "
        "video_id_min_count, pointwise_weight)",
    )  # fmt: skip
    parser.add_argument(
        "--no-match-features", action="store_true",
        help="rank without the match features (TrainConfig.match_features off), e.g. for "
        "examples made by a transform before them",
    )  # fmt: skip
    parser.add_argument(
        "--no-video-evidence", action="store_true",
        help="keep the match features but leave out the videos' swipe evidence "
        "(TrainConfig.video_evidence off)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    parser.set_defaults(func=train)


def train(args) -> int:
    from swiperec.features.transform import read_transform_metadata
    from swiperec.model.config import TrainConfig
    from swiperec.pipeline import steps

    examples = args.examples or os.path.join(
        os.path.dirname(args.transform.rstrip("/")), "examples"
    )
    for folder in (args.transform, examples):
        try:
            read_transform_metadata(folder)
        except FileNotFoundError as err:
            raise UserError(str(err)) from err
    overrides = {
        field: getattr(args, flag.lstrip("-").replace("-", "_"))
        for flag, (field, _, _) in _OVERRIDES.items()
        if getattr(args, flag.lstrip("-").replace("-", "_")) is not None
    }
    if args.no_match_features:
        overrides["match_features"] = False
    if args.no_video_evidence:
        overrides["video_evidence"] = False
    search_space = None
    try:
        base = TrainConfig.from_dict(overrides)  # a setting out of range: a clear error, no work
        if args.tuning_trials < 0:
            raise ValueError(f"--tuning-trials must be >= 0, got {args.tuning_trials}")
        if args.search_space is not None:
            from swiperec.model.tune import parse_search_space

            if not args.tuning_trials:
                raise ValueError("--search-space needs --tuning-trials N (N > 0)")
            try:
                search_space = json.loads(args.search_space or "{}")
            except json.JSONDecodeError as err:
                raise ValueError(f"--search-space is not valid JSON: {err}") from err
            parse_search_space(search_space, base)
    except ValueError as err:
        raise UserError(str(err)) from err
    result = steps.train(args.transform, examples, args.out, train_config=overrides,
                         tuning_trials=args.tuning_trials, search_space=search_space,
                         verbose=0 if args.quiet else 2)  # fmt: skip
    card = result["card"]
    training, validation = card["training"], card["metrics"]["validation"]
    print(f"model         {args.out}")
    if "tuning" in card:
        tuning = card["tuning"]
        print(f"tuning        {tuning['trials_run']} trials, best #{tuning['best_trial']}: "
              + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in tuning["best_params"].items()))  # fmt: skip
    print(
        f"epochs        {training['epochs_run']} run, best {training['best_epoch']}"
        + (" (stopped early)" if training["stopped_early"] else "")
    )
    print(f"validation    AUC {validation['auc']:.4f} (like vs nope/sampled)")
    print(f"embeddings    {card['embedding_dim']}-d, L2-normalised")
    print(f"took          {training['seconds']:.1f} s")
    return 0
