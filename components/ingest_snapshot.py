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
    """Runs `swiperec.data.snapshot.take_snapshot`: videos, reviews and decisions created up to
    `cutoff`, read in one transaction, written as Parquet with a content hash.

    cutoff: ISO 8601 time ("" = the database's now).
    model_version: the name this run's model gets; "" names it after the time the run started
    (v20261124-153000), so two runs never share a version.
    database_url: "" uses DATABASE_URL of the step's environment (on a cluster, a secret).
    """
    from collections import namedtuple
    from datetime import UTC, datetime

    from swiperec.data.snapshot import take_snapshot
    from swiperec.db import connect
    from swiperec.pipeline.steps import record_step, step_database_url, step_started

    started = step_started()
    when = datetime.fromisoformat(cutoff) if cutoff else None
    location = snapshot.uri if snapshot.uri.startswith("gs://") else snapshot.path
    conn = connect(step_database_url(database_url))
    try:
        if model_version:  # a run never overwrites another run's version
            with conn.cursor() as cur:
                cur.execute("select 1 from model_versions where model_version = %s",
                            (model_version,))  # fmt: skip
                taken = cur.fetchone() is not None
            conn.rollback()
            if taken:
                raise ValueError(
                    f"model version {model_version!r} already exists: name the run's version "
                    "differently, or leave model_version empty for a new name"
                )
        meta = take_snapshot(conn, location, cutoff=when, overwrite=True)
    finally:
        conn.close()
    version = model_version or datetime.fromtimestamp(started, UTC).strftime("v%Y%m%d-%H%M%S")
    snapshot.metadata["content_hash"] = meta.content_hash
    snapshot.metadata["cutoff"] = meta.cutoff.isoformat()
    for table, rows in meta.row_counts.items():
        snapshot.metadata[f"rows/{table}"] = rows
    snapshot.metadata["model_version"] = version
    record_step(started, snapshot)
    return namedtuple("IngestOutputs", ["model_version"])(version)
