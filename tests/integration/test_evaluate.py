"""The evaluator on the session's real transform output and small trained model."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from swiperec.data.synthetic import generate
from swiperec.evaluation.data import load_evaluation_data
from swiperec.evaluation.evaluate import KS, TASKS, evaluate, evaluate_data, scorers, top_lists
from tests.conftest import TINY_DATA

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def data(trained, transformed, snapshot_dir):
    return load_evaluation_data(
        trained.model_dir, transformed.examples_dir, transformed.transform_dir, snapshot_dir
    )


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


def test_the_like_rate_counts_likes_and_nopes_before_the_test_period(data, snapshot_dir):
    from swiperec.features.config import FeatureConfig
    from swiperec.features.events import load_snapshot

    _, events, _ = load_snapshot(snapshot_dir, FeatureConfig())
    before = events.time_us < int(np.datetime64(data.test_start.rstrip("Z"), "us").astype(np.int64))
    assert data.like_counts.sum() == (before & (events.label == 1)).sum()
    assert data.nope_counts.sum() == (before & (events.label == 0)).sum() > 0
    assert data.nope_counts.shape == data.like_counts.shape == data.video_ids.shape
    # The scorer: (likes + 20 * overall rate) / (swipes + 20), per video, for every user alike.
    rate = data.like_counts.sum() / (data.like_counts.sum() + data.nope_counts.sum())
    expected = (data.like_counts + 20 * rate) / (data.like_counts + data.nope_counts + 20)
    pairs, users = scorers(data)["like_rate"]
    index = np.arange(len(data.example_label))
    np.testing.assert_allclose(pairs(index), expected[data.example_video_row], rtol=1e-6)
    np.testing.assert_allclose(users(0), expected, rtol=1e-6)


def test_served_lists_weigh_each_videos_swipe_evidence_at_the_test_start(data, snapshot_dir):
    from swiperec.features.config import FeatureConfig
    from swiperec.features.events import load_snapshot
    from swiperec.features.video_evidence import evidence

    _, events, _ = load_snapshot(snapshot_dir, FeatureConfig())
    start = int(np.datetime64(data.test_start.rstrip("Z"), "us").astype(np.int64))
    # Real users' swipes before the test start, the latest per user and video (the tiny data
    # has no repeats: one swipe, one vote).
    real = ~events.is_pseudo & (events.time_us < start)
    rows = np.searchsorted(data.video_ids, events.video_id[real])
    likes = np.bincount(rows[events.label[real] == 1], minlength=len(data.video_ids))
    nopes = np.bincount(rows[events.label[real] == 0], minlength=len(data.video_ids))
    assert data.match_weights.shape == (8,) and np.any(data.match_weights[6:] != 0)
    np.testing.assert_allclose(data.video_evidence, evidence(likes, nopes), rtol=1e-12)
    assert (likes + nopes).max() > 0


def test_served_lists_add_the_exposure_prior_to_the_swipes_weight_only(data, trained):
    from swiperec.model.train import read_model_card

    prior = read_model_card(trained.model_dir)["hyperparameters"]["exposure_prior"]
    assert prior > 0
    np.testing.assert_array_equal(data.served_weights[:7], data.match_weights[:7])
    assert data.served_weights[7] == pytest.approx(data.match_weights[7] + prior)
    # and new releases with the model's exploration bonus
    card = read_model_card(trained.model_dir)
    assert data.new_release_bonus == card["hyperparameters"]["new_release_bonus"] > 0


def test_the_validation_period_is_measured_as_of_its_start(
    data, trained, transformed, snapshot_dir
):
    from swiperec.evaluation.data import load_evaluation_data
    from swiperec.features.config import FeatureConfig
    from swiperec.features.events import load_snapshot

    validation = load_evaluation_data(trained.model_dir, transformed.examples_dir,
                                      transformed.transform_dir, snapshot_dir,
                                      period="validation")  # fmt: skip
    assert validation.test_start == data.validation_start
    start = int(np.datetime64(data.validation_start.rstrip("Z"), "us").astype(np.int64))
    # Its users and their histories as of its start: every decision before it, none after.
    _, events, _ = load_snapshot(snapshot_dir, FeatureConfig())
    before = {}
    for key, time_us in zip(events.user_key.tolist(), events.time_us.tolist(), strict=True):
        before[key] = before.get(key, 0) + (time_us < start)
    assert validation.decisions_before.tolist() == [before[k] for k in validation.user_keys]
    assert validation.example_label.max() == 1 and validation.example_label.min() == 0
    with pytest.raises(ValueError, match="period"):
        load_evaluation_data(trained.model_dir, transformed.examples_dir,
                             transformed.transform_dir, snapshot_dir, period="train")  # fmt: skip


def test_no_ranking_returns_a_video_the_user_already_decided(data, truth):
    for name, (_, users) in scorers(data, truth).items():
        top = top_lists(data, users)
        for u, row in enumerate(top):
            ranked = row[row >= 0]
            assert not np.isin(ranked, data.excluded[u]).any(), name
            assert len(np.unique(ranked)) == len(ranked)


def test_every_scorer_gets_every_metric(results):
    assert set(results["classification"]) == {
        "model", "model_cosine", "popularity", "like_rate", "matrix_factorization", "oracle"
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


@pytest.fixture(scope="module")
def truth_file(truth, tmp_path_factory):
    return str(truth.save(tmp_path_factory.mktemp("truth") / "ground_truth.npz"))


def test_evaluate_command_prints_the_table_and_writes_the_outputs(
    trained, transformed, truth_file, tmp_path
):
    out, report = tmp_path / "evaluation", tmp_path / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "swiperec.cli", "evaluate", "--model", trained.model_dir,
         "--examples", transformed.examples_dir, "--out", str(out), "--report", str(report),
         "--ground-truth", truth_file, "--min-auc", "0.99"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for scorer in ("model", "popularity", "like_rate", "matrix_factorization", "oracle"):
        assert f"  {scorer}" in result.stdout
    # An impossible minimum AUC: not blessed, and the reason says why.
    assert "NOT BLESSED" in result.stdout and "below the minimum 0.99" in result.stdout
    blessing = json.loads((out / "blessing.json").read_text())
    assert blessing["blessed"] is False and "auc" in {
        c["name"] for c in blessing["checks"] if not c["passed"]
    }
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["oracle"]["ground_truth"] == truth_file
    html = report.read_text()
    assert html == (out / "report.html").read_text() and "data:image/png;base64," in html


def test_a_ground_truth_of_other_data_is_set_aside_with_a_note(
    trained, transformed, snapshot_dir, tmp_path
):
    from swiperec.data.synthetic import SyntheticConfig

    other = generate(SyntheticConfig(videos=30, users=3, pseudo_users=2, seed=99))
    path = other.ground_truth.save(tmp_path / "other.npz")
    results = evaluate(trained.model_dir, transformed.examples_dir, transformed.transform_dir,
                       snapshot_dir, ground_truth=str(path))  # fmt: skip
    assert "oracle" not in results["classification"]
    assert "does not match" in results["oracle"]["note"]


def test_component_runs_under_the_kfp_local_runner(
    trained, transformed, snapshot_dir, truth_file, tmp_path
):
    from kfp import dsl, local

    from components.evaluate import evaluate as evaluate_component

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))

    @dsl.pipeline
    def evaluate_only(
        model_uri: str, examples_uri: str, transform_uri: str, snapshot_uri: str, truth: str
    ) -> bool:
        model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
        examples = dsl.importer(artifact_uri=examples_uri, artifact_class=dsl.Dataset)
        graph = dsl.importer(artifact_uri=transform_uri, artifact_class=dsl.Artifact)
        snapshot = dsl.importer(artifact_uri=snapshot_uri, artifact_class=dsl.Dataset)
        task = evaluate_component(
            model=model.output,
            examples=examples.output,
            transform_graph=graph.output,
            snapshot=snapshot.output,
            ground_truth_uri=truth,
            thresholds_json='{"min_auc": 0.0, "must_beat_popularity": false, '
            '"min_share_of_achievable_auc": -10}',
        )
        return task.outputs["blessed"]

    run = evaluate_only(
        model_uri=trained.model_dir, examples_uri=transformed.examples_dir,
        transform_uri=transformed.transform_dir, snapshot_uri=snapshot_dir, truth=truth_file,
    )  # fmt: skip
    assert run.output is True  # thresholds any model passes: blessed
    [blessing] = glob.glob(str(tmp_path / "**" / "blessing.json"), recursive=True)
    assert json.loads(Path(blessing).read_text())["blessed"] is True
    [report] = glob.glob(str(tmp_path / "**" / "report"), recursive=True)
    assert "data:image/png;base64," in Path(report).read_text()


def test_evaluations_go_to_the_registry_and_compare_with_production(
    trained, transformed, conn, db_url, tmp_path, monkeypatch, capsys
):
    from swiperec.cli import main
    from swiperec.registry.versions import mark_production

    # `swiperec evaluate` in this process (`swiperec.cli.main`, what `python -m swiperec.cli`
    # exits with; the command above runs it as a process of its own).
    monkeypatch.setenv("DATABASE_URL", db_url)

    def run(version):
        capsys.readouterr()
        code = main(["evaluate", "--model", trained.model_dir,
                     "--examples", transformed.examples_dir, "--out", str(tmp_path / version),
                     "--version", version, "--min-auc", "0"])  # fmt: skip
        result = capsys.readouterr()
        assert code == 0, result.err[-2000:]
        return result.out

    assert "registry      v1 recorded as" in run("v1")
    with conn, conn.cursor() as cur:
        cur.execute("insert into serving_state (model_version) values ('v1')")
        mark_production(cur, "v1")
    assert "compared with v1, the version now serving" in run("v2")
    blessing = json.loads((tmp_path / "v2" / "blessing.json").read_text())
    assert blessing["compared_to_production"]
    assert "auc_vs_production" in {c["name"] for c in blessing["checks"]}
