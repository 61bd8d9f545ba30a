"""The hyper-parameter search (`swiperec.model.tune`): the search space's parsing, and the study
around a stand-in for `train()` (no TensorFlow: each "trial" writes a model card whose
validation AUC is a known function of its config), so the choice of the best trial, the
published folder, the card's "tuning" section and the clean-up are checked exactly."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest

import swiperec.model.tune as tune_module
from swiperec.model.config import TrainConfig
from swiperec.model.train import MODEL_CARD, TrainResult
from swiperec.model.tune import DEFAULT_SEARCH_SPACE, parse_search_space, tune

# -- the search space -----------------------------------------------------------------------------


def test_the_default_space_is_the_documented_one_and_parses():
    space = parse_search_space(None)
    assert set(space) == {"learning_rate", "dropout", "temperature", "weight_decay",
                          "video_id_min_count", "pointwise_weight", "video_id_dropout",
                          "bias_prior_std"}  # fmt: skip
    assert space["learning_rate"] == {"type": "float", "low": 5e-4, "high": 5e-3, "log": True,
                                      "step": None}  # fmt: skip
    assert space["dropout"] == {"type": "float", "low": 0.0, "high": 0.3, "log": False,
                                "step": None}  # fmt: skip
    assert space["temperature"]["log"] and space["weight_decay"]["log"]
    assert (space["weight_decay"]["low"], space["weight_decay"]["high"]) == (1e-7, 1e-4)
    assert space["video_id_min_count"] == {"type": "categorical", "choices": [0, 5, 20]}
    assert (space["pointwise_weight"]["low"], space["pointwise_weight"]["high"]) == (0.5, 2.0)
    assert space["bias_prior_std"]["log"] and not space["video_id_dropout"]["log"]
    assert parse_search_space({}) == parse_search_space("{}") == parse_search_space("  ") == space
    assert parse_search_space(DEFAULT_SEARCH_SPACE) == space
    assert parse_search_space(space) == space  # a model card's record parses to itself
    with pytest.raises(ValueError, match="dropout: type 'int' does not fit"):
        parse_search_space({"dropout": {**space["dropout"], "type": "int"}})


def test_a_given_space_replaces_the_default_and_int_fields_sample_ints():
    text = json.dumps({"patience": {"low": 1, "high": 4}, "batch_size": {"choices": [64, 128]},
                       "learning_rate": {"low": 1e-3, "high": 4e-3, "step": 1e-3},
                       "logq_correction": {"choices": [True, False]}})  # fmt: skip
    space = parse_search_space(text)
    assert list(space) == ["patience", "batch_size", "learning_rate", "logq_correction"]
    assert space["patience"] == {"type": "int", "low": 1, "high": 4, "log": False, "step": None}
    assert space["learning_rate"]["step"] == 1e-3
    assert space["logq_correction"]["choices"] == [True, False]


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ('{"lr": {"low": 1e-4, "high": 1e-3}}', "'lr' is not a TrainConfig field"),
        ("{not json", "search space is not valid JSON"),
        ("[1, 2]", "search space must be a JSON object"),
        ('{"dropout": 0.2}', 'dropout: expected {"low"'),
        ('{"dropout": {"low": 0.1}}', "dropout: a range needs both low and high"),
        ('{"dropout": {"low": 0.3, "high": 0.1}}', "dropout: low must be below high"),
        ('{"dropout": {"low": 0.1, "high": 0.1}}', "dropout: low must be below high"),
        ('{"dropout": {"low": "a", "high": 0.1}}', "dropout: low must be a finite number"),
        ('{"dropout": {"low": 0, "high": 0.2, "spread": 1}}', r"unknown keys \['spread'\]"),
        ('{"dropout": {"low": 0, "high": 1.5}}', r"dropout: 1.5 is not a valid value.*\[0, 1\)"),
        ('{"learning_rate": {"low": 0, "high": 0.1, "log": true}}', "needs low > 0"),
        ('{"learning_rate": {"low": 1e-4, "high": 0.1, "log": "yes"}}', "log must be true"),
        ('{"learning_rate": {"low": 1e-4, "high": 0.1, "log": true, "step": 1e-4}}',
         "log or step, not both"),
        ('{"patience": {"low": 1.5, "high": 3}}', "patience: low must be an int"),
        ('{"batch_size": {"choices": []}}', "choices must be a non-empty list"),
        ('{"batch_size": {"choices": [64, 0]}}', "batch_size: 0 is not a valid value"),
        ('{"batch_size": {"choices": [[64]]}}', "choices must be numbers"),
        ('{"batch_size": {"choices": [64], "low": 1}}', "choices take no other keys"),
        ('{"hidden_units": {"choices": [32]}}', "hidden_units: only fields with a number"),
        ('{"logq_correction": {"low": 0, "high": 1}}', "a boolean field takes"),
        ('{"exposure_prior": {"low": 0, "high": 1}}', "exposure_prior: a serving setting"),
        ('{"new_release_bonus": {"low": 0, "high": 3}}', "new_release_bonus: a serving setting"),
    ],
)  # fmt: skip
def test_a_bad_search_space_is_a_clear_value_error(space, message):
    with pytest.raises(ValueError, match=message):
        parse_search_space(space)


def test_every_problem_is_named_at_once():
    with pytest.raises(ValueError) as err:
        parse_search_space({"lr": {"low": 1, "high": 2}, "dropout": {"low": 0.5, "high": 0.1}})
    assert "'lr' is not a TrainConfig field" in str(err.value)
    assert "dropout: low must be below high" in str(err.value)


def test_bounds_are_checked_against_the_base_config():
    # A pointwise weight of 0 is fine unless the base config has no retrieval loss either.
    space = {"pointwise_weight": {"choices": [0.0, 1.0]}}
    parse_search_space(space)
    with pytest.raises(ValueError, match="cannot both be 0"):
        parse_search_space(space, TrainConfig(retrieval_weight=0.0))


# -- the study, around a stand-in for train() -----------------------------------------------------


def fake_auc(config: TrainConfig) -> float:
    """A smooth score with its peak inside the default space."""
    return round(0.9 - abs(math.log10(config.learning_rate / 2e-3)) - abs(config.dropout - 0.1), 6)


class FakeTrain:
    """Stands in for `swiperec.model.train.train`: writes a folder with a model card."""

    def __init__(self, fail_on: int | None = None, fail_with: BaseException | None = None):
        self.calls, self.fail_on, self.fail_with = [], fail_on, fail_with

    def __call__(self, transform_dir, examples_dir, model_dir, config, verbose=2):
        self.calls.append((model_dir, config))
        if self.fail_on == len(self.calls):
            raise self.fail_with
        os.makedirs(os.path.join(model_dir, "user_tower"))
        card = {"hyperparameters": config.to_dict(),
                "metrics": {"validation": {"auc": fake_auc(config)}},
                "training": {"epochs_run": 2, "best_epoch": 1}}  # fmt: skip
        with open(os.path.join(model_dir, MODEL_CARD), "w") as handle:
            json.dump(card, handle)
        return TrainResult(model_dir, card, model=f"model of {model_dir}", catalogue=None)


@pytest.fixture
def fake_train(monkeypatch):
    fake = FakeTrain()
    monkeypatch.setattr(tune_module, "train", fake)
    return fake


BASE = TrainConfig(hidden_units=(32,), bag_dim=8, batch_size=128, epochs=2)


def test_the_best_trial_is_published_with_the_study_in_its_card(fake_train, tmp_path):
    model_dir = str(tmp_path / "model")
    result = tune("t", "e", model_dir, BASE, trials=5, search_space=None, seed=3, verbose=0)
    assert len(fake_train.calls) == 5
    # every trial trained in the scratch folder beside model_dir, on the base config + its params
    scratch = str(tmp_path / ".model.tuning")
    assert all(os.path.dirname(folder) == scratch for folder, _ in fake_train.calls)
    card = json.loads((tmp_path / "model" / MODEL_CARD).read_text())
    assert card == result.card and result.model_dir == model_dir
    tuning = card["tuning"]
    assert tuning["trials_run"] == 5 and len(tuning["trials"]) == 5
    assert tuning["search_space"] == parse_search_space(None)
    assert tuning["sampler"] == {"name": "TPESampler", "seed": 3}
    aucs = [fake_auc(config) for _, config in fake_train.calls]
    for trial, (_, config), auc in zip(tuning["trials"], fake_train.calls, aucs, strict=True):
        assert trial["state"] == "COMPLETE" and trial["validation_auc"] == auc
        assert trial["epochs_run"] == 2 and trial["best_epoch"] == 1
        assert set(trial["params"]) == set(DEFAULT_SEARCH_SPACE)
        assert config == TrainConfig.from_dict({**BASE.to_dict(), **trial["params"]})
        assert 5e-4 <= trial["params"]["learning_rate"] <= 5e-3
        assert trial["params"]["video_id_min_count"] in (0, 5, 20)
    best = aucs.index(max(aucs))
    assert tuning["best_trial"] == best and tuning["best_validation_auc"] == max(aucs)
    assert tuning["best_params"] == tuning["trials"][best]["params"]
    assert card["hyperparameters"] == tuning["chosen_config"]
    assert card["hyperparameters"] == {**BASE.to_dict(), **tuning["best_params"]}
    assert result.model == f"model of {fake_train.calls[best][0]}"  # the best trial's model
    # published by a rename, and nothing else left beside it
    assert sorted(os.listdir(tmp_path)) == ["model"]
    assert sorted(os.listdir(model_dir)) == [MODEL_CARD, "user_tower"]


def test_the_sampler_is_seeded(fake_train, tmp_path):
    tune("t", "e", str(tmp_path / "a"), BASE, trials=3, search_space=None, seed=7, verbose=0)
    tune("t", "e", str(tmp_path / "b"), BASE, trials=3, search_space=None, seed=7, verbose=0)
    first, second = fake_train.calls[:3], fake_train.calls[3:]
    assert [c for _, c in first] == [c for _, c in second]
    tune("t", "e", str(tmp_path / "c"), BASE, trials=3, search_space=None, seed=8, verbose=0)
    assert [c for _, c in fake_train.calls[6:]] != [c for _, c in first]


def test_a_bad_search_space_fails_before_any_training(fake_train, tmp_path):
    with pytest.raises(ValueError, match="'lr' is not a TrainConfig field"):
        tune("t", "e", str(tmp_path / "m"), BASE, trials=2, search_space='{"lr": {}}')
    with pytest.raises(ValueError, match="at least 1 trial"):
        tune("t", "e", str(tmp_path / "m"), BASE, trials=0, search_space=None)
    assert fake_train.calls == [] and os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "failure", [OSError("disk full"), KeyboardInterrupt()], ids=["error", "interrupt"]
)
def test_a_failed_trial_leaves_the_earlier_model_and_no_scratch(monkeypatch, tmp_path, failure):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / MODEL_CARD).write_text('{"earlier": true}')
    monkeypatch.setattr(tune_module, "train", FakeTrain(fail_on=3, fail_with=failure))
    with pytest.raises(type(failure)):
        tune("t", "e", str(model_dir), BASE, trials=4, search_space=None, verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["model"]
    assert (model_dir / MODEL_CARD).read_text() == '{"earlier": true}'


def test_sigterm_between_trials_still_removes_the_scratch_folder(monkeypatch, tmp_path):
    fake = FakeTrain()

    def train_then_terminated(*args, **kwargs):
        result = fake(*args, **kwargs)
        if len(fake.calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(tune_module, "train", train_then_terminated)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        tune("t", "e", str(tmp_path / "model"), BASE, trials=4, search_space=None, verbose=0)
    assert len(fake.calls) == 2 and os.listdir(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_scratch_folder_left_by_a_killed_run_is_removed(fake_train, tmp_path):
    (tmp_path / ".model.tuning" / "trial-000").mkdir(parents=True)
    tune("t", "e", str(tmp_path / "model"), BASE, trials=1, search_space=None, verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_trials_with_no_usable_auc_fail_the_search(monkeypatch, tmp_path):
    fake = FakeTrain()

    def nan_auc(*args, **kwargs):
        result = fake(*args, **kwargs)
        result.card["metrics"]["validation"]["auc"] = float("nan")
        return result

    monkeypatch.setattr(tune_module, "train", nan_auc)
    with pytest.raises(Exception, match="no tuning trial finished with a validation AUC"):
        tune("t", "e", str(tmp_path / "model"), BASE, trials=2, search_space=None, verbose=0)
    assert os.listdir(tmp_path) == []


def test_the_train_step_refuses_a_search_space_without_trials():
    from swiperec.pipeline import steps

    space = {"dropout": {"low": 0.0, "high": 0.2}}
    with pytest.raises(ValueError, match="tuning_trials is 0"):
        steps.train("t", "e", "m", search_space=space)
    with pytest.raises(ValueError, match="tuning_trials must be >= 0"):
        steps.train("t", "e", "m", tuning_trials=-1, search_space=space)
