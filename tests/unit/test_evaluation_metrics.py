"""The evaluator's metrics on tiny cases whose expected values are worked out by hand."""

import math

import numpy as np
import pytest

from swiperec.evaluation.metrics import (
    best_f1_threshold,
    catalogue_coverage,
    confusion_matrix,
    intra_list_diversity,
    mean_ranking_metrics,
    novelty,
    popularity_bias,
    pr_auc,
    pr_curve,
    ranking_metrics,
    roc_auc,
    roc_curve,
    top_k_excluding,
)

# Three positives, one negative; two positives tie with the negative at 0.5.
TIED_LABELS = [1, 1, 1, 0]
TIED_SCORES = [0.9, 0.5, 0.5, 0.5]


def test_roc_auc_counts_ties_as_half():
    # Pairs (positive, negative): 0.9 vs 0.5 wins (1), both 0.5 positives tie (1/2 each):
    # (1 + 0.5 + 0.5) / 3 = 2/3.
    assert roc_auc(TIED_LABELS, TIED_SCORES) == pytest.approx(2 / 3)
    # Second case: pos 0.8 vs neg 0.8 ties (1/2), vs neg 0.2 wins (1); pos 0.6 loses to 0.8 (0),
    # beats 0.2 (1): 2.5 / 4.
    assert roc_auc([1, 0, 1, 0], [0.8, 0.8, 0.6, 0.2]) == pytest.approx(0.625)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.4]))  # no negatives


def test_pr_auc_lets_tied_items_enter_together():
    # Threshold 0.9: tp 1, fp 0 -> precision 1, recall 1/3. Threshold 0.5 (all three tied items
    # at once): tp 3, fp 1 -> precision 3/4, recall 1. AP = 1/3 * 1 + 2/3 * 3/4 = 5/6.
    # Breaking the tie positives-first would give 1, negative-first (1 + 2/3 + 3/4) / 3 = 0.806.
    assert pr_auc(TIED_LABELS, TIED_SCORES) == pytest.approx(5 / 6)
    # No ties: ranks 1 and 3 hold the positives: (1/1 + 2/3) / 2 = 5/6 as well, but via two steps.
    assert pr_auc([1, 0, 1, 0], [0.9, 0.7, 0.5, 0.3]) == pytest.approx(5 / 6)
    # Only positive ranked last of 4: precision 1/4 at recall 1.
    assert pr_auc([0, 0, 0, 1], [0.9, 0.7, 0.5, 0.3]) == pytest.approx(0.25)
    assert math.isnan(pr_auc([0, 0], [0.1, 0.2]))  # no positives


def test_roc_curve_points_per_distinct_threshold():
    fpr, tpr, thresholds = roc_curve(TIED_LABELS, TIED_SCORES)
    # Origin first, then threshold 0.9 (tp 1 of 3, fp 0 of 1), then 0.5 (everything).
    np.testing.assert_allclose(fpr, [0, 0, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1])
    np.testing.assert_allclose(thresholds[1:], [0.9, 0.5])
    # The origin's threshold is finite and predicts nothing positive.
    assert np.isfinite(thresholds[0]) and thresholds[0] > 0.9
    # Trapezoids under the curve: (1/3 + 1) / 2 = 2/3, the AUC.
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(TIED_LABELS, TIED_SCORES))


def test_pr_curve_points_per_distinct_threshold():
    recall, precision, thresholds = pr_curve(TIED_LABELS, TIED_SCORES)
    # Threshold 0.9: recall 1/3, precision 1; threshold 0.5: recall 1, precision 3/4.
    np.testing.assert_allclose(recall, [1 / 3, 1])
    np.testing.assert_allclose(precision, [1, 3 / 4])
    np.testing.assert_allclose(thresholds, [0.9, 0.5])


def test_curves_thin_to_max_points_keeping_the_ends():
    scores = np.arange(10) / 10  # 10 distinct scores 0.0 .. 0.9
    labels = np.arange(10) % 2
    fpr, tpr, thresholds = roc_curve(labels, scores, max_points=4)
    # 11 ROC points (origin + 10 thresholds 0.9 .. 0.0); linspace(0, 10, 4) rounds to indices
    # 0, 3, 7, 10, i.e. the origin and thresholds 0.7, 0.3, 0.0.
    np.testing.assert_allclose(thresholds[1:], [0.7, 0.3, 0.0])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    recall, precision, thresholds = pr_curve(labels, scores, max_points=4)
    # 10 PR points; linspace(0, 9, 4) = indices 0, 3, 6, 9: thresholds 0.9, 0.6, 0.3, 0.0.
    np.testing.assert_allclose(thresholds, [0.9, 0.6, 0.3, 0.0])
    # Threshold 0.9 keeps only item 9 (odd, a positive): precision 1, recall 1/5; 0.0 keeps all.
    np.testing.assert_allclose(recall[[0, -1]], [0.2, 1])
    np.testing.assert_allclose(precision[[0, -1]], [1, 0.5])
    with pytest.raises(ValueError):
        roc_curve(labels, scores, max_points=1)


def test_confusion_matrix_predicts_positive_at_or_above_the_threshold():
    labels, scores = [1, 0, 1, 0], [0.8, 0.8, 0.6, 0.2]
    # >= 0.6: items 0, 1, 2 predicted positive -> tn 1 (item 3), fp 1, fn 0, tp 2.
    assert confusion_matrix(labels, scores, 0.6) == [[1, 1], [0, 2]]
    # >= 0.7: items 0, 1 -> tn 1, fp 1, fn 1 (item 2), tp 1.
    assert confusion_matrix(labels, scores, 0.7) == [[1, 1], [1, 1]]


def test_best_f1_threshold():
    # F1 = 2tp / (2tp + fp + fn): at 0.8 tp 1 fp 1 fn 1 -> 0.5; at 0.6 tp 2 fp 1 -> 0.8;
    # at 0.2 tp 2 fp 2 -> 2/3. Best: 0.6.
    assert best_f1_threshold([1, 0, 1, 0], [0.8, 0.8, 0.6, 0.2]) == pytest.approx(0.6)
    # At 0.9: tp 1 fn 1 -> 2/3; at 0.3: tp 2 fp 2 -> 2/3 too; the tie goes to the higher score.
    assert best_f1_threshold([1, 0, 0, 1], [0.9, 0.7, 0.5, 0.3]) == pytest.approx(0.9)
    assert math.isnan(best_f1_threshold([0, 0], [0.3, 0.4]))


# Items in 2-d. Items 0 and 2 are identical; item 3 is halfway; item 4 points away.
ITEMS = np.array([[1, 0], [0, 1], [1, 0], [0.5, 0.5], [-1, 0]], dtype=np.float32)
# User 0 along x: scores [1, 0, 1, 0.5, -1]. User 1 along y: scores [0, 1, 0, 0.5, 0].
USERS = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)


def test_top_k_orders_by_score_then_lower_item_row():
    top = top_k_excluding(USERS, ITEMS, [[], [], []], k=3, chunk=2)
    # User 0: items 0 and 2 tie at 1 (row 0 first), then item 3 (0.5).
    # User 1: item 1 (1), item 3 (0.5), then 0, 2 and 4 tie at 0 for the last slot: row 0.
    np.testing.assert_array_equal(top, [[0, 2, 3], [1, 3, 0], [0, 2, 3]])
    assert top.dtype == np.int64


def test_top_k_never_returns_excluded_items_and_pads_with_minus_one():
    top = top_k_excluding(USERS, ITEMS, [[0], [1, 3], [0, 1, 2]], k=3, chunk=2)
    # User 0 without item 0: 2 (1), 3 (0.5), 1 (0).
    # User 1 without 1 and 3: the three items scoring 0 in row order: 0, 2, 4.
    # User 2 without 0, 1, 2: only 3 (0.5) and 4 (-1) remain, then padding.
    np.testing.assert_array_equal(top, [[2, 3, 1], [0, 2, 4], [3, 4, -1]])
    # k beyond the catalogue: all 5 items for user 0, then one -1.
    np.testing.assert_array_equal(
        top_k_excluding(USERS[:1], ITEMS, None, k=6), [[0, 2, 3, 1, 4, -1]]
    )


# User 0: hits at positions 1 and 3, three relevant items. User 1: one relevant item, found at 3.
# User 2: no relevant items. User 3: a single recommendation then padding, two relevant items.
TOP_K = np.array([[10, 11, 12], [10, 11, 12], [10, 11, 12], [12, -1, -1]])
RELEVANT = [
    np.array([10, 12, 20]),
    np.array([12]),
    np.array([], dtype=np.int64),
    np.array([12, 13]),
]


def test_ranking_metrics_hits_at_positions_1_and_3():
    m = ranking_metrics(TOP_K, RELEVANT, ks=(1, 3))
    log3 = math.log2(3)
    # User 0, K=3: recall 2/3; DCG = 1/log2(2) + 1/log2(4) = 1.5, ideal over min(3, 3) items
    # 1 + 1/log2(3) + 1/2 = 2.131, NDCG 0.704; AP = (precision@1 + precision@3) / 3 =
    # (1 + 2/3) / 3 = 0.556; a hit.
    assert m["recall@3"][0] == pytest.approx(2 / 3)
    assert m["ndcg@3"][0] == pytest.approx(1.5 / (1.5 + 1 / log3))
    assert m["ndcg@3"][0] == pytest.approx(0.70392, abs=1e-5)
    assert m["map@3"][0] == pytest.approx(5 / 9)
    assert m["hitrate@3"][0] == 1
    # User 0, K=1: the top item is a hit: recall 1/3, and the ideal is capped at 1 item: NDCG 1,
    # AP = 1 / min(3, 1) = 1.
    assert m["recall@1"][0] == pytest.approx(1 / 3)
    assert m["ndcg@1"][0] == pytest.approx(1)
    assert m["map@1"][0] == pytest.approx(1)
    # User 1, K=3: recall 1; DCG 1/log2(4) = 0.5 against an ideal of 1; AP precision@3 = 1/3.
    assert m["recall@3"][1] == pytest.approx(1)
    assert m["ndcg@3"][1] == pytest.approx(0.5)
    assert m["map@3"][1] == pytest.approx(1 / 3)
    # User 1, K=1: nothing yet.
    assert (m["recall@1"][1], m["ndcg@1"][1], m["map@1"][1], m["hitrate@1"][1]) == (0, 0, 0, 0)
    # User 3: padding is a miss: recall 1/2; NDCG 1 / (1 + 1/log2(3)) = 0.613; AP 1/2.
    assert m["recall@3"][3] == pytest.approx(0.5)
    assert m["ndcg@3"][3] == pytest.approx(1 / (1 + 1 / log3))
    assert m["map@3"][3] == pytest.approx(0.5)
    assert set(m) == {f"{n}@{k}" for n in ("recall", "ndcg", "map", "hitrate") for k in (1, 3)}


def test_users_without_relevant_items_are_nan_and_counted():
    m = ranking_metrics(TOP_K, RELEVANT, ks=(3,))
    assert all(np.isnan(values[2]) for values in m.values())
    means = mean_ranking_metrics(m)
    # Users 0, 1 and 3 only: recall (2/3 + 1 + 1/2) / 3 = 13/18; hit rate 3/3.
    assert means["recall@3"] == pytest.approx(13 / 18)
    assert means["hitrate@3"] == pytest.approx(1)
    assert means["users_evaluated"] == 3
    assert means["users_without_positives"] == 1


def test_ranking_metrics_rejects_k_beyond_the_lists():
    with pytest.raises(ValueError):
        ranking_metrics(TOP_K, RELEVANT, ks=(10,))


def test_catalogue_coverage():
    # Items 0, 2 and 3 recommended out of 5 (padding ignored): 3/5.
    assert catalogue_coverage([[0, 2, -1], [2, 3, -1]], 5) == pytest.approx(0.6)


GROUPS = [
    frozenset({"a", "b"}),
    frozenset({"b", "c"}),
    frozenset({"d"}),
    frozenset({"a", "b"}),
]


def test_intra_list_diversity_jaccard_of_a_three_item_list():
    # Pairs: {a,b}-{b,c}: 1 - 1/3 = 2/3; {a,b}-{d}: 1; {b,c}-{d}: 1. Mean (2/3 + 1 + 1) / 3 = 8/9.
    assert intra_list_diversity([[0, 1, 2]], GROUPS) == pytest.approx(8 / 9)
    # Adding identical items 0 and 3 (distance 0) and a 1-item list (skipped): (8/9 + 0) / 2.
    lists = [[0, 1, 2], [0, 3, -1], [1, -1, -1]]
    assert intra_list_diversity(lists, GROUPS) == pytest.approx(4 / 9)


def test_novelty_and_popularity_bias():
    popularity = [3, 1, 0, 0]  # smoothed p = (count + 1) / (4 + 4): 1/2, 1/4, 1/8, 1/8
    lists = [[0, 1], [2, -1]]
    # Self-information of items 0, 1, 2: 1, 2 and 3 bits; mean 2.
    assert novelty(lists, popularity) == pytest.approx(2.0)
    # Ascending ranks with ties averaged: items 2, 3 -> 1.5, item 1 -> 3, item 0 -> 4;
    # percentiles (rank - 1) / 3: 1, 2/3, 1/6, 1/6. Mean over 0, 1, 2: (1 + 2/3 + 1/6) / 3.
    assert popularity_bias(lists, popularity) == pytest.approx(11 / 18)
