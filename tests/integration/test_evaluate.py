"""The evaluator on the session's real transform output and small trained model."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from swiperec.data.synthetic import generate
from swiperec.evaluation.data import load_evaluation_data
from swiperec.evaluation.evaluate import KS, TASKS, evaluate_data, scorers, top_lists
from tests.conftest import TINY_DATA

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def data(trained, transformed):
    return load_evaluation_data(trained.model_dir, transformed.examples_dir)


@pytest.fixture(scope="module")
def truth():
    return generate(TINY_DATA).ground_truth


@pytest.fixture(scope="module")
def results(data, truth):
    return evaluate_data(data, truth)


def test_the_test_period_is_assembled_from_examples_and_history(data, transformed):
    counts = transformed.metadata["counts"]["test"]
    assert len(data.example_label) == counts["examples"]
    assert (data.example_source == "nope").sum() == counts["nope"]
    assert data.video_embeddings.shape == (TINY_DATA.videos, 768)
    # Every test user with a like has it as relevant, never among the videos decided before.
    for relevant, excluded in zip(data.relevant, data.excluded, strict=True):
        assert not np.intersect1d(relevant, excluded).size
    assert sum(len(r) for r in data.relevant) > 0
    assert data.decisions_before.max() > 0


def test_no_ranking_returns_a_video_the_user_already_decided(data, truth):
    for name, (_, users) in scorers(data, truth).items():
        top = top_lists(data, users)
        for u, row in enumerate(top):
            ranked = row[row >= 0]
            assert not np.isin(ranked, data.excluded[u]).any(), name
            assert len(np.unique(ranked)) == len(ranked)


def test_every_scorer_gets_every_metric(results):
    assert set(results["classification"]) == {
        "model", "popularity", "matrix_factorization", "oracle"
    }  # fmt: skip
    for name, tasks in results["classification"].items():
        assert set(tasks) == set(TASKS)
        for task, values in tasks.items():
            assert 0 <= values["roc_auc"] <= 1 and 0 <= values["pr_auc"] <= 1, (name, task)
    for name, values in results["retrieval"].items():
        for k in KS:
            for metric in ("recall", "ndcg", "map", "hitrate"):
                assert 0 <= values[f"{metric}@{k}"] <= 1, (name, metric, k)
        assert values["recall@10"] <= values["recall@50"] <= values["recall@100"]
    # The ceiling is the ceiling: the oracle ranks likes above negatives best.
    oracle = results["classification"]["oracle"]["like_vs_all"]["roc_auc"]
    assert oracle >= results["classification"]["popularity"]["like_vs_all"]["roc_auc"]
    assert 0 < results["share_of_achievable_auc"]["like_vs_all"] < 1.5
    segments = results["segments"]
    assert {"pseudo_users", "real_users", "new_videos", "old_videos"} <= set(segments)
    assert segments["real_users"]["model"]["retrieval"]["users_evaluated"] > 0
    # The confusion matrix and the score histograms each count every test example once.
    total = results["counts"]["test_examples"]
    assert sum(map(sum, results["confusion_matrix"])) == total
    distributions = results["score_distributions"]
    assert sum(sum(distributions[g]) for g in ("like", "nope", "sampled")) == total
