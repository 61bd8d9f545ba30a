"""The evaluation step: a trained model against baselines and the ceiling on the test period.

    result = evaluate("artifacts/model", "artifacts/examples", "artifacts/transform",
                      "artifacts/snapshot", ground_truth="truth.npz")

Every scorer is measured the same way on the same split:
- `model`: what serving serves. A pair's score is the ranking stage's `scale_v * cosine +
  bias_v` (the user as of the example; the user's own bias, which serving leaves out, too);
  a user's list is retrieval then ranking: the
  `SERVING_CANDIDATES` videos nearest by cosine and the nearest new releases (as of the test
  period's start, decided videos excluded), ranked by `scale_v * cosine + bias_v` plus the
  new releases' exploration bonus (`served_scores`); a model with match features adds
  `w . match` to both (the example's; for lists, the user's history and the videos' swipe
  evidence at the test start);
- `model_cosine`: the cosine alone (retrieval without the ranking stage), to show what ranking adds;
- `popularity`: likes before the test period (the floor any personalised model must beat);
- `like_rate`: each video's like rate among the likes and nopes before the test period, shrunk
  toward the overall rate (k = `like_rate_prior_strength`): nope-aware popularity;
- `matrix_factorization`: implicit ALS on the likes before the test period (ids only; a user
  without earlier likes gets its popularity fallback in retrieval, and no pair scores);
- `oracle`: the synthetic data's own P(like), when its ground truth is given (the ceiling).

Classification: AUC-ROC and AUC-PR of likes against nopes, against sampled unseen videos, and
against both. Retrieval: each test user's ranking of the whole catalogue minus every video they
decided before the test period; Recall/NDCG/MAP/HitRate at 10, 50 and 100 against the videos
they liked in it. Beyond accuracy: catalogue coverage, share of new videos, genre and maker
diversity of the top 10, novelty and popularity bias. Everything again per segment: pseudo vs
real users, few vs many earlier decisions, new vs old videos (released after training data
ended, or before).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from swiperec.evaluation import metrics as m
from swiperec.evaluation.baselines import (
    LikeRateBaseline,
    MatrixFactorizationBaseline,
    PopularityBaseline,
)
from swiperec.evaluation.data import FEW_DECISIONS, EvaluationData, iso_us
from swiperec.features.user_history import MATCH_FEATURE_NAMES

KS = (10, 50, 100)
TASKS = {  # classification task -> which negatives it keeps
    "like_vs_all": ("nope", "sampled"),
    "like_vs_nope": ("nope",),
    "like_vs_sampled": ("sampled",),
}
# Serving retrieves this many candidates by cosine for a page of up to 25 items and ranks them
# (candidateCount in the Edge Function); the model's lists are scored the same way.
SERVING_CANDIDATES = 100
# Serving's exploration of new releases (the constants of enhanced_two_tower_recommendations in
# the newest migration that defines it, under supabase/migrations/): of the `pool` most recent
# videos released in the last `days` days, the nearest `candidates` join the candidates, their
# like logit plus the video set's bonus (`EvaluationData.new_release_bonus`).
NEW_RELEASE = {"days": 60, "pool": 500, "candidates": 20}
_DAY_US = 86_400 * 1_000_000
EVALUATION_FILE = "evaluation.json"
BLESSING_FILE = "blessing.json"
REPORT_FILE = "report.html"


@dataclass(frozen=True)
class BaselineConfig:
    """The ALS baseline's settings: regularization ~50 suits a few dozen likes per user (the
    library default of 0.05 barely beats popularity there). `like_rate_prior_strength`: the
    like-rate baseline's k, swipes' worth of the overall like rate added to every video's own
    (a video needs ~k swipes before its own rate counts as much as the overall one)."""

    factors: int = 64
    regularization: float = 50.0
    iterations: int = 15
    alpha: float = 10.0
    seed: int = 42
    like_rate_prior_strength: float = 20.0


def scorers(data: EvaluationData, truth=None, baseline: BaselineConfig | None = None) -> dict:
    """name -> (pair_scores(example_index) -> [E], user_scores(user_index) -> [N]) callables."""
    baseline = baseline or BaselineConfig()
    n_items = len(data.video_ids)
    popularity = PopularityBaseline().fit(data.history_like_video, n_items)
    like_rate = LikeRateBaseline(baseline.like_rate_prior_strength).fit(
        data.like_counts, data.nope_counts
    )
    mf = MatrixFactorizationBaseline(
        baseline.factors, baseline.regularization, baseline.iterations, baseline.alpha,
        baseline.seed,
    ).fit(data.history_like_user, data.history_like_video,
          len(data.history_user_keys), n_items)  # fmt: skip
    history_row = {k: i for i, k in enumerate(data.history_user_keys.tolist())}
    example_history = np.array(
        [history_row.get(k, -1) for k in data.example_user_key.tolist()], np.int64
    )
    user_history = np.array([history_row.get(k, -1) for k in data.user_keys.tolist()], np.int64)
    item_popularity = popularity.item_scores()
    item_like_rate = like_rate.item_scores()

    def mf_pairs(index):
        users = example_history[index]
        scores = np.full(len(index), np.nan, np.float32)  # unknown users: not scored by ALS
        known = users >= 0
        known[known] = mf.known_users(users[known])
        scores[known] = mf.pair_scores(users[known], data.example_video_row[index][known])
        return scores

    def mf_user(u):
        # A user ALS has no factors for gets its fallback, popularity: the baseline's lists
        # then cover every test user, as the model's do, and Recall compares the same users.
        if user_history[u] < 0 or not mf.known_users([user_history[u]])[0]:
            return item_popularity
        return mf.scores([user_history[u]])[0]

    def cosine_pairs(index):
        rows = data.example_video_row[index]
        return np.sum(data.example_user[index] * data.video_embeddings[rows], axis=1)

    def model_pairs(index):
        rows = data.example_video_row[index]
        scores = data.video_rank_scale[rows] * cosine_pairs(index) + data.video_rank_bias[rows]
        if data.match_weights is not None:
            scores = scores + data.example_match[index] @ data.match_weights
        return scores

    out = {
        "model": (model_pairs, lambda u: served_scores(data, u)),
        "model_cosine": (cosine_pairs, lambda u: data.video_embeddings @ data.user_embeddings[u]),
        "popularity": (
            lambda index: item_popularity[data.example_video_row[index]],
            lambda u: item_popularity,
        ),
        "like_rate": (
            lambda index: item_like_rate[data.example_video_row[index]],
            lambda u: item_like_rate,
        ),
        "matrix_factorization": (mf_pairs, mf_user),
    }
    if truth is not None:
        rows = truth.video_rows(data.external_ids.tolist())
        ids = data.external_ids[data.example_video_row]

        def oracle_pairs(index):
            keys = [k.removeprefix("review:") for k in data.example_user_key[index].tolist()]
            return truth.p_like(keys, ids[index].tolist())

        out["oracle"] = (
            oracle_pairs,
            lambda u: truth.person_logits(data.user_keys[u].removeprefix("review:"), rows),
        )
    return out


def served_scores(data: EvaluationData, u: int, candidates: int = SERVING_CANDIDATES):
    """[N] scores of what serving serves user `u` at the test period's start: the `candidates`
    videos nearest by cosine among those the user has not decided, plus the nearest new releases
    (`NEW_RELEASE`), scored by the ranking stage as serving weighs it (`served_weights`: with
    the exposure prior; new releases with the model's exploration bonus, `new_release_bonus`);
    every other video -inf (never served). A model without the ranking stage is served as
    serving serves its set: the nearest by cosine alone."""
    cosine = data.video_embeddings @ data.user_embeddings[u]
    open_cosine = cosine.astype(np.float64)
    open_cosine[data.excluded[u]] = -np.inf
    now_us = iso_us(data.test_start)
    new = (data.released_us > now_us - NEW_RELEASE["days"] * _DAY_US) & (data.released_us <= now_us)
    if not data.ranked:
        new[:] = False
    pool = np.flatnonzero(new)
    pool = pool[np.lexsort((-pool, -data.released_us[pool]))][: NEW_RELEASE["pool"]]
    in_pool = np.zeros(len(cosine), bool)
    in_pool[pool] = True
    retrieved = np.union1d(
        _nearest(open_cosine, candidates),
        _nearest(np.where(in_pool, open_cosine, -np.inf), NEW_RELEASE["candidates"]),
    ).astype(np.int64)
    scores = np.full(len(cosine), -np.inf)
    scores[retrieved] = (data.video_rank_scale[retrieved] * cosine[retrieved]
                         + data.video_rank_bias[retrieved]
                         + data.new_release_bonus * new[retrieved])  # fmt: skip
    if data.served_weights is not None:
        history = data.user_histories[u]
        match = np.array([history.match(row) for row in retrieved.tolist()], np.float64)
        match = match.reshape(len(retrieved), len(MATCH_FEATURE_NAMES))  # also for none
        match = np.hstack([match, data.video_evidence[retrieved]])
        scores[retrieved] += match @ data.served_weights
    return scores


def _nearest(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the (up to) `k` highest finite `scores`."""
    take = min(k, len(scores))
    top = np.argpartition(-scores, take - 1)[:take] if take else np.empty(0, np.int64)
    return top[np.isfinite(scores[top])]


def classification(labels, sources, scores) -> dict:
    """AUC-ROC / AUC-PR per task; examples a scorer could not score (NaN) are left out."""
    out = {}
    for task, negatives in TASKS.items():
        keep = (labels == 1) | np.isin(sources, negatives)
        keep &= ~np.isnan(scores)
        out[task] = {
            "roc_auc": _round(m.roc_auc(labels[keep], scores[keep])),
            "pr_auc": _round(m.pr_auc(labels[keep], scores[keep])),
            "examples": int(keep.sum()),
        }
    return out


def top_lists(data: EvaluationData, user_scores, k: int = max(KS)) -> np.ndarray:
    """[U, k] catalogue rows per test user, best first, excluding what they decided before;
    -1 for users the scorer cannot rank (e.g. ALS for users without earlier likes). One user
    at a time: a scorer returns one [N] score vector per user."""
    lists = np.full((len(data.user_keys), k), -1, np.int64)
    for u in range(len(data.user_keys)):
        scores = user_scores(u)
        if scores is None:
            continue
        scores = np.asarray(scores)
        lists[u] = m.top_k_of_scores(scores[None, :], [data.excluded[u]], k)[0]
        # -inf marks what a scorer would never show (served_scores: not a candidate)
        lists[u][(lists[u] >= 0) & np.isneginf(scores[np.maximum(lists[u], 0)])] = -1
    return lists


def retrieval(top: np.ndarray, relevant: list, users: np.ndarray | None = None) -> dict:
    """Mean ranking metrics over `users` (all by default) with at least one relevant video."""
    users = np.arange(len(top)) if users is None else users
    ranked = top[users]
    scored = ranked[:, 0] >= 0
    per_user = m.ranking_metrics(ranked[scored], [relevant[u] for u in users[scored]], KS)
    means = m.mean_ranking_metrics(per_user)
    means["users_not_ranked"] = int((~scored).sum())
    return {k: _round(v) for k, v in means.items()}


def beyond_accuracy(data: EvaluationData, top: np.ndarray, k: int = 10) -> dict:
    lists = top[top[:, 0] >= 0][:, :k]
    listed = lists[lists >= 0]
    return {
        f"new_video_share@{k}": _round(data.is_new_video[listed].mean() if len(listed) else None),
        f"coverage@{k}": _round(m.catalogue_coverage(lists, len(data.video_ids))),
        "genre_diversity": _round(m.intra_list_diversity(lists, data.genres)),
        "maker_diversity": _round(m.intra_list_diversity(lists, data.makers)),
        "novelty": _round(m.novelty(lists, data.like_counts)),
        "popularity_bias": _round(m.popularity_bias(lists, data.like_counts)),
    }


def segments(data: EvaluationData) -> dict:
    """segment -> (example mask [E], user mask [U] or None, relevant-video mask [N] or None)."""
    example_user = {k: i for i, k in enumerate(data.user_keys.tolist())}
    example_u = np.array([example_user[k] for k in data.example_user_key.tolist()])
    few = data.decisions_before < FEW_DECISIONS
    new = data.is_new_video[data.example_video_row]
    return {
        "pseudo_users": (data.is_pseudo[example_u], data.is_pseudo, None),
        "real_users": (~data.is_pseudo[example_u], ~data.is_pseudo, None),
        f"under_{FEW_DECISIONS}_decisions": (few[example_u], few, None),
        f"{FEW_DECISIONS}_or_more_decisions": (~few[example_u], ~few, None),
        "new_videos": (new, None, data.is_new_video),
        "old_videos": (~new, None, ~data.is_new_video),
    }


def evaluate_data(data: EvaluationData, truth=None, baseline: BaselineConfig | None = None) -> dict:
    """All metrics of every scorer, overall and per segment, plus curves for the report."""
    every = np.arange(len(data.example_label))
    labels, sources = data.example_label, data.example_source
    results = {
        "test_start": data.test_start,
        "validation_start": data.validation_start,
        "snapshot_content_hash": data.snapshot_content_hash,
        "counts": {
            "videos": len(data.video_ids),
            "test_examples": len(labels),
            "test_users": len(data.user_keys),
            "test_users_with_likes": int(sum(len(r) > 0 for r in data.relevant)),
        },
        "classification": {},
        "retrieval": {},
        "beyond_accuracy": {},
        "segments": {},
        "curves": {},
        "score_distributions": {},
    }
    segment_masks = segments(data)
    for name, (pairs, users) in scorers(data, truth, baseline).items():
        scores = np.asarray(pairs(every), np.float64)
        top = top_lists(data, users)
        results["classification"][name] = classification(labels, sources, scores)
        results["retrieval"][name] = retrieval(top, data.relevant)
        results["beyond_accuracy"][name] = beyond_accuracy(data, top)
        results["curves"][name] = _curves(labels, scores)
        if name == "model":
            model_scores = scores
            results["score_distributions"] = _distributions(scores, labels, sources)
        for segment, (examples, user_mask, video_mask) in segment_masks.items():
            entry = results["segments"].setdefault(segment, {})
            users = np.flatnonzero(user_mask) if user_mask is not None else None
            relevant = (
                data.relevant if video_mask is None else [r[video_mask[r]] for r in data.relevant]
            )
            entry[name] = {
                "classification": classification(
                    labels[examples], sources[examples], scores[examples]
                ),
                "retrieval": retrieval(top, relevant, users),
            }
    if truth is not None:
        results["share_of_achievable_auc"] = {
            task: _share(
                results["classification"]["model"][task]["roc_auc"],
                results["classification"]["oracle"][task]["roc_auc"],
            )
            for task in TASKS
        }
    # The model's operating point for the confusion matrix: its best-F1 threshold.
    scores = np.asarray(model_scores, np.float64)
    threshold = m.best_f1_threshold(labels, scores)
    results["threshold"] = _round(threshold)
    results["confusion_matrix"] = m.confusion_matrix(labels, scores, threshold)
    return results


def _share(model_auc, oracle_auc):
    if model_auc is None or oracle_auc is None or oracle_auc <= 0.5:
        return None
    return _round((model_auc - 0.5) / (oracle_auc - 0.5))


def _curves(labels, scores) -> dict:
    keep = ~np.isnan(scores)
    fpr, tpr, roc_thresholds = m.roc_curve(labels[keep], scores[keep])
    recall, precision, pr_thresholds = m.pr_curve(labels[keep], scores[keep])
    return {
        "roc": {"fpr": _list(fpr), "tpr": _list(tpr), "thresholds": _list(roc_thresholds)},
        "pr": {
            "recall": _list(recall),
            "precision": _list(precision),
            "thresholds": _list(pr_thresholds),
        },
    }


def _distributions(scores, labels, sources, bins: int = 40) -> dict:
    edges = np.linspace(np.min(scores, initial=-1.0), np.max(scores, initial=1.0), bins + 1)
    groups = {"like": labels == 1, "nope": sources == "nope", "sampled": sources == "sampled"}
    return {
        "bin_edges": _list(edges),
        **{name: np.histogram(scores[mask], edges)[0].tolist() for name, mask in groups.items()},
    }


def _round(value, digits: int = 6):
    if value is None:
        return None
    value = float(value)
    return None if np.isnan(value) else round(value, digits)


def _list(values) -> list:
    return [_round(v) for v in np.asarray(values, np.float64)]


def evaluate(
    model_dir: str,
    examples_dir: str,
    transform_dir: str,
    snapshot: str,
    ground_truth: str | None = None,
    baseline: BaselineConfig | None = None,
) -> dict:
    """Load, embed and evaluate; returns the results dict (see `evaluate_data`)."""
    from swiperec.evaluation.data import load_evaluation_data

    data = load_evaluation_data(model_dir, examples_dir, transform_dir, snapshot)
    truth, oracle_note = None, "no ground truth given"
    if ground_truth:
        from swiperec.data.synthetic_truth import GroundTruth

        truth, oracle_note = GroundTruth.load(ground_truth), None
        try:  # a ground truth of another data set cannot score this one
            truth.video_rows(data.external_ids.tolist())
            truth.person_logits(data.user_keys[0].removeprefix("review:"), [0])
        except (KeyError, IndexError) as error:
            truth, oracle_note = None, f"the ground truth does not match this data ({error})"
    results = evaluate_data(data, truth, baseline)
    results["oracle"] = {"ground_truth": ground_truth if truth else None, "note": oracle_note}
    results["model_dir"] = model_dir
    results["examples_dir"] = examples_dir
    results["baseline_config"] = asdict(baseline or BaselineConfig())
    results["embeddings"] = {"video": data.video_embeddings, "user": data.user_embeddings}
    return results


@dataclass
class EvaluationOutcome:
    results: dict
    blessing: dict
    out_dir: str


def evaluate_and_bless(
    model_dir: str,
    examples_dir: str,
    transform_dir: str,
    snapshot: str,
    out_dir: str,
    ground_truth: str | None = None,
    thresholds=None,
    production: dict | None = None,
    report: bool = True,
    baseline: BaselineConfig | None = None,
    extra_checks: list[dict] | None = None,
) -> EvaluationOutcome:
    """Evaluate, decide the blessing and write both to `out_dir`: `evaluation.json` (every
    metric of the model, the baselines and the oracle), `blessing.json` (the decision with its
    checks and reasons) and, unless `report=False`, `report.html`. `production` is the
    evaluation of the model now serving, when there is one: the relative thresholds
    (`BlessingThresholds`) compare against it. `extra_checks` join the blessing's (see
    `swiperec.evaluation.blessing.bless`)."""
    import tensorflow as tf

    from swiperec.evaluation.blessing import bless

    results = evaluate(model_dir, examples_dir, transform_dir, snapshot, ground_truth, baseline)
    embeddings = results.pop("embeddings")
    blessing = bless(results, embeddings, thresholds, production, extra_checks)
    tf.io.gfile.makedirs(out_dir)
    write_results(results, os.path.join(out_dir, EVALUATION_FILE))
    with tf.io.gfile.GFile(os.path.join(out_dir, BLESSING_FILE), "w") as handle:
        handle.write(json.dumps(blessing, indent=1))
    if report:
        from swiperec.evaluation.report import render_report

        render_report(results, os.path.join(out_dir, REPORT_FILE), blessing=blessing)
    return EvaluationOutcome(results, blessing, out_dir)


def write_results(results: dict, path: str) -> None:
    """The results as JSON (embeddings left out)."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(json.dumps({k: v for k, v in results.items() if k != "embeddings"}, indent=1))


def read_results(path: str) -> dict:
    import tensorflow as tf

    with tf.io.gfile.GFile(os.fspath(path)) as handle:
        return json.load(handle)
