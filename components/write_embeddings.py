"""KFP component: a blessed model -> its embedding set in pgvector (optionally switched live)."""

from kfp import dsl

from swiperec.version import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def write_embeddings(
    model: dsl.Input[dsl.Model],
    snapshot: dsl.Input[dsl.Dataset],
    embedding_set: dsl.Output[dsl.Artifact],
    model_version: str,
    database_url: str = "",
    activate: bool = False,
    keep: int = 3,
    beam_pipeline_args: list = [],  # noqa: B006 - KFP parameters take literal defaults
) -> None:
    """Runs `swiperec.embeddings.writer.write_embeddings`.

    database_url: the PostgreSQL to write to; "" uses DATABASE_URL of the step's environment
    (on a cluster, a secret). The output artifact records the set's version,
    row counts and timings; its URI names the database tables the set lives in.
    """
    import json
    import os

    from swiperec.db.connection import redact
    from swiperec.embeddings.writer import write_embeddings as write
    from swiperec.pipeline.steps import record_step, step_database_url, step_started

    started = step_started()

    def location(artifact) -> str:
        return artifact.uri if artifact.uri.startswith("gs://") else artifact.path

    url = step_database_url(database_url)
    os.makedirs(os.path.dirname(embedding_set.path), exist_ok=True)
    result = write(
        location(model), model_version, snapshot=location(snapshot), database_url=url,
        activate=activate, keep=keep, pipeline_args=list(beam_pipeline_args),
    )  # fmt: skip
    embedding_set.metadata["model_version"] = model_version
    embedding_set.metadata["database"] = redact(url)
    embedding_set.metadata["activated"] = result.activated
    embedding_set.metadata["previous_version"] = result.previous_version or ""
    for kind, rows in result.rows.items():
        embedding_set.metadata[f"{kind}_rows"] = rows
    for stage, seconds in result.seconds.items():
        embedding_set.metadata[f"seconds/{stage}"] = seconds
    embedding_set.metadata["retired"] = result.retired
    record_step(started, embedding_set)
    with open(embedding_set.path, "w") as handle:  # the record itself, beside its metadata
        json.dump({"model_version": model_version, **embedding_set.metadata}, handle, indent=1)
