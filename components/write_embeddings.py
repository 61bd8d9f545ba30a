"""KFP component: a blessed model -> its embedding set in pgvector (ready, not yet serving)."""

from kfp import dsl

from swiperec.version import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def write_embeddings(
    model: dsl.Input[dsl.Model],
    snapshot: dsl.Input[dsl.Dataset],
    embedding_set: dsl.Output[dsl.Artifact],
    model_version: str,
    database_url: str = "",
    database_url_secret: str = "",
    beam_pipeline_args: list = [],  # noqa: B006 - KFP parameters take literal defaults
) -> None:
    """Runs `swiperec.pipeline.steps.write_embeddings`.

    database_url: the PostgreSQL to write to; "" uses DATABASE_URL of the step's environment
    (on a cluster, a secret). database_url_secret: a Beam secret holding that URL, for the
    workers on other machines ("" = the step's DATABASE_URL_SECRET; the job carries no
    password). The output artifact records the set's version, row counts and
    timings; its file holds the same record.
    """
    import json
    import os

    from swiperec.pipeline import steps
    from swiperec.pipeline.kfp_artifacts import location, stamp

    if database_url:  # the step's own process: Beam workers it starts here inherit the URL
        os.environ["DATABASE_URL"] = database_url  # (the job carries no password)
    result = steps.write_embeddings(
        location(model), location(snapshot), model_version=model_version,
        database_url=database_url, database_secret=database_url_secret,
        beam_pipeline_args=list(beam_pipeline_args),
    )  # fmt: skip
    stamp(result, embedding_set=embedding_set)
    os.makedirs(os.path.dirname(embedding_set.path), exist_ok=True)
    with open(embedding_set.path, "w") as handle:  # the record itself, beside its metadata
        json.dump(result["embedding_set"], handle, indent=1)
