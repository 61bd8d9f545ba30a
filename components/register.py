"""KFP component: the run's lineage and the model version into the registry (PostgreSQL), then
the promotion that switches serving."""

from typing import NamedTuple

from kfp import dsl

from swiperec.version import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def register(
    snapshot: dsl.Input[dsl.Dataset],
    transform_graph: dsl.Input[dsl.Artifact],
    examples: dsl.Input[dsl.Dataset],
    model: dsl.Input[dsl.Model],
    evaluation: dsl.Input[dsl.Artifact],
    model_version: str,
    run_id: str,
    embedding_set: dsl.Input[dsl.Artifact] = None,
    activate: bool = False,
    keep: int = 3,
    database_url: str = "",
    promotion: str = "instant",
) -> NamedTuple("RegisterOutputs", [("model_version", str), ("stage", str)]):
    """Runs `swiperec.pipeline.steps.register`: executions (each with the parameters its step
    stamped on its outputs), artifacts (URI, content hash, metadata) and events.

    embedding_set: absent when the model was not blessed (nothing was written).
    activate: with an embedding set, promote this version once the run is recorded (the last
    thing the pipeline does), then drop all but the `keep` newest sets.
    database_url: "" uses DATABASE_URL of the step's environment (on a cluster, a secret).
    promotion: "instant" (serving switches for everyone) or "canary" (a staged rollout starts;
    `swiperec rollout tick` or the rollout-tick component moves it on or rolls it back).
    """
    from collections import namedtuple

    from swiperec.pipeline import steps
    from swiperec.pipeline.kfp_artifacts import run_artifact

    given = {
        "snapshot": snapshot, "transform_graph": transform_graph, "examples": examples,
        "model": model, "evaluation": evaluation, "embedding_set": embedding_set,
    }  # fmt: skip
    result = steps.register(
        {name: run_artifact(a) for name, a in given.items() if a is not None},
        model_version=model_version, run_id=run_id, activate=activate, keep=keep,
        database_url=database_url, promotion=promotion,
    )  # fmt: skip
    if result.get("rollout_refused"):
        print(result["rollout_refused"])
    return namedtuple("RegisterOutputs", ["model_version", "stage"])(model_version, result["stage"])
