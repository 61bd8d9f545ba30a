"""Blessing decisions at and around their thresholds."""

import numpy as np
import pytest

from swiperec.evaluation.blessing import BlessingThresholds, bless, embedding_checks


def results(auc=0.70, recall=0.10, pop_auc=0.60, pop_recall=0.05, share=None):
    out = {
        "classification": {
            "model": {"like_vs_all": {"roc_auc": auc}},
            "popularity": {"like_vs_all": {"roc_auc": pop_auc}},
        },
        "retrieval": {"model": {"recall@50": recall}, "popularity": {"recall@50": pop_recall}},
    }
    if share is not None:
        out["classification"]["oracle"] = {"like_vs_all": {"roc_auc": 0.8}}
        out["share_of_achievable_auc"] = {"like_vs_all": share}
    return out


def unit_vectors(n=200, d=768, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


GOOD = {"video": unit_vectors(), "user": unit_vectors(seed=1)}
T = BlessingThresholds(min_auc=0.6, min_recall_at_50=0.05)


def failed(blessing):
    return {c["name"] for c in blessing["checks"] if not c["passed"]}


def test_a_good_model_is_blessed_with_no_reasons():
    blessing = bless(results(), GOOD, T)
    assert blessing["blessed"] and blessing["reasons"] == []
    assert not blessing["compared_to_production"]
    assert not any(c["name"].endswith("production") for c in blessing["checks"])


@pytest.mark.parametrize(
    ("auc", "blessed"), [(0.6, True), (0.5999, False), (0.61, True)]
)  # fmt: skip
def test_absolute_auc_at_and_around_the_minimum(auc, blessed):
    blessing = bless(results(auc=auc, pop_auc=0.5), GOOD, T)
    assert blessing["blessed"] is blessed
    if not blessed:
        assert failed(blessing) == {"auc"}
        assert "below the minimum 0.6" in blessing["reasons"][0]


def test_recall_minimum_and_beating_popularity():
    assert failed(bless(results(recall=0.0499, pop_recall=0.01), GOOD, T)) == {"recall@50"}
    # Equal to popularity is not better than popularity.
    assert failed(bless(results(auc=0.65, pop_auc=0.65), GOOD, T)) == {"beats_popularity_auc"}
    assert failed(bless(results(pop_recall=0.10), GOOD, T)) == {"beats_popularity_recall@50"}
    relaxed = BlessingThresholds(min_auc=0.6, must_beat_popularity=False)
    assert bless(results(auc=0.65, pop_auc=0.65), GOOD, relaxed)["blessed"]


def test_share_of_achievable_auc_applies_only_with_an_oracle():
    assert failed(bless(results(share=0.29), GOOD, T)) == {"share_of_achievable_auc"}
    assert bless(results(share=0.3), GOOD, T)["blessed"]
    assert "share_of_achievable_auc" not in {c["name"] for c in bless(results(), GOOD, T)["checks"]}


@pytest.mark.parametrize(
    ("auc", "recall", "expected_failures"),
    [
        (0.69, 0.095, set()),  # exactly 0.01 below and exactly 5% below production: allowed
        (0.6899, 0.095, {"auc_vs_production"}),
        (0.69, 0.0949, {"recall@50_vs_production"}),
        (0.75, 0.2, set()),  # better than production
    ],
)
def test_relative_to_production(auc, recall, expected_failures):
    production = results(auc=0.70, recall=0.10)
    blessing = bless(results(auc=auc, recall=recall), GOOD, T, production=production)
    assert blessing["compared_to_production"]
    assert failed(blessing) == expected_failures
    assert blessing["blessed"] is (not expected_failures)


def test_embedding_dimension_norm_and_nan():
    t = BlessingThresholds()
    names = lambda checks: {c["name"] for c in checks if not c["passed"]}  # noqa: E731
    assert names(embedding_checks("video", unit_vectors(d=64), t)) == {"video_dimension"}
    off = unit_vectors()
    off[3] *= 1.002  # norm 1.002: off by 2e-3, over the 1e-3 tolerance
    assert names(embedding_checks("video", off, t)) == {"video_unit_norm"}
    off[3] *= 1.0005 / 1.002  # off by 5e-4: inside
    assert names(embedding_checks("video", off, t)) == set()
    nan = unit_vectors()
    nan[0, 0] = np.nan
    assert names(embedding_checks("user", nan, t)) == {"user_no_nan"}


def test_collapse_is_caught_by_mean_cosine_and_near_duplicates():
    t = BlessingThresholds()
    collapsed = np.tile(unit_vectors(1), (50, 1))
    checks = {c["name"]: c for c in embedding_checks("video", collapsed, t)}
    assert checks["video_mean_cosine"]["value"] == pytest.approx(1.0)
    assert not checks["video_mean_cosine"]["passed"]
    assert checks["video_near_duplicates"]["value"] == pytest.approx(1.0)
    assert not checks["video_near_duplicates"]["passed"]
    # Mean pairwise cosine, by hand: e1, e1, e2 -> pairs (e1,e1)=1, (e1,e2)=0, (e1,e2)=0: 1/3.
    three = np.zeros((3, 768))
    three[0, 0] = three[1, 0] = three[2, 1] = 1.0
    checks = {c["name"]: c for c in embedding_checks("video", three, t)}
    assert checks["video_mean_cosine"]["value"] == pytest.approx(1 / 3)


def test_identical_embeddings_of_identical_inputs_are_not_near_duplicates():
    t = BlessingThresholds()
    # A third of the users have no history yet: one shared vector. The rest are distinct.
    cold = np.tile(unit_vectors(1, seed=5), (100, 1))
    vectors = np.concatenate([cold, unit_vectors(200, seed=6)])
    checks = {c["name"]: c for c in embedding_checks("user", vectors, t)}
    assert checks["user_near_duplicates"]["passed"]
    assert checks["user_near_duplicates"]["value"] == 0.0
    # Nearly equal but different vectors still count.
    rng = np.random.default_rng(7)
    close = cold + rng.normal(0, 1e-4, cold.shape)
    close /= np.linalg.norm(close, axis=1, keepdims=True)
    checks = {c["name"]: c for c in embedding_checks("user", close[:50], t)}
    assert not checks["user_near_duplicates"]["passed"]


def test_unknown_threshold_names_are_refused():
    with pytest.raises(ValueError, match="unknown blessing thresholds: min_aucc"):
        BlessingThresholds.from_dict({"min_aucc": 0.7})
