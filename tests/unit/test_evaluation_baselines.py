"""Evaluation baselines: popularity counts, smoothed like rates, ALS shapes, determinism,
fallback, and that ALS finds the latent structure popularity cannot."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from swiperec.evaluation.baselines import (
    LikeRateBaseline,
    MatrixFactorizationBaseline,
    PopularityBaseline,
)


def test_popularity_counts_ties_and_weights():
    pop = PopularityBaseline().fit(np.array([2, 0, 2, 3, 0, 2]), n_items=5)
    np.testing.assert_array_equal(pop.item_scores(), [2, 0, 3, 1, 0])
    assert pop.item_scores().dtype == np.float32

    scores = pop.scores(np.array([7, 1]))  # the user rows do not matter
    assert scores.shape == (2, 5) and scores.dtype == np.float32
    np.testing.assert_array_equal(scores[0], scores[1])
    np.testing.assert_array_equal(scores[0], [2, 0, 3, 1, 0])
    # Ties: the two unseen items score the same.
    assert scores[0, 1] == scores[0, 4]

    pairs = pop.pair_scores(np.array([0, 5, 9]), np.array([2, 3, 1]))
    np.testing.assert_array_equal(pairs, [3, 1, 0])
    assert pairs.dtype == np.float32

    weighted = PopularityBaseline().fit([2, 0, 2, 3], n_items=4, weights=[0.5, 2.0, 0.5, 1.0])
    np.testing.assert_array_equal(weighted.item_scores(), [2.0, 0.0, 1.0, 1.0])
    assert weighted.item_scores()[2] == weighted.item_scores()[3]

    with pytest.raises(ValueError):
        PopularityBaseline().fit([0, 5], n_items=5)
    with pytest.raises(RuntimeError):
        PopularityBaseline().item_scores()


def test_like_rate_is_shrunk_toward_the_overall_rate():
    # 4 likes in 10 swipes overall: rate 0.4; k = 2 adds 0.8 likes in 2 swipes to every item.
    rate = LikeRateBaseline(prior_strength=2.0).fit([3, 0, 1, 0], [1, 0, 3, 2])
    np.testing.assert_allclose(rate.item_scores(), [3.8 / 6, 0.4, 1.8 / 6, 0.8 / 4], rtol=1e-6)
    assert rate.item_scores().dtype == np.float32
    # Never swiped: the overall rate; the more swipes, the closer to the item's own rate.
    assert rate.item_scores()[1] == np.float32(0.4)
    default = LikeRateBaseline().fit([3, 0, 1, 0], [1, 0, 3, 2])
    np.testing.assert_allclose(default.item_scores()[0], (3 + 20 * 0.4) / (4 + 20), rtol=1e-6)
    many = LikeRateBaseline(prior_strength=2.0).fit([300, 100], [100, 300])
    np.testing.assert_allclose(many.item_scores(), [301 / 402, 101 / 402], rtol=1e-6)

    # A nope lowers a video popularity cannot tell apart: both have one like.
    like_only = LikeRateBaseline().fit([1, 1], [0, 5]).item_scores()
    assert like_only[0] > like_only[1]

    scores = rate.scores(np.array([4, 0, 9]))  # the user rows do not matter
    assert scores.shape == (3, 4) and scores.dtype == np.float32
    np.testing.assert_array_equal(scores[0], scores[2])
    np.testing.assert_array_equal(scores[1], rate.item_scores())
    pairs = rate.pair_scores(np.array([0, 5]), np.array([3, 0]))
    np.testing.assert_allclose(pairs, [0.2, 3.8 / 6], rtol=1e-6)


def test_like_rate_edge_cases():
    np.testing.assert_array_equal(LikeRateBaseline().fit([0, 0], [0, 0]).item_scores(), [0, 0])
    with pytest.raises(ValueError, match="same length"):
        LikeRateBaseline().fit([1, 2], [1])
    with pytest.raises(ValueError, match="must not be negative"):
        LikeRateBaseline().fit([1, -1], [0, 0])
    with pytest.raises(ValueError, match="prior_strength must be positive"):
        LikeRateBaseline(prior_strength=0)
    with pytest.raises(RuntimeError, match="LikeRateBaseline is not fitted"):
        LikeRateBaseline().item_scores()
    with pytest.raises(ValueError):
        LikeRateBaseline().fit([1, 2], [0, 0]).pair_scores([0], [2])


def _tiny_interactions():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 20, size=200)
    items = rng.integers(0, 30, size=200)
    users[users == 19] = 18  # user 19 has no interactions
    return users, items


def test_mf_shapes_dtypes_and_determinism():
    users, items = _tiny_interactions()
    kwargs = {"factors": 8, "iterations": 5, "seed": 7}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no BLAS-threads warning from implicit
        a = MatrixFactorizationBaseline(**kwargs).fit(users, items, n_users=20, n_items=30)
    b = MatrixFactorizationBaseline(**kwargs).fit(users, items, n_users=20, n_items=30)

    assert a.user_factors.shape == (20, 8) and a.user_factors.dtype == np.float32
    assert a.item_factors.shape == (30, 8) and a.item_factors.dtype == np.float32
    assert isinstance(a.user_factors, np.ndarray) and isinstance(a.item_factors, np.ndarray)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)

    scores = a.scores(np.array([3, 0, 3]))
    assert scores.shape == (3, 30) and scores.dtype == np.float32
    np.testing.assert_allclose(scores[1], a.user_factors[0] @ a.item_factors.T, rtol=1e-5)
    np.testing.assert_array_equal(scores[0], scores[2])
    np.testing.assert_array_equal(scores, b.scores(np.array([3, 0, 3])))

    pairs = a.pair_scores(np.array([3, 0, 5]), np.array([1, 2, 29]))
    assert pairs.shape == (3,) and pairs.dtype == np.float32
    full = a.scores(np.array([3, 0, 5]))
    np.testing.assert_allclose(pairs, full[[0, 1, 2], [1, 2, 29]], rtol=1e-5)

    other = MatrixFactorizationBaseline(factors=8, iterations=5, seed=8)
    other.fit(users, items, n_users=20, n_items=30)
    assert not np.array_equal(a.user_factors, other.user_factors)


def test_mf_duplicates_sum_into_confidence():
    # A pair seen twice equals the same pair seen once with weight 2.
    repeated = MatrixFactorizationBaseline(factors=4, iterations=3).fit(
        [0, 0, 1, 1, 2], [0, 0, 1, 2, 2], n_users=3, n_items=3
    )
    weighted = MatrixFactorizationBaseline(factors=4, iterations=3).fit(
        [0, 1, 1, 2], [0, 1, 2, 2], n_users=3, n_items=3, weights=[2.0, 1.0, 1.0, 1.0]
    )
    np.testing.assert_allclose(repeated.user_factors, weighted.user_factors, rtol=1e-5)
    np.testing.assert_allclose(repeated.item_factors, weighted.item_factors, rtol=1e-5)


def test_mf_unknown_user_falls_back_to_popularity():
    users, items = _tiny_interactions()
    mf = MatrixFactorizationBaseline(factors=8, iterations=5).fit(
        users, items, n_users=20, n_items=30
    )
    pop = PopularityBaseline().fit(items, n_items=30)

    np.testing.assert_array_equal(mf.known_users(np.array([19, 0, 18])), [False, True, True])
    scores = mf.scores(np.array([19, 0]))
    np.testing.assert_array_equal(scores[0], pop.item_scores())
    assert not np.array_equal(scores[1], pop.item_scores())

    pairs = mf.pair_scores(np.array([19, 19, 0]), np.array([4, 11, 4]))
    np.testing.assert_array_equal(pairs[:2], pop.item_scores()[[4, 11]])
    np.testing.assert_allclose(pairs[2], mf.user_factors[0] @ mf.item_factors[4], rtol=1e-5)

    assert mf.known_items(np.arange(30)).tolist() == (np.bincount(items, minlength=30) > 0).tolist()


def _clustered_likes(rng, n_users=300, n_items=400, n_clusters=3, likes_per_user=30):
    """(user, item) likes: each user and item belongs to a cluster; users mostly like their
    cluster's items; within and across clusters, items have a Zipf-like popularity skew."""
    item_cluster = rng.integers(0, n_clusters, size=n_items)
    user_cluster = rng.integers(0, n_clusters, size=n_users)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.5
    popularity = popularity[rng.permutation(n_items)]
    users, items = [], []
    for user in range(n_users):
        affinity = np.where(item_cluster == user_cluster[user], 1.0, 0.05) * popularity
        chosen = rng.choice(
            n_items, size=likes_per_user, replace=False, p=affinity / affinity.sum()
        )
        users.append(np.full(likes_per_user, user))
        items.append(chosen)
    return np.concatenate(users), np.concatenate(items)


def _recall_at_k(scores, train_users, train_items, test_users, test_items, k=20):
    """Mean over users with held-out likes of |top-k ∩ held-out| / |held-out|, where each user's
    training items are excluded from their top k."""
    scores = scores.astype(np.float64, copy=True)
    scores[train_users, train_items] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = np.zeros(scores.shape, dtype=bool)
    hits[np.repeat(np.arange(len(scores)), k), top.reshape(-1)] = True
    held = np.bincount(test_users, minlength=len(scores))
    found = np.bincount(test_users, weights=hits[test_users, test_items], minlength=len(scores))
    users = held > 0
    return float(np.mean(found[users] / held[users]))


def test_mf_beats_popularity_on_clustered_data():
    start = time.perf_counter()
    rng = np.random.default_rng(123)
    n_users, n_items = 300, 400
    users, items = _clustered_likes(rng, n_users, n_items)
    test = rng.random(len(users)) < 0.2  # each user's likes are held out at random, ~20%
    train_users, train_items = users[~test], items[~test]
    test_users, test_items = users[test], items[test]

    pop = PopularityBaseline().fit(train_items, n_items)
    # ~24 training likes per user at confidence 11 need far more than the default
    # regularization (0.05), which overfits here and only ties popularity.
    mf = MatrixFactorizationBaseline(factors=16, regularization=50.0, iterations=10, seed=1).fit(
        train_users, train_items, n_users, n_items
    )
    all_users = np.arange(n_users)
    args = (train_users, train_items, test_users, test_items)
    pop_recall = _recall_at_k(pop.scores(all_users), *args)
    mf_recall = _recall_at_k(mf.scores(all_users), *args)

    assert mf_recall >= 1.5 * pop_recall, (mf_recall, pop_recall)  # ~0.31 vs ~0.16
    assert time.perf_counter() - start < 5.0
