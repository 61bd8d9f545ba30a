"""Models side by side on real users' later swipes: the same users, the same period, the same
catalogue, each model through its own exported towers.

    result = compare_on_real_users(snapshot, test_start, {"candidate": dir_a, "serving": dir_b})
    result["models"]["candidate"]["auc_like_vs_nope"], ...["recall@50"]
    result["differences"]["candidate"]["auc_like_vs_nope"]   # minus the reference, with a CI

Pooled metrics can hide a real-user regression behind pseudo-user gains, and two models'
evaluations on their own test periods are not comparable; this is the comparison that gates a
change of the training mix (`swiperec.migration`). Per model:

- every real user with a swipe at or after `test_start` is embedded once, as of `test_start`
  (their swipes before it), and every video as of `test_start`, by the model's raw-feature
  towers (`swiperec.embeddings.towers`: what the embedding writer and the real-time worker use),
  each with the feature configuration the model was trained with;
- **AUC like vs nope**: the dot-product score of every real test swipe, likes against nopes
  (does the model tell what this user will like from what they will pass on);
- **Recall@50**: per user, the top 50 of the catalogue without what they swiped before, against
  the videos they liked in the period (users with no like there are left out).

Differences to the `reference` model come with a 95 % bootstrap interval over users (a user's
swipes stay together: they are not independent). A figure that is undefined (an AUC when the
period's real swipes are all likes or all nopes; Recall@50 when no one liked anything) is None.
"""

from __future__ import annotations

import numpy as np

from swiperec.evaluation.metrics import (
    mean_ranking_metrics,
    ranking_metrics,
    roc_auc,
    top_k_excluding,
)

K = 50
RECALL = f"recall@{K}"
AUC = "auc_like_vs_nope"
BOOTSTRAP_RESAMPLES = 200


def _test_period(events, catalogue, test_start_us: int):
    """Real users with a swipe at or after test_start: per user (key, history before, rows of
    test swipes), as arrays."""
    users, history, swipes = [], [], []
    for key, is_pseudo, rows in events.user_slices():
        if is_pseudo:
            continue
        times = events.time_us[rows]
        split = int(np.searchsorted(times, test_start_us))
        if split == len(times):
            continue
        video_ids, labels = events.video_id[rows], events.label[rows]
        users.append(key)
        history.append((key, video_ids[:split], labels[:split], times[:split]))
        swipes.append((catalogue.index_of(video_ids[split:]), labels[split:]))
    return users, history, swipes


def _per_user_scores(user_vectors, video_vectors, swipes):
    """Per user: (scores of their test swipes, labels)."""
    return [
        (video_vectors[rows] @ user_vectors[u], labels) for u, (rows, labels) in enumerate(swipes)
    ]


def _auc(per_user, users) -> float:
    scores = np.concatenate([per_user[u][0] for u in users]) if len(users) else np.empty(0)
    labels = np.concatenate([per_user[u][1] for u in users]) if len(users) else np.empty(0)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc(labels, scores))


def compare_on_real_users(
    snapshot: str,
    test_start_us: int,
    model_dirs: dict[str, str],
    *,
    reference: str | None = None,
    seed: int = 0,
) -> dict:
    """Each model of `model_dirs` (name -> model folder with user_tower/, video_tower/ and
    model_card.json) on the real users of `snapshot` from `test_start_us` on; differences to
    `reference` (default: the last model named). JSON-ready; see the module."""
    from swiperec.embeddings.towers import embed_users, embed_videos, load_towers
    from swiperec.features.config import FeatureConfig, stored_feature_config
    from swiperec.features.events import load_snapshot
    from swiperec.model.train import read_model_card

    if not model_dirs:
        raise ValueError("no models to compare")
    reference = reference or list(model_dirs)[-1]
    if reference not in model_dirs:
        raise ValueError(f"the reference {reference!r} is not among {sorted(model_dirs)}")
    catalogue, events, _ = load_snapshot(snapshot, FeatureConfig(pseudo_user_weight=0.0))
    users, history, swipes = _test_period(events, catalogue, test_start_us)
    out = {
        "test_start_us": int(test_start_us),
        "users": len(users),
        "swipes": int(sum(len(labels) for _, labels in swipes)),
        "likes": int(sum(int(labels.sum()) for _, labels in swipes)),
        "reference": reference,
        "models": {},
        "differences": {},
    }
    if not users:
        return out
    decided = [catalogue.index_of(h[1]) for h in history]
    relevant = [
        np.setdiff1d(np.unique(rows[labels == 1]), before)
        for (rows, labels), before in zip(swipes, decided, strict=True)
    ]
    per_model = {}
    for name, model_dir in model_dirs.items():
        config = stored_feature_config(read_model_card(model_dir)["input"]["feature_config"])
        towers = load_towers(model_dir)
        _, user_vectors = embed_users(towers, catalogue, config, history, test_start_us)
        _, video_vectors = embed_videos(towers, catalogue, range(len(catalogue)), test_start_us)
        top = top_k_excluding(user_vectors, video_vectors, decided, K)
        recall = ranking_metrics(top, relevant, ks=(K,))[RECALL]
        scores = _per_user_scores(user_vectors, video_vectors, swipes)
        per_model[name] = (scores, recall)
        out["models"][name] = {
            AUC: _finite(_auc(scores, range(len(users)))),
            RECALL: _finite(mean_ranking_metrics({RECALL: recall})[RECALL]),
        }
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(users), size=(BOOTSTRAP_RESAMPLES, len(users)))
    ref_scores, ref_recall = per_model[reference]
    for name, (scores, recall) in per_model.items():
        if name == reference:
            continue
        deltas = {AUC: [], RECALL: []}
        for sample in samples:
            deltas[AUC].append(_auc(scores, sample) - _auc(ref_scores, sample))
            deltas[RECALL].append(np.nanmean(recall[sample]) - np.nanmean(ref_recall[sample]))
        out["differences"][name] = {
            metric: {
                "difference": _difference(out["models"][name][metric],
                                          out["models"][reference][metric]),
                "ci95": _interval(d),
            }
            for metric, d in deltas.items()
        }  # fmt: skip
    return out


def _finite(value: float) -> float | None:
    """None for an undefined figure (NaN: e.g. an AUC when every test swipe is a like), so the
    result stays valid JSON and no comparison with it can pass by accident."""
    return float(value) if np.isfinite(value) else None


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _interval(deltas: list[float]) -> list[float] | None:
    d = np.asarray(deltas, dtype=float)
    d = d[np.isfinite(d)]
    return [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))] if len(d) else None
