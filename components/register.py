"""KFP component: the run's lineage and the model version into the registry (PostgreSQL)."""

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
    cutoff: str = "",
    negatives_per_positive: float = 2.0,
    feature_config_json: str = "{}",
    epochs: int = 15,
    train_config_json: str = "{}",
    thresholds_json: str = "{}",
    ground_truth_uri: str = "",
    activate: bool = False,
    keep: int = 3,
    beam_pipeline_args: list = [],  # noqa: B006 - KFP parameters take literal defaults
    database_url: str = "",
) -> NamedTuple("RegisterOutputs", [("model_version", str), ("stage", str)]):
    """Runs `swiperec.pipeline.register.register_run`: executions (with these parameters),
    artifacts (URI, content hash, metadata) and events, and the model version's link to them.

    embedding_set: absent when the model was not blessed (nothing was written).
    activate: with an embedding set, switch serving to this version once the run is recorded
    (the last thing the pipeline does), then drop all but the `keep` newest sets.
    database_url: "" uses DATABASE_URL of the step's environment (on a cluster, a secret).
    """
    from collections import namedtuple
    from datetime import UTC, datetime

    from swiperec.db import connect
    from swiperec.pipeline.register import RunArtifact, register_run
    from swiperec.pipeline.steps import step_database_url

    started = datetime.now(UTC)
    given = {
        "snapshot": snapshot, "transform_graph": transform_graph, "examples": examples,
        "model": model, "evaluation": evaluation, "embedding_set": embedding_set,
    }  # fmt: skip
    artifacts = {
        name: RunArtifact(uri=a.uri, path=a.path, metadata=dict(a.metadata))
        for name, a in given.items()
        if a is not None
    }
    parameters = {
        "cutoff": cutoff, "model_version": model_version,
        "negatives_per_positive": negatives_per_positive,
        "feature_config_json": feature_config_json, "epochs": epochs,
        "train_config_json": train_config_json, "thresholds_json": thresholds_json,
        "ground_truth_uri": ground_truth_uri, "activate": activate, "keep": keep,
        "beam_pipeline_args": list(beam_pipeline_args),
    }  # fmt: skip
    conn = connect(step_database_url(database_url))
    try:
        register_run(conn, run_id, model_version, artifacts, parameters, started)
        if embedding_set is not None and activate:
            from swiperec.embeddings.store import activate as switch_serving
            from swiperec.embeddings.store import retire

            switch_serving(conn, model_version)
            retire(conn, keep)
        with conn.cursor() as cur:
            cur.execute("select stage from model_versions where model_version = %s",
                        (model_version,))  # fmt: skip
            stage = cur.fetchone()[0]
        conn.rollback()
    finally:
        conn.close()
    return namedtuple("RegisterOutputs", ["model_version", "stage"])(model_version, stage)
