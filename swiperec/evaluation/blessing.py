"""The blessing gate: may this model serve?

A model is blessed when every check passes:
- quality, absolute: AUC-ROC of likes vs all negatives, Recall@50 and (with a ground truth)
  the share of achievable AUC at or above their minimums;
- quality, against the baselines (`must_beat_baselines`): better than the best of popularity,
  the like rate and matrix factorisation on the two numbers serving lives by, the AUC-ROC of
  likes vs nopes (which of the videos a user is shown they like) and Recall@50 (whether what
  they will like is in the candidates). The best, not popularity alone: where a video's general
  appeal drives likes, its like rate ranks well without knowing anyone, and a personalised model
  that cannot beat it adds cost, not quality. A baseline with no value (nothing it could score,
  or an evaluation made before it existed) is left out;
- quality, relative to the model in production (when there is one): AUC no more than
  `max_auc_drop` below it, Recall@50 no more than `max_recall_drop` (relative) below it;
- embeddings: 768 dimensions, unit norms (1 +- `norm_tolerance`), no NaN, and no collapse:
  the mean pairwise cosine and the share of near-duplicate pairs under their limits.

The result says which checks failed and why, so a rejected model explains itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from swiperec.model.config import EMBEDDING_DIM

HEADLINE_TASK = "like_vs_all"
HEADLINE_RECALL = "recall@50"
SERVING_TASK = "like_vs_nope"  # the AUC the baselines are compared on
BASELINES = ("popularity", "like_rate", "matrix_factorization")


@dataclass(frozen=True)
class BlessingThresholds:
    """Minimums and margins of the blessing's checks (see the module docstring).

    Against the baselines the model must be strictly above the best baseline's AUC (likes vs
    nopes) plus `min_auc_margin_over_baselines` (absolute AUC points) and strictly above the
    best baseline's Recall@50 times 1 + `min_recall_margin_over_baselines` (relative: 0.05 = 5 %
    more): with margins 0, better than the best. Stored thresholds that still say
    `must_beat_popularity` load as `must_beat_baselines`.
    """

    min_auc: float = 0.55
    min_recall_at_50: float = 0.0
    min_share_of_achievable_auc: float = 0.3  # applies only when the oracle was evaluated
    must_beat_baselines: bool = True
    min_auc_margin_over_baselines: float = 0.0
    min_recall_margin_over_baselines: float = 0.0
    max_auc_drop: float = 0.01  # vs production, absolute AUC points
    max_recall_drop: float = 0.05  # vs production, relative: 0.05 = 5% lower
    norm_tolerance: float = 1e-3
    # Trained towers are anisotropic (one shared direction; a mean cosine of ~0.92 on the
    # default data with good rankings): collapse is everything at one point, ~1.
    max_mean_cosine: float = 0.98
    near_duplicate_cosine: float = 0.999
    max_near_duplicate_rate: float = 0.01

    @classmethod
    def from_dict(cls, values: dict) -> BlessingThresholds:
        values = dict(values)
        if "must_beat_popularity" in values:  # the name before the other baselines counted
            values.setdefault("must_beat_baselines", values.pop("must_beat_popularity"))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown blessing thresholds: {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


def _check(name: str, passed: bool, value, limit, reason: str) -> dict:
    return {"name": name, "passed": bool(passed), "value": value, "limit": limit,
            "reason": None if passed else reason}  # fmt: skip


def quality_checks(results: dict, thresholds: BlessingThresholds, production=None) -> list:
    """Checks on the evaluation results (see `swiperec.evaluation.evaluate`)."""
    model = results["classification"]["model"][HEADLINE_TASK]["roc_auc"]
    recall = results["retrieval"]["model"][HEADLINE_RECALL]
    checks = [
        _check("auc", model is not None and model >= thresholds.min_auc, model,
               thresholds.min_auc, f"AUC {model} is below the minimum {thresholds.min_auc}"),
        _check("recall@50", recall is not None and recall >= thresholds.min_recall_at_50,
               recall, thresholds.min_recall_at_50,
               f"Recall@50 {recall} is below the minimum {thresholds.min_recall_at_50}"),
    ]  # fmt: skip
    share = (results.get("share_of_achievable_auc") or {}).get(HEADLINE_TASK)
    if "oracle" in results["classification"]:
        limit = thresholds.min_share_of_achievable_auc
        checks.append(_check(
            "share_of_achievable_auc", share is not None and share >= limit, share, limit,
            f"the model reaches {share} of the achievable AUC, below {limit}",
        ))  # fmt: skip
    if thresholds.must_beat_baselines:
        checks += baseline_checks(results, thresholds)
    if production is not None:
        prod_auc = production["classification"]["model"][HEADLINE_TASK]["roc_auc"]
        prod_recall = production["retrieval"]["model"][HEADLINE_RECALL]
        floor = None if prod_auc is None else round(prod_auc - thresholds.max_auc_drop, 6)
        checks.append(_check(
            "auc_vs_production", floor is None or (model is not None and model >= floor),
            model, floor, f"AUC {model} is more than {thresholds.max_auc_drop} below "
            f"production's {prod_auc}",
        ))  # fmt: skip
        floor = None if prod_recall is None else prod_recall * (1 - thresholds.max_recall_drop)
        checks.append(_check(
            "recall@50_vs_production", floor is None or (recall is not None and recall >= floor),
            recall, floor, f"Recall@50 {recall} is more than {thresholds.max_recall_drop:.0%} "
            f"below production's {prod_recall}",
        ))  # fmt: skip
    return checks


def baseline_checks(results: dict, thresholds: BlessingThresholds) -> list:
    """The model against the best baseline: AUC-ROC of likes vs nopes and Recall@50."""
    classification, retrieval = results["classification"], results["retrieval"]

    def auc(name: str):
        return ((classification.get(name) or {}).get(SERVING_TASK) or {}).get("roc_auc")

    def recall(name: str):
        return (retrieval.get(name) or {}).get(HEADLINE_RECALL)

    auc_margin = thresholds.min_auc_margin_over_baselines
    recall_margin = thresholds.min_recall_margin_over_baselines
    return [
        _beats_best("beats_baselines_like_vs_nope_auc", "like-vs-nope AUC", auc,
                    lambda best: best + auc_margin, f"+ margin {auc_margin}"),
        _beats_best("beats_baselines_recall@50", "Recall@50", recall,
                    lambda best: best * (1 + recall_margin), f"x (1 + margin {recall_margin})"),
    ]  # fmt: skip


def _beats_best(name: str, what: str, metric, limit_of, margin: str) -> dict:
    """A check that the model's `metric` is strictly above `limit_of(best)`, best the highest
    baseline's value; `best_baseline` says which it was ({"name", "value"}, None without any).
    """
    values = {b: value for b in BASELINES if (value := metric(b)) is not None}
    best = max(values, key=values.get) if values else None
    limit = None if best is None else round(limit_of(values[best]), 6)
    model = metric("model")
    check = _check(
        name, model is not None and (limit is None or model > limit), model, limit,
        f"{what} {model} does not beat the best baseline's ({best} {values.get(best)}) {margin}",
    )  # fmt: skip
    check["best_baseline"] = None if best is None else {"name": best, "value": values[best]}
    return check


def embedding_checks(name: str, vectors: np.ndarray, thresholds: BlessingThresholds,
                     seed: int = 0, pairs: int = 20_000) -> list:  # fmt: skip
    """Sanity of one set of embeddings ([n, d]): dimension, norms, NaN and collapse."""
    vectors = np.asarray(vectors, dtype=np.float64)
    dim = vectors.shape[1] if vectors.ndim == 2 else None
    checks = [
        _check(f"{name}_dimension", dim == EMBEDDING_DIM, dim, EMBEDDING_DIM,
               f"{name} embeddings have dimension {dim}, not {EMBEDDING_DIM}"),
    ]  # fmt: skip
    nan_rows = int(np.isnan(vectors).any(axis=-1).sum()) if vectors.size else 0
    checks.append(_check(f"{name}_no_nan", nan_rows == 0, nan_rows, 0,
                         f"{nan_rows} {name} embeddings contain NaN"))  # fmt: skip
    if dim is None or len(vectors) < 2 or nan_rows:
        return checks
    norms = np.linalg.norm(vectors, axis=1)
    worst = float(np.abs(norms - 1.0).max())
    checks.append(_check(
        f"{name}_unit_norm", worst <= thresholds.norm_tolerance, round(worst, 8),
        thresholds.norm_tolerance, f"a {name} embedding's norm is off 1 by {worst:.2e}",
    ))  # fmt: skip
    # Mean cosine over all distinct pairs of unit vectors, exactly, from their sum:
    # |sum|^2 = n + sum over ordered pairs i != j of cos(i, j).
    unit = vectors / norms[:, None]
    n = len(unit)
    mean_cosine = float((np.sum(unit.sum(axis=0) ** 2) - n) / (n * (n - 1)))
    checks.append(_check(
        f"{name}_mean_cosine", mean_cosine <= thresholds.max_mean_cosine, round(mean_cosine, 6),
        thresholds.max_mean_cosine,
        f"{name} embeddings collapse: mean pairwise cosine {mean_cosine:.3f}",
    ))  # fmt: skip
    # Near-duplicates among *different* embeddings: identical rows come from identical inputs
    # (users with the same history, e.g. none yet), which a deterministic tower must map to
    # one vector. All rows identical is a collapse, counted as all near-duplicates.
    different = np.unique(unit, axis=0)
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, len(different), size=(2, pairs))
    distinct = i != j
    cosine = np.einsum("nd,nd->n", different[i[distinct]], different[j[distinct]])
    rate = float((cosine >= thresholds.near_duplicate_cosine).mean()) if len(cosine) else 1.0
    checks.append(_check(
        f"{name}_near_duplicates", rate <= thresholds.max_near_duplicate_rate, round(rate, 6),
        thresholds.max_near_duplicate_rate,
        f"{rate:.1%} of random pairs of different {name} embeddings are near-duplicates "
        f"(cosine >= {thresholds.near_duplicate_cosine})",
    ))  # fmt: skip
    return checks


def bless(
    results: dict,
    embeddings: dict[str, np.ndarray],
    thresholds: BlessingThresholds | None = None,
    production: dict | None = None,
    extra_checks: list[dict] | None = None,
) -> dict:
    """The blessing: {"blessed", "reasons", "checks", "thresholds", "compared_to_production"}.

    `embeddings`: name -> [n, d] vectors (the catalogue's videos, the test users).
    `production`: the evaluation results of the model now serving, or None.
    `extra_checks`: checks made elsewhere (`_check`'s shape), e.g. a migration stage's gate.
    """
    thresholds = thresholds or BlessingThresholds()
    checks = quality_checks(results, thresholds, production) + list(extra_checks or [])
    for name, vectors in embeddings.items():
        checks += embedding_checks(name, vectors, thresholds)
    return {
        "blessed": all(c["passed"] for c in checks),
        "reasons": [c["reason"] for c in checks if not c["passed"]],
        "checks": checks,
        "thresholds": thresholds.to_dict(),
        "compared_to_production": production is not None,
    }
