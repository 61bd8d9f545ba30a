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
) -> NamedTuple("IngestOutputs", [("model_version", str)]):
    """Runs `swiperec.pipeline.steps.ingest_snapshot`.

    cutoff: ISO 8601 time ("" = the database's now).
    model_version: the name this run's model gets; "" names it after the time the run started,
    to the microsecond, so two runs never share a version.
    database_url: "" uses DATABASE_URL of the step's environment (on a cluster, a secret).
    """
    from collections import namedtuple

    from swiperec.pipeline import steps
    from swiperec.pipeline.kfp_artifacts import location, stamp

    result = steps.ingest_snapshot(
        location(snapshot), cutoff=cutoff, model_version=model_version, database_url=database_url
    )
    stamp(result, snapshot=snapshot)
    return namedtuple("IngestOutputs", ["model_version"])(result["model_version"])
