"""Ranking and classification metrics on numpy arrays."""

from __future__ import annotations

import numpy as np


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of `scores` (ascending), ties sharing their mean rank."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # Start of each run of equal scores, and the mean rank of the run.
    starts = np.flatnonzero(np.concatenate([[True], sorted_scores[1:] != sorted_scores[:-1]]))
    ends = np.append(starts[1:], len(scores))
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (1 positive, 0 negative):
    the probability that a random positive outscores a random negative, ties counting half.
    NaN when either class is empty."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = _ranks(scores)[labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


# --- Classification: scores of (user, video) pairs against like / nope labels ---------------


def _labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in length")
    return labels, scores


def _threshold_counts(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds, highest first, with the true and false positive counts when
    everything scoring >= the threshold is predicted positive; each [T]."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    # Only the last item of a run of tied scores is a threshold: tied items enter together,
    # otherwise the curve would depend on the arbitrary order among them.
    ends = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    true_positives = np.cumsum(labels[order])[ends]
    false_positives = ends + 1 - true_positives
    return sorted_scores[ends], true_positives, false_positives


def _thin(max_points: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    n = len(arrays[0])
    if n <= max_points:
        return arrays
    keep = np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(np.int64))
    return tuple(a[keep] for a in arrays)


def pr_auc(labels, scores) -> float:
    """Average precision of `scores` for binary `labels` [N]: sum over distinct thresholds of
    (recall gained) x (precision there), step-wise like sklearn's average_precision_score (no
    interpolation). NaN when there are no positives."""
    labels, scores = _labels_scores(labels, scores)
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    _, tp, fp = _threshold_counts(labels, scores)
    recall_gain = np.diff(tp, prepend=0) / positives
    return float(np.sum(recall_gain * tp / (tp + fp)))


def roc_curve(labels, scores, max_points: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), each [<= max_points] float64, ordered by decreasing threshold.

    One point per distinct score, preceded by the origin (0, 0) whose threshold is the next
    float above the highest score: finite, unlike sklearn's inf, so it survives JSON (KFP
    ClassificationMetrics). Thinned to at most `max_points` points evenly spaced along that
    list, first and last kept. A rate is NaN when its class is empty."""
    labels, scores = _labels_scores(labels, scores)
    if len(scores) == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    thresholds, tp, fp = _threshold_counts(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.append(0, tp) / labels.sum()
        fpr = np.append(0, fp) / (~labels).sum()
    thresholds = np.append(np.nextafter(thresholds[0], np.inf), thresholds)
    return _thin(max_points, fpr, tpr, thresholds)


def pr_curve(labels, scores, max_points: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recall, precision, thresholds), each [<= max_points] float64, ordered by decreasing
    threshold (recall non-decreasing). One point per distinct score and no invented
    (recall 0, precision 1) start: precision above the highest score is 0/0. Thinned like
    `roc_curve`. Recall is NaN when there are no positives."""
    labels, scores = _labels_scores(labels, scores)
    if len(scores) == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    thresholds, tp, fp = _threshold_counts(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / labels.sum()
    precision = tp / (tp + fp)
    return _thin(max_points, recall, precision, thresholds)


def confusion_matrix(labels, scores, threshold: float) -> list[list[int]]:
    """[[tn, fp], [fn, tp]] as ints, predicting positive when score >= `threshold`."""
    labels, scores = _labels_scores(labels, scores)
    predicted = scores >= threshold
    return [
        [int(np.sum(~predicted & ~labels)), int(np.sum(predicted & ~labels))],
        [int(np.sum(~predicted & labels)), int(np.sum(predicted & labels))],
    ]


def best_f1_threshold(labels, scores) -> float:
    """The score that, used as `confusion_matrix`'s threshold, maximises F1; the highest such
    score when several tie. NaN when there are no positives (F1 is 0 everywhere)."""
    labels, scores = _labels_scores(labels, scores)
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    thresholds, tp, fp = _threshold_counts(labels, scores)
    f1 = 2 * tp / (tp + fp + positives)  # 2tp / (2tp + fp + fn), as fn = positives - tp
    return float(thresholds[np.argmax(f1)])


# --- Retrieval: top-k lists over the whole catalogue ----------------------------------------


def top_k_excluding(user_vectors, item_vectors, exclude, k: int, chunk: int = 1024) -> np.ndarray:
    """Top `k` item rows per user by dot product, best first: [U, k] int64.

    user_vectors [U, D], item_vectors [N, D]; `exclude` has one int array of item rows per user
    (e.g. what the user already saw) that never appear in its list, or is None. Equal scores
    are ordered by lower item row. Rows with fewer than k items left are padded with -1.
    Scores are computed `chunk` users at a time, so memory is about chunk x N scores."""
    user_vectors = np.asarray(user_vectors)
    item_vectors = np.asarray(item_vectors)
    n_users = len(user_vectors)
    if exclude is not None and len(exclude) != n_users:
        raise ValueError(f"exclude has {len(exclude)} rows for {n_users} users")
    parts = [
        top_k_of_scores(
            user_vectors[start : start + chunk] @ item_vectors.T,
            None if exclude is None else exclude[start : start + chunk],
            k,
        )
        for start in range(0, n_users, chunk)
    ]
    return np.concatenate(parts) if parts else np.full((0, k), -1, dtype=np.int64)


def top_k_of_scores(scores, exclude, k: int) -> np.ndarray:
    """Top `k` item rows per row of `scores` [U, N], best first: [U, k] int64, with the same
    exclusion, tie and padding rules as `top_k_excluding` (for scorers that give scores, not
    vectors)."""
    scores = np.asarray(scores, dtype=np.float64)
    n_users, n_items = scores.shape
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    take = min(k, n_items)
    result = np.full((n_users, k), -1, dtype=np.int64)
    if take == 0 or n_users == 0:
        return result
    allowed = np.ones(scores.shape, dtype=bool)
    if exclude is not None:
        rows, cols = _ragged(exclude)
        if len(cols) and cols.min() < 0:
            raise ValueError("exclude holds a negative item row")
        allowed[rows, cols] = False
    # -inf keeps excluded items out of the partition's top unless too few remain; the
    # `allowed` mask drops them even then, so a real -inf score is still recommendable.
    scores = np.where(allowed, scores, -np.inf)
    # argpartition alone would pick arbitrarily among items tied with the k-th score, so
    # take every item reaching it and let a (score, row) sort decide.
    kth = np.partition(scores, n_items - take, axis=1)[:, n_items - take]
    rows, cols = np.nonzero((scores >= kth[:, None]) & allowed)
    order = np.lexsort((cols, -scores[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    position = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = position < take
    result[rows[keep], position[keep]] = cols[keep]
    return result


def _ragged(arrays) -> tuple[np.ndarray, np.ndarray]:
    """(row, value) pairs of a sequence of int arrays, as two int64 arrays."""
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    if lengths.sum() == 0:
        return rows, np.empty(0, dtype=np.int64)
    return rows, np.concatenate([np.asarray(a, dtype=np.int64).ravel() for a in arrays])


def ranking_metrics(top_k, relevant, ks=(10, 50, 100)) -> dict[str, np.ndarray]:
    """Per-user `recall@K`, `ndcg@K`, `map@K` and `hitrate@K` for each K in `ks`, each [U]
    float64.

    top_k [U, Kmax] item rows, best first, -1 padding, no repeats within a row; every K must
    be <= Kmax. `relevant`: one int array of relevant item rows per user (duplicates count
    once). recall@K divides by all |rel| (so it is below 1 when |rel| > K); ndcg@K has binary
    gain, 1/log2(1 + position) discount and the ideal over min(|rel|, K) items; map@K is
    the sum of precision@i over hit positions i <= K divided by min(|rel|, K). Users without
    relevant items are NaN everywhere: average with np.nanmean (`mean_ranking_metrics`)."""
    top_k = np.asarray(top_k, dtype=np.int64)
    n_users, k_max = top_k.shape
    if len(relevant) != n_users:
        raise ValueError(f"relevant has {len(relevant)} rows for {n_users} users")
    if any(k > k_max for k in ks):
        raise ValueError(f"ks {tuple(ks)} exceed the {k_max} columns of top_k")
    rows, items = _ragged(relevant)
    if len(items) and items.min() < 0:
        raise ValueError("relevant holds a negative item row")
    # Encode (user, item) as one int so membership is a single vectorised isin.
    width = max(int(top_k.max(initial=-1)), int(items.max(initial=-1))) + 1
    relevant_keys = np.unique(rows * width + items)
    n_relevant = np.bincount(relevant_keys // width, minlength=n_users)
    hits = np.isin(np.arange(n_users)[:, None] * width + top_k, relevant_keys)
    hits &= top_k >= 0
    hits = hits.astype(np.float64)

    positions = np.arange(1, k_max + 1)
    discount = 1 / np.log2(positions + 1)
    hit_count = np.cumsum(hits, axis=1)
    dcg = np.cumsum(hits * discount, axis=1)
    precision_sum = np.cumsum(hits * hit_count / positions, axis=1)
    ideal_dcg = np.cumsum(discount)
    no_positives = n_relevant == 0
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            capped = np.minimum(n_relevant, k)
            metrics = {
                f"recall@{k}": hit_count[:, k - 1] / n_relevant,
                f"ndcg@{k}": dcg[:, k - 1] / ideal_dcg[np.maximum(capped, 1) - 1],
                f"map@{k}": precision_sum[:, k - 1] / capped,
                f"hitrate@{k}": (hit_count[:, k - 1] > 0).astype(np.float64),
            }
            for name, values in metrics.items():
                values[no_positives] = np.nan
                out[name] = values
    return out


def mean_ranking_metrics(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """np.nanmean of each of `ranking_metrics`' arrays, plus `users_evaluated` and
    `users_without_positives` (ints: users with and without relevant items)."""
    out: dict[str, float] = {}
    for name, values in per_user.items():
        values = np.asarray(values, dtype=np.float64)
        scored = values[~np.isnan(values)]
        # Not np.nanmean: it warns on an all-NaN array, which is an expected case here.
        out[name] = float(scored.mean()) if len(scored) else float("nan")
    first = np.asarray(next(iter(per_user.values()), []), dtype=np.float64)
    out["users_evaluated"] = int((~np.isnan(first)).sum())
    out["users_without_positives"] = int(np.isnan(first).sum())
    return out


# --- Beyond accuracy --------------------------------------------------------------------------


def _recommended(top_k) -> np.ndarray:
    top_k = np.asarray(top_k, dtype=np.int64)
    return top_k[top_k >= 0]


def catalogue_coverage(top_k, n_items: int) -> float:
    """Share (0..1) of the `n_items` catalogue rows recommended to at least one user."""
    return float(len(np.unique(_recommended(top_k))) / n_items)


def intra_list_diversity(top_k, item_groups) -> float:
    """Mean over users of the mean Jaccard distance, 1 - |A & B| / |A | B|, between the label
    sets of every pair of items in the user's list.

    `item_groups[row]` is the set of labels of item row `row` (genres, or {maker}). -1 padding
    is ignored and lists with fewer than 2 items are skipped; NaN when none is left. Two items
    with no labels at all count as identical (distance 0)."""
    top_k = np.asarray(top_k, dtype=np.int64)
    if top_k.ndim != 2 or top_k.shape[1] < 2:
        return float("nan")
    # Only recommended items are converted: item_groups may span a large catalogue and is
    # walked in Python. set() because a duplicated label would inflate the set sizes.
    items = np.unique(top_k[top_k >= 0])
    label_ids: dict = {}
    sets = [
        [label_ids.setdefault(label, len(label_ids)) for label in set(item_groups[i])]
        for i in items
    ]
    set_size = np.array([len(s) for s in sets], dtype=np.int64)
    set_start = np.concatenate([[0], np.cumsum(set_size)])
    flat_labels = np.array([label for s in sets for label in s], dtype=np.int64)
    n_labels = max(len(label_ids), 1)

    width = top_k.shape[1]
    upper = np.triu(np.ones((width, width), dtype=bool), k=1)
    list_means = []
    # Users a few hundred at a time: each gets a dense [positions x its own labels] indicator
    # matrix, so pair intersections are one batched matmul without a catalogue-wide matrix.
    for start in range(0, len(top_k), 256):
        block = top_k[start : start + 256]
        valid = block >= 0
        compact = np.where(valid, np.searchsorted(items, np.maximum(block, 0)), 0)
        sizes = np.where(valid, set_size[compact], 0)
        user, position = np.nonzero(sizes)
        counts = sizes[user, position]
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        label = flat_labels[np.repeat(set_start[compact[user, position]], counts) + offsets]
        user, position = np.repeat(user, counts), np.repeat(position, counts)
        keys, column = np.unique(user * n_labels + label, return_inverse=True)
        column = column - np.searchsorted(keys, user * n_labels)
        indicator = np.zeros((len(block), width, int(column.max(initial=-1)) + 1), np.float32)
        indicator[user, position, column] = 1
        shared = indicator @ indicator.transpose(0, 2, 1)
        union = sizes[:, :, None] + sizes[:, None, :] - shared
        distance = np.where(union > 0, 1 - shared / np.maximum(union, 1), 0.0)
        pairs = valid[:, :, None] & valid[:, None, :] & upper
        n_pairs = pairs.sum(axis=(1, 2))
        scored = n_pairs > 0
        list_means.append((distance * pairs).sum(axis=(1, 2))[scored] / n_pairs[scored])
    means = np.concatenate(list_means)
    return float(means.mean()) if len(means) else float("nan")


def novelty(top_k, item_popularity) -> float:
    """Mean self-information -log2 p, in bits, over all recommended slots, with
    p = (count + 1) / (sum of counts + n_items) from `item_popularity` [n_items] interaction
    counts. The +1 keeps never-seen items finite. NaN when nothing is recommended."""
    popularity = np.asarray(item_popularity, dtype=np.float64)
    recommended = _recommended(top_k)
    if len(recommended) == 0:
        return float("nan")
    p = (popularity[recommended] + 1) / (popularity.sum() + len(popularity))
    return float(np.mean(-np.log2(p)))


def popularity_bias(top_k, item_popularity) -> float:
    """Mean popularity percentile of recommended slots: 0 for the least and 1 for the most
    popular catalogue item, (rank - 1) / (n_items - 1) with tied counts sharing their mean
    rank (so an all-equal catalogue gives 0.5). NaN when nothing is recommended."""
    popularity = np.asarray(item_popularity, dtype=np.float64)
    recommended = _recommended(top_k)
    if len(recommended) == 0:
        return float("nan")
    if len(popularity) == 1:
        return 0.5
    percentile = (_ranks(popularity) - 1) / (len(popularity) - 1)
    return float(np.mean(percentile[recommended]))
