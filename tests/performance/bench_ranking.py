"""Experiment: ranking quality on both synthetic regimes, against the baselines and the ceiling,
and the overfitting ablation.

    python -m tests.performance.bench_ranking                         # temporary work folders
    python -m tests.performance.bench_ranking --work DIR              # keep (and reuse) the data
    python -m tests.performance.bench_ranking --regimes default --variants default,no_video_ids

Each regime is the demo's data set size (8,000 videos, 800 users, 1,600 reviewers, seed 42):
`default` is the standard generator, `quality` its quality-weighted option (a video's general
appeal weighs more than taste). Each is generated, written as a snapshot and transformed once
(under --work/<regime>, reused when there), then each variant of TrainConfig (VARIANTS) is
trained in-process (a model already under --work/<regime>/models/<variant> with the same
config is evaluated again, not retrained) and scored by the evaluator on the test period:

- `model`: what serving serves (retrieval by cosine, then the ranking stage);
- `model_cosine`: the cosine alone (the ranking stage off);
- the baselines (popularity, the nope-aware like rate, matrix factorisation) and the oracle,
  all measured in the same run on the same split: the yardsticks the goals are ratios to.

The ablation (`VARIANTS` named `no_*`, default data only) removes one suspect at a time (the
video id embeddings, the hidden layer, the pointwise head, the popularity correction); the
`bag_l2_*` variants penalise the suspect left, the embedding bags' rows (`TrainConfig.bag_l2`),
on both regimes. Each records every epoch's train and validation AUC: the epoch where
validation peaks and how far training runs ahead of it say which part overfits. `match_off`
and `match_features` train without and with the match features (the default), each also with
a second seed (`_seed_43`); `evidence_off` keeps the match features but leaves out the
videos' swipe evidence (`TrainConfig.video_evidence`); `match_features_seed_44` is a third
seed; `exposure_off` serves the default
model's lists without the exposure prior (`TrainConfig.exposure_prior`: a serving setting, so
the trained model of the same seed is copied with its card changed, not trained again).

`--validation-priors 0,0.2,...` also scores each variant's served lists in the validation
period with each exposure prior: the choice of `TrainConfig.exposure_prior`; with
`--validation-bonuses 1,1.5,...`, with each pair of a prior and a new-release bonus: the choice of
`TrainConfig.new_release_bonus`. `bonus_1` (and its `_seed_43`, `_seed_44`) serves the default
models with the bonus the SQL function had as a constant before (1.0).

Writes tests/performance/results/ranking.json (--out: another file) after every model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.performance.bench_migration import log
from tests.performance.record import machine

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "ranking.json"
DATA = {
    "videos": 8_000,
    "users": 800,
    "pseudo_users": 1_600,
    "decisions_per_user": 150.0,
    "reviews_per_pseudo_user": 20.0,
}  # fmt: skip  (the demo's data set)
VARIANTS = {
    "default": {},
    "no_video_ids": {"video_id_min_count": 0},
    "no_hidden_layer": {"hidden_units": []},
    "no_pointwise_head": {"pointwise_weight": 0.0},
    "no_logq_correction": {"logq_correction": False},
    # The suspect the four above leave: the embedding bags' rows, penalised (`bag_l2`).
    "bag_l2_1e-3": {"bag_l2": 1e-3},
    "bag_l2_1e-2": {"bag_l2": 1e-2},
    "bag_l2_1e-1": {"bag_l2": 1e-1},
    "bag_l2_1": {"bag_l2": 1.0},
    "bag_l2_10": {"bag_l2": 10.0},
    # The ranking stage with and without the match features (`TrainConfig.match_features`),
    # and a second training seed of each.
    "match_features": {"match_features": True},
    "match_off": {"match_features": False},
    "match_features_seed_43": {"match_features": True, "seed": 43},
    "match_off_seed_43": {"match_features": False, "seed": 43},
    # The match features without the videos' swipe evidence (`TrainConfig.video_evidence`).
    "evidence_off": {"video_evidence": False},
    "evidence_off_seed_43": {"video_evidence": False, "seed": 43},
    "match_features_seed_44": {"match_features": True, "seed": 44},
    # Served lists without the exposure prior (`TrainConfig.exposure_prior`, serving only: the
    # same trained model, its card's prior changed).
    "exposure_off": {"exposure_prior": 0.0},
    "exposure_off_seed_43": {"exposure_prior": 0.0, "seed": 43},
    "exposure_off_seed_44": {"exposure_prior": 0.0, "seed": 44},
    # Served lists with the new releases' earlier exploration bonus (`new_release_bonus`,
    # serving only, as above).
    "bonus_1": {"new_release_bonus": 1.0},
    "bonus_1_seed_43": {"new_release_bonus": 1.0, "seed": 43},
    "bonus_1_seed_44": {"new_release_bonus": 1.0, "seed": 44},
    # The towers' share of the like/nope loss, lowered: the ranking stage's own terms train
    # as before (Adam scales each parameter's steps), the towers lean towards retrieval.
    "pointwise_0.5": {"pointwise_weight": 0.5},
    "pointwise_0.25": {"pointwise_weight": 0.25},
    "pointwise_0.5_seed_43": {"pointwise_weight": 0.5, "seed": 43},
    "pointwise_0.25_seed_43": {"pointwise_weight": 0.25, "seed": 43},
    "pointwise_0.1": {"pointwise_weight": 0.1},
    "pointwise_0.1_seed_43": {"pointwise_weight": 0.1, "seed": 43},
}
SCORERS = ("model", "model_cosine", "popularity", "like_rate", "matrix_factorization", "oracle")
BASELINES = ("popularity", "like_rate", "matrix_factorization")


def prepare(work: Path, regime: str) -> Path:
    """The regime's data set, snapshotted and transformed under `work` (reused if there)."""
    from swiperec.data.synthetic import SyntheticConfig, generate
    from swiperec.features.transform import run_transform
    from tests.performance.bench_transform import write_snapshot

    if (work / "examples" / "metadata.json").exists():
        return work
    work.mkdir(parents=True, exist_ok=True)
    config = SyntheticConfig(**DATA)
    if regime == "quality":
        config = config.with_quality_weighted()
    dataset = generate(config)
    dataset.ground_truth.save(work / "ground_truth.npz")
    write_snapshot(dataset, work / "snapshot")
    del dataset
    run_transform(str(work / "snapshot"), str(work / "transform"), str(work / "examples"))
    return work


def figures(results: dict) -> dict:
    """The goals' figures of one evaluation: per scorer, like-vs-nope AUC, Recall@50 overall and
    for new and old videos, the share of new videos in the top 10."""
    out = {}
    for name in SCORERS:
        if name not in results["classification"]:
            continue
        segments = results["segments"]
        out[name] = {
            "auc_like_vs_nope": results["classification"][name]["like_vs_nope"]["roc_auc"],
            "auc_like_vs_all": results["classification"][name]["like_vs_all"]["roc_auc"],
            "recall@10": results["retrieval"][name]["recall@10"],
            "recall@50": results["retrieval"][name]["recall@50"],
            "new_videos_recall@50": segments["new_videos"][name]["retrieval"]["recall@50"],
            "old_videos_recall@50": segments["old_videos"][name]["retrieval"]["recall@50"],
            "new_video_share@10": results["beyond_accuracy"][name].get("new_video_share@10"),
        }
    return out


def goals(fig: dict, share: dict | None) -> dict:
    """The issue's goals as ratios to the same run's baselines."""
    model = fig["model"]
    best_auc = max(fig[b]["auc_like_vs_nope"] or 0 for b in BASELINES if b in fig)
    best_recall = max(fig[b]["recall@50"] or 0 for b in BASELINES if b in fig)
    old = model["old_videos_recall@50"] or 0
    return {
        "auc_like_vs_nope_minus_best_baseline": round(model["auc_like_vs_nope"] - best_auc, 4),
        "share_of_achievable_auc": share,
        "recall@50_over_best_baseline": round(model["recall@50"] / best_recall, 3)
        if best_recall
        else None,
        "new_over_old_recall@50": round((model["new_videos_recall@50"] or 0) / old, 3)
        if old
        else None,
    }


def _card_config(card: dict):
    from swiperec.model.config import TrainConfig
    from swiperec.model.data import EARLIER_NEW_RELEASE_BONUS

    # Older cards lack later fields: their defaults, but the match features, the video evidence
    # and the exposure prior were off before they came, and the new-release bonus was 1.
    return TrainConfig.from_dict({"match_features": False, "video_evidence": False,
                                  "exposure_prior": 0.0,
                                  "new_release_bonus": EARLIER_NEW_RELEASE_BONUS,
                                  **card["hyperparameters"]})  # fmt: skip


def _serve_as(model_dir: Path, card: dict, config) -> None:
    """Rewrite the card of the model in `model_dir` with `config`'s `SERVING_ONLY_FIELDS`."""
    from swiperec.model.config import SERVING_ONLY_FIELDS

    card["hyperparameters"].update({name: getattr(config, name) for name in SERVING_ONLY_FIELDS})
    (model_dir / "model_card.json").write_text(json.dumps(card, indent=2))


def _copy_if_only_serving_differs(models: Path, model_dir: Path, config) -> None:
    """A variant that differs from a model already trained only in `SERVING_ONLY_FIELDS` is
    that model with its card's fields changed: copied, not trained again."""
    import dataclasses
    import shutil

    from swiperec.model.config import SERVING_ONLY_FIELDS
    from swiperec.model.train import read_model_card

    trains_as = {name: getattr(config, name) for name in SERVING_ONLY_FIELDS}
    for other in sorted(models.glob("*/model_card.json")) if models.exists() else []:
        card = read_model_card(str(other.parent))
        if dataclasses.replace(_card_config(card), **trains_as) == config:
            shutil.copytree(other.parent, model_dir)
            _serve_as(model_dir, card, config)
            log(f"{model_dir.name}: {other.parent.name}'s model, served with {trains_as}")
            return


def run_variant(work: Path, name: str, overrides: dict, models: Path) -> dict:
    import dataclasses

    from swiperec.evaluation.evaluate import evaluate
    from swiperec.model.config import SERVING_ONLY_FIELDS, TrainConfig
    from swiperec.model.train import read_model_card, train

    model_dir = models / name
    config = TrainConfig.from_dict({**TrainConfig().to_dict(), **overrides})
    if not (model_dir / "model_card.json").exists():
        _copy_if_only_serving_differs(models, model_dir, config)
    if (model_dir / "model_card.json").exists():  # trained by an earlier run: evaluate it again
        card = read_model_card(str(model_dir))
        seconds = card["training"]["seconds"]
        serves_as = {name: getattr(config, name) for name in SERVING_ONLY_FIELDS}
        if dataclasses.replace(_card_config(card), **serves_as) != config:
            raise SystemExit(f"{model_dir} was trained with another config: remove it")
        if _card_config(card) != config:  # a serving setting changed since: served with it
            _serve_as(model_dir, card, config)
    else:
        started = time.perf_counter()
        card = train(str(work / "transform"), str(work / "examples"), str(model_dir), config,
                     0).card  # fmt: skip
        seconds = time.perf_counter() - started
    results = evaluate(
        str(model_dir),
        str(work / "examples"),
        str(work / "transform"),
        str(work / "snapshot"),
        ground_truth=str(work / "ground_truth.npz"),
    )
    results.pop("embeddings")
    history = card["history"]
    fig = figures(results)
    return {
        "overrides": overrides,
        "train_seconds": round(seconds, 1),
        "epochs_run": card["training"]["epochs_run"],
        "best_epoch": card["training"]["best_epoch"],
        "train_auc_by_epoch": history.get("auc"),
        "validation_auc_by_epoch": history.get("val_auc"),
        "figures": fig,
        "share_of_achievable_auc": results.get("share_of_achievable_auc"),
        "goals": goals(fig, results.get("share_of_achievable_auc")),
    }


def validation_recall_by_setting(
    work: Path, model_dir: Path, priors: list[float], bonuses: list[float | None]
) -> dict:
    """Recall@10/@50 of the model's served lists in the **validation** period, as of its start,
    with each exposure prior in `priors` and each new-release bonus in `bonuses` (None: the
    card's) in place of the card's: how `TrainConfig.exposure_prior` and
    `TrainConfig.new_release_bonus` are chosen without looking at the test period. Keyed by the
    prior, or by "prior,bonus" when `bonuses` are given."""
    from swiperec.evaluation.data import load_evaluation_data
    from swiperec.evaluation.evaluate import retrieval, served_scores, top_lists
    from swiperec.features.video_evidence import RANKING_FEATURE_NAMES

    data = load_evaluation_data(str(model_dir), str(work / "examples"), str(work / "transform"),
                                str(work / "snapshot"), period="validation")  # fmt: skip
    if data.served_weights is None:
        return {}  # a model without the ranking stage's weights has no prior to choose
    swipes = RANKING_FEATURE_NAMES.index("video_swipes")
    trained = data.match_weights[swipes]
    new = [r[data.is_new_video[r]] for r in data.relevant]
    old = [r[~data.is_new_video[r]] for r in data.relevant]
    card_bonus = data.new_release_bonus
    out = {}
    for prior in priors:
        for bonus in bonuses:
            data.served_weights[swipes] = trained + prior
            data.new_release_bonus = card_bonus if bonus is None else bonus
            top = top_lists(data, lambda u: served_scores(data, u))
            ranked = retrieval(top, data.relevant)
            key = str(prior) if bonus is None else f"{prior},{bonus}"
            out[key] = {k: ranked[k] for k in ("recall@10", "recall@50")}
            out[key]["new_videos_recall@50"] = retrieval(top, new)["recall@50"]
            out[key]["old_videos_recall@50"] = retrieval(top, old)["recall@50"]
            log(f"  validation, exposure prior {prior}, bonus {data.new_release_bonus}: {out[key]}")
    return out


def main(argv=None) -> int:
    from swiperec.model.config import SERVING_ONLY_FIELDS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="data and models folder (default: temporary)")
    parser.add_argument("--regimes", default="default,quality")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--what", default="", help="what the run compares, kept in the results")
    parser.add_argument(
        "--validation-priors",
        default="",
        help="comma-separated exposure priors: each variant's validation-period Recall with each",
    )
    parser.add_argument(
        "--validation-bonuses",
        default="",
        help="comma-separated new-release bonuses: with --validation-priors, each pair of a "
        "prior and a bonus",
    )
    args = parser.parse_args(argv)
    if args.validation_bonuses and not args.validation_priors:
        parser.error("--validation-bonuses needs --validation-priors (e.g. the default, 0.2)")
    with tempfile.TemporaryDirectory(prefix="bench-ranking-") as scratch:
        work = args.work or Path(scratch)
        report = {"what": args.what, "machine": machine(), "data": DATA, "regimes": {}}
        for regime in args.regimes.split(","):
            log(f"{regime}: preparing the data")
            data = prepare(work / regime, regime)
            entry = report["regimes"].setdefault(regime, {})
            report.setdefault("feature_config", {})[regime] = json.loads(
                (data / "examples" / "metadata.json").read_text()
            )["config"]
            for name in args.variants.split(","):
                if regime != "default" and name.startswith("no_"):
                    continue  # the ablation runs on the default data only
                log(f"{regime}: training {name}")
                entry[name] = run_variant(data, name, VARIANTS[name], work / regime / "models")
                log(f"{regime} {name}: {json.dumps(entry[name]['goals'])}")
                # a serving-only variant shares its model's validation figures
                if args.validation_priors and not set(VARIANTS[name]) & SERVING_ONLY_FIELDS:
                    priors = [float(p) for p in args.validation_priors.split(",")]
                    bonuses = [float(b) for b in args.validation_bonuses.split(",") if b] or [None]
                    key = "serving_setting" if args.validation_bonuses else "exposure_prior"
                    entry[name][f"validation_recall_by_{key}"] = validation_recall_by_setting(
                        data, work / regime / "models" / name, priors, bonuses
                    )
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(report, indent=1))
        report["machine_after"] = machine()
        args.out.write_text(json.dumps(report, indent=1))
    log(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
