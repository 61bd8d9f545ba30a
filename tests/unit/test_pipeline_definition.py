"""The training pipeline's definition: the committed YAML is current, names one image, wires
the steps in order with the blessing gate, and takes the parameters the CLI passes."""

from __future__ import annotations

import pytest
import yaml

from pipelines.__main__ import COMPILED as SOURCE
from pipelines.__main__ import MONITORING, compile_monitoring, compile_pipeline
from swiperec.pipeline.run import (
    COMPILED,
    PipelineError,
    check_arguments,
    parse_arguments,
    pipeline_parameters,
)
from swiperec.version import PIPELINE_IMAGE


@pytest.fixture(scope="module")
def spec():
    return yaml.safe_load(COMPILED.read_text())


def test_the_committed_yaml_is_what_the_definition_compiles_to(tmp_path):
    fresh = compile_pipeline(tmp_path / "pipeline.yaml")
    assert fresh.read_text() == SOURCE.read_text(), (
        "pipelines/compiled/two_tower_training.yaml is stale: run `make compile` and commit the "
        "result"
    )


def test_the_monitoring_pipeline_is_current_and_two_uncached_steps(tmp_path):
    fresh = compile_monitoring(tmp_path / "monitoring.yaml")
    assert fresh.read_text() == MONITORING.read_text(), (
        "pipelines/compiled/monitoring.yaml is stale: run `make compile` and commit the result"
    )
    spec = yaml.safe_load(MONITORING.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    # A monitoring pass and the rollout controller, independent: a failed pass must not hold up
    # a rollback.
    assert list(tasks) == ["monitor", "rollout-tick"]
    assert "dependentTasks" not in tasks["rollout-tick"]
    assert not tasks["monitor"]["cachingOptions"] and not tasks["rollout-tick"]["cachingOptions"]
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {PIPELINE_IMAGE}
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"config", "database_url"}


def test_every_step_runs_in_the_pipeline_image_of_this_version(spec):
    executors = spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values()}
    assert images == {PIPELINE_IMAGE}
    assert len(executors) == 7  # six components, register twice (with and without embeddings)
    for executor in executors.values():  # the image holds kfp: nothing installs at start
        assert "pip install" not in " ".join(executor["container"]["command"])


def test_steps_run_in_order_and_embeddings_only_when_blessed(spec):
    tasks = spec["root"]["dag"]["tasks"]
    after = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    assert after["feature-transform"] == {"ingest-snapshot"}
    assert after["train"] == {"feature-transform"}
    assert after["evaluate"] >= {"train"}
    branches = spec["components"][tasks["condition-branches-1"]["componentRef"]["name"]]
    assert "evaluate" in tasks["condition-branches-1"]["dependentTasks"]
    blessed, not_blessed = (branches["dag"]["tasks"][n] for n in ("condition-2", "condition-3"))
    assert "evaluate-blessed" in blessed["triggerPolicy"]["condition"]
    assert "== true" in blessed["triggerPolicy"]["condition"]
    assert "!(" in not_blessed["triggerPolicy"]["condition"]
    inside = {
        name: set(spec["components"][task["componentRef"]["name"]]["dag"]["tasks"])
        for name, task in (("blessed", blessed), ("not_blessed", not_blessed))
    }
    assert inside["blessed"] == {"write-embeddings", "register"}
    assert inside["not_blessed"] == {"register-2"}
    # Steps with side effects in the database are never served from a cache.
    for name in ("ingest-snapshot", "evaluate"):
        assert tasks[name]["cachingOptions"] == {}


def test_the_parameters_the_issue_names_are_pipeline_parameters():
    params = pipeline_parameters()
    for name in ("cutoff", "negatives_per_positive", "epochs", "thresholds_json",
                 "beam_pipeline_args", "activate", "database_url"):  # fmt: skip
        assert name in params
    assert params["epochs"] == {"type": "NUMBER_INTEGER", "default": 15}
    assert params["activate"]["default"] is True
    assert params["promotion"] == {"type": "STRING", "default": "instant"}


def test_tuning_is_a_pipeline_parameter_passed_to_the_train_step(spec):
    params = pipeline_parameters()
    assert params["tuning_trials"] == {"type": "NUMBER_INTEGER", "default": 0}
    assert params["search_space_json"] == {"type": "STRING", "default": "{}"}
    given = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    for name in ("tuning_trials", "search_space_json"):
        assert given[name] == {"componentInputParameter": name}


def test_arguments_are_parsed_by_the_parameters_types():
    args = parse_arguments([
        "epochs=5", "activate=false", 'thresholds_json={"min_auc": 0.6}',
        "cutoff=2026-10-01T00:00:00Z", 'beam_pipeline_args=["--runner=FlinkRunner"]',
        "negatives_per_positive=3",
    ])  # fmt: skip
    assert args == {
        "epochs": 5, "activate": False, "thresholds_json": '{"min_auc": 0.6}',
        "cutoff": "2026-10-01T00:00:00Z", "beam_pipeline_args": ["--runner=FlinkRunner"],
        "negatives_per_positive": 3.0,
    }  # fmt: skip
    assert isinstance(args["negatives_per_positive"], float)  # KFP refuses an int there


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["epoch=5"], "unknown pipeline parameter.*epoch.*epochs"),
        (["epochs=five"], "epochs=five: not a JSON value"),
        (["epochs=5.5"], "epochs takes number_integer"),
        (["activate=1"], "activate takes boolean"),
        (["beam_pipeline_args=--runner=X"], "not a JSON value"),
        (["epochs"], "expected name=value"),
    ],
)
def test_bad_arguments_are_refused_with_what_the_pipeline_takes(pairs, message):
    with pytest.raises(PipelineError, match=message):
        parse_arguments(pairs)


def test_check_arguments_refuses_a_wrong_type_passed_from_python():
    with pytest.raises(PipelineError, match="keep takes number_integer"):
        check_arguments({"keep": True})
