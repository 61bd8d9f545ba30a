"""`swiperec train`: the training step on its own."""

from __future__ import annotations

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
    try:
        TrainConfig.from_dict(overrides)  # a setting out of range: a clear error, no work
    except ValueError as err:
        raise UserError(str(err)) from err
    result = steps.train(args.transform, examples, args.out, train_config=overrides,
                         verbose=0 if args.quiet else 2)  # fmt: skip
    card = result["card"]
    training, validation = card["training"], card["metrics"]["validation"]
    print(f"model         {args.out}")
    print(
        f"epochs        {training['epochs_run']} run, best {training['best_epoch']}"
        + (" (stopped early)" if training["stopped_early"] else "")
    )
    print(f"validation    AUC {validation['auc']:.4f} (like vs nope/sampled)")
    print(f"embeddings    {card['embedding_dim']}-d, L2-normalised")
    print(f"took          {training['seconds']:.1f} s")
    return 0
