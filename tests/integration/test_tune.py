"""The hyper-parameter search on the session's real transform output: two small trials through
the KFP train component (as a pipeline step with `tuning_trials` runs it), and the CLI's refusal
of a bad search space. The study's logic on its own: tests/unit/test_tune.py."""

import json
import os
from dataclasses import replace

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import swiperec.model.tune as tune_module
from swiperec.model.config import TrainConfig
from swiperec.model.train import read_model_card
from swiperec.model.tune import DEFAULT_SEARCH_SPACE
from tests.conftest import SMALL_TRAIN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Two trials of at most two short epochs each (~25 s a trial, most of it tracing and export).
BASE = replace(SMALL_TRAIN, epochs=2, patience=1, steps_per_epoch=2)


def test_the_train_step_tunes_and_publishes_the_best_trial(transform_component, tmp_path,
                                                           monkeypatch):  # fmt: skip
    from kfp import dsl

    from components.train import train as component

    trained = []

    def counting_train(*args, **kwargs):
        trained.append(args[2])
        return train(*args, **kwargs)

    train = tune_module.train
    monkeypatch.setattr(tune_module, "train", counting_train)
    model = dsl.Model(uri=str(tmp_path / "model"))
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics"))
    component.python_func(
        transform_graph=transform_component.transform_graph,
        examples=transform_component.examples, model=model, metrics=metrics,
        train_config_json=json.dumps(BASE.to_dict()), tuning_trials=2,
    )  # fmt: skip
    assert len(trained) == 2  # the study ran its trials, each in its own scratch folder
    assert len(set(trained)) == 2 and all(".model.tuning" in folder for folder in trained)
    card = read_model_card(model.path)
    tuning = card["tuning"]
    assert tuning["trials_run"] == 2 and tuning["search_space"]
    assert set(tuning["search_space"]) == set(DEFAULT_SEARCH_SPACE)
    assert [t["state"] for t in tuning["trials"]] == ["COMPLETE"] * 2
    aucs = [t["validation_auc"] for t in tuning["trials"]]
    assert all(0 < auc <= 1 for auc in aucs)
    assert all(1 <= t["epochs_run"] <= 2 for t in tuning["trials"])
    # The published model is the trial with the highest validation AUC, and its card says so.
    best = tuning["trials"][tuning["best_trial"]]
    assert best["validation_auc"] == max(aucs) == tuning["best_validation_auc"]
    assert card["metrics"]["validation"]["auc"] == pytest.approx(max(aucs), abs=1e-6)
    assert card["training"]["epochs_run"] == best["epochs_run"]
    assert tuning["best_params"] == best["params"]
    assert card["hyperparameters"] == tuning["chosen_config"]
    assert card["hyperparameters"] == {**BASE.to_dict(), **best["params"]}
    assert TrainConfig.from_dict(card["hyperparameters"]) != BASE
    for name in ("user_tower", "video_tower"):
        assert os.path.exists(os.path.join(model.path, name, "saved_model.pb"))
    # The step records the search; no scratch or partial folder is left.
    assert model.metadata["tuning/trials"] == 2
    assert model.metadata["step/parameters"]["tuning_trials"] == 2
    assert metrics.metadata["validation/auc"] == card["metrics"]["validation"]["auc"]
    assert metrics.metadata["tuning/trials"] == 2
    assert os.listdir(tmp_path) == ["model"]


def test_the_train_command_refuses_a_bad_search_space_before_training(
    transformed, tmp_path, capsys, monkeypatch
):
    from swiperec.cli import main
    from swiperec.pipeline import steps

    monkeypatch.setattr(steps, "train", lambda *a, **k: pytest.fail("trained"))
    common = ["train", "--transform", transformed.transform_dir, "--examples",
              transformed.examples_dir, "--out", str(tmp_path / "m"),
              "--tuning-trials", "2"]  # fmt: skip
    for space, message in [
        ('{"lr": {"low": 1e-4, "high": 1e-3}}', "'lr' is not a TrainConfig field"),
        ('{"dropout": {"low": 0.3, "high": 0.1}}', "dropout: low must be below high"),
        ("{oops", "--search-space is not valid JSON"),
    ]:
        assert main([*common, "--search-space", space]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []
