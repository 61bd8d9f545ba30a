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
