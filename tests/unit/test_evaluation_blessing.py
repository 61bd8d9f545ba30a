"""Blessing decisions at and around their thresholds."""

import numpy as np
import pytest

from swiperec.evaluation.blessing import BlessingThresholds, bless, embedding_checks

# Baselines' (like-vs-nope AUC, Recall@50): the like rate has the best AUC, ALS the best recall.
BASELINES = {"popularity": (0.55, 0.05), "like_rate": (0.62, 0.04),
             "matrix_factorization": (0.58, 0.07)}  # fmt: skip


def results(auc=0.70, recall=0.10, nope_auc=0.65, share=None, baselines=None):
    """Evaluation results: the model's AUCs (like vs all, like vs nope) and Recall@50, and the
    baselines' as in `BASELINES` (with `baselines` replacing some)."""
    out = {
        "classification": {"model": {"like_vs_all": {"roc_auc": auc},
                                     "like_vs_nope": {"roc_auc": nope_auc}}},
        "retrieval": {"model": {"recall@50": recall}},
    }  # fmt: skip
    for name, (b_auc, b_recall) in {**BASELINES, **(baselines or {})}.items():
        out["classification"][name] = {"like_vs_all": {"roc_auc": 0.9},
                                        "like_vs_nope": {"roc_auc": b_auc}}  # fmt: skip
        out["retrieval"][name] = {"recall@50": b_recall}
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
    blessing = bless(results(auc=auc), GOOD, T)
    assert blessing["blessed"] is blessed
    if not blessed:
        assert failed(blessing) == {"auc"}
        assert "below the minimum 0.6" in blessing["reasons"][0]


def test_recall_minimum():
    assert failed(bless(results(recall=0.0499), GOOD, T)) == {
        "recall@50",
        "beats_baselines_recall@50",
    }
    low = {name: (0.5, 0.01) for name in BASELINES}
    assert failed(bless(results(recall=0.0499, baselines=low), GOOD, T)) == {"recall@50"}


def checks_by_name(blessing):
    return {c["name"]: c for c in blessing["checks"]}


def test_the_model_must_beat_the_best_baseline():
    blessing = bless(results(), GOOD, T)
    auc, recall = (checks_by_name(blessing)[name] for name in
                   ("beats_baselines_like_vs_nope_auc", "beats_baselines_recall@50"))  # fmt: skip
    assert (auc["value"], auc["limit"], auc["best_baseline"]) == (
        0.65,
        0.62,
        {"name": "like_rate", "value": 0.62},
    )
    assert (recall["value"], recall["limit"], recall["best_baseline"]) == (
        0.10,
        0.07,
        {"name": "matrix_factorization", "value": 0.07},
    )
    # Popularity is beaten, the like rate is not: the like rate's AUC is the one to beat.
    blessing = bless(results(nope_auc=0.61), GOOD, T)
    assert failed(blessing) == {"beats_baselines_like_vs_nope_auc"}
    assert blessing["reasons"] == [
        "like-vs-nope AUC 0.61 does not beat the best baseline's (like_rate 0.62) + margin 0.0"
    ]
    # Equal to the best is not better than it; the like-vs-all AUC does not count here.
    assert failed(bless(results(nope_auc=0.62), GOOD, T)) == {"beats_baselines_like_vs_nope_auc"}
    assert failed(bless(results(recall=0.07), GOOD, T)) == {"beats_baselines_recall@50"}
    assert "(matrix_factorization 0.07)" in bless(results(recall=0.07), GOOD, T)["reasons"][0]
    relaxed = BlessingThresholds(min_auc=0.6, must_beat_baselines=False)
    blessing = bless(results(nope_auc=0.5, recall=0.01), GOOD, relaxed)
    assert blessing["blessed"]
    assert not any(c["name"].startswith("beats_") for c in blessing["checks"])


@pytest.mark.parametrize(
    ("nope_auc", "recall", "expected_failures"),
    [
        (0.6401, 0.0771, set()),  # above 0.62 + 0.02 and 0.07 * 1.1
        (0.64, 0.08, {"beats_baselines_like_vs_nope_auc"}),  # exactly at the limit: not above
        (0.70, 0.077, {"beats_baselines_recall@50"}),
    ],
)
def test_margins_over_the_best_baseline(nope_auc, recall, expected_failures):
    t = BlessingThresholds(
        min_auc=0.6, min_auc_margin_over_baselines=0.02, min_recall_margin_over_baselines=0.1
    )
    blessing = bless(results(nope_auc=nope_auc, recall=recall), GOOD, t)
    assert failed(blessing) == expected_failures
    checks = checks_by_name(blessing)
    assert checks["beats_baselines_like_vs_nope_auc"]["limit"] == 0.64
    assert checks["beats_baselines_recall@50"]["limit"] == 0.077
    if "beats_baselines_recall@50" in expected_failures:
        assert blessing["reasons"] == [
            "Recall@50 0.077 does not beat the best baseline's (matrix_factorization 0.07) "
            "x (1 + margin 0.1)"
        ]


def test_baselines_without_a_value_are_left_out():
    # ALS scored nothing, and an evaluation made before the like rate has none.
    unscored = results(recall=0.06, baselines={"matrix_factorization": (None, None)})
    del unscored["classification"]["like_rate"], unscored["retrieval"]["like_rate"]
    checks = checks_by_name(bless(unscored, GOOD, T))
    assert checks["beats_baselines_like_vs_nope_auc"]["best_baseline"] == {
        "name": "popularity",
        "value": 0.55,
    }
    assert checks["beats_baselines_recall@50"]["passed"]
    assert checks["beats_baselines_recall@50"]["limit"] == 0.05
    # No baseline at all: nothing to beat, but the model needs a value.
    alone = results(baselines={name: (None, None) for name in BASELINES})
    checks = checks_by_name(bless(alone, GOOD, T))
    assert checks["beats_baselines_recall@50"]["passed"]
    assert checks["beats_baselines_recall@50"]["best_baseline"] is None
    assert not checks_by_name(bless(results(nope_auc=None), GOOD, T))[
        "beats_baselines_like_vs_nope_auc"
    ]["passed"]


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


def test_thresholds_stored_with_the_old_name_load():
    old = BlessingThresholds.from_dict({"min_auc": 0.0, "must_beat_popularity": False})
    assert old == BlessingThresholds(min_auc=0.0, must_beat_baselines=False)
    assert "must_beat_popularity" not in old.to_dict()
    assert BlessingThresholds.from_dict(old.to_dict()) == old
