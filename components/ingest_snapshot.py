"""KFP component: the database -> a consistent snapshot at a cutoff (the pipeline's input)."""

from typing import NamedTuple

from kfp import dsl

from swiperec.version import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def ingest_snapshot(
    snapshot: dsl.Output[dsl.Dataset],
    cutoff: str = "",
    model_version: str = "",
    database_url: str = "",
    migration: bool = False,
    feature_config_json: str = "{}",
) -> NamedTuple(
    "IngestOutputs",
    [("model_version", str), ("feature_config_json", str), ("migration_json", str)],
):
    """Runs `swiperec.pipeline.steps.ingest_snapshot`.

    cutoff: ISO 8601 time ("" = the database's now).
    model_version: the name this run's model gets; "" names it after the time the run started,
    to the microsecond, so two runs never share a version.
    database_url: "" uses DATABASE_URL of the step's environment (on a cluster, a secret).
    migration: train at the active migration plan's current stage's mix (`swiperec migration`).
    feature_config_json: FeatureConfig fields to override; returned with the plan's mix added.
    """
    import json
    from collections import namedtuple

    from swiperec.pipeline import steps
    from swiperec.pipeline.kfp_artifacts import location, stamp

    result = steps.ingest_snapshot(
        location(snapshot), cutoff=cutoff, model_version=model_version, database_url=database_url,
        migration=migration, feature_config=json.loads(feature_config_json),
    )  # fmt: skip
    stamp(result, snapshot=snapshot)
    names = ["model_version", "feature_config_json", "migration_json"]
    outputs = namedtuple("IngestOutputs", names)
    return outputs(
        result["model_version"],
        json.dumps(result["feature_config"]),
        json.dumps(result["migration"]) if result["migration"] else "",
    )
