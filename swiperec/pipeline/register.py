"""The pipeline's last step: one run's lineage into the registry.

Every step stamped its output artifacts with its times (`swiperec.pipeline.steps`); this
turns the run's artifacts and parameters into ML Metadata's three records (artifacts,
executions, events) and ties the model version to them:

    ingest_snapshot   -> snapshot
    feature_transform snapshot -> transform_graph, examples
    train             transform_graph, examples -> model
    evaluate          model, examples -> evaluation
    write_embeddings  model, snapshot -> embedding_set      (only when the model was blessed)
    register          model, evaluation, embedding_set

Recording the same run again adds nothing (executions are unique per run and step).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

from swiperec.registry.lineage import Artifact, Execution, content_hash, record_run


@dataclass(frozen=True)
class RunArtifact:
    """One KFP artifact as the register step sees it: where it is and its metadata."""

    uri: str
    path: str
    metadata: dict = field(default_factory=dict)


def build_executions(
    artifacts: dict[str, RunArtifact], parameters: dict, register_started: datetime | None = None
) -> list[Execution]:
    """The run's executions, each with its parameters, times, inputs and outputs.

    `artifacts`: snapshot, transform_graph, examples, model, evaluation and, when embeddings
    were written, embedding_set. `parameters`: the pipeline's parameters by name."""
    missing = {"snapshot", "transform_graph", "examples", "model", "evaluation"} - set(artifacts)
    if missing:
        raise ValueError(f"the run's lineage needs these artifacts too: {sorted(missing)}")
    records = {name: _artifact(name, run) for name, run in artifacts.items()}

    def step(name, produced, inputs, outputs, keys):
        times = artifacts[produced].metadata if produced else {}
        return Execution(
            step=name,
            parameters={key: parameters[key] for key in keys if key in parameters},
            inputs=tuple(records[n] for n in inputs if n in records),
            outputs=tuple(records[n] for n in outputs if n in records),
            started_at=_time(times.get("step/started_at")),
            finished_at=_time(times.get("step/finished_at")),
        )

    executions = [
        step("ingest_snapshot", "snapshot", [], ["snapshot"], ["cutoff", "model_version"]),
        step("feature_transform", "transform_graph", ["snapshot"],
             ["transform_graph", "examples"],
             ["negatives_per_positive", "feature_config_json", "beam_pipeline_args"]),
        step("train", "model", ["transform_graph", "examples"], ["model"],
             ["epochs", "train_config_json"]),
        step("evaluate", "evaluation", ["model", "examples"], ["evaluation"],
             ["thresholds_json", "ground_truth_uri"]),
    ]  # fmt: skip
    if "embedding_set" in artifacts:
        executions.append(
            step(
                "write_embeddings",
                "embedding_set",
                ["model", "snapshot"],
                ["embedding_set"],
                ["activate", "keep", "beam_pipeline_args"],
            )
        )
    executions.append(
        Execution(
            step="register",
            parameters={"model_version": parameters.get("model_version", "")},
            inputs=tuple(
                records[n] for n in ("model", "evaluation", "embedding_set") if n in records
            ),
            started_at=register_started,
            finished_at=datetime.now(UTC),  # the moment it records the run
        )
    )
    return executions


def register_run(
    conn,
    run_id: str,
    model_version: str,
    artifacts: dict[str, RunArtifact],
    parameters: dict,
    register_started: datetime | None = None,
) -> dict:
    """Record the run's lineage and tie `model_version` to its model artifact (one
    transaction); returns the counts `record_run` reports."""
    executions = build_executions(artifacts, parameters, register_started)
    return record_run(conn, run_id, executions, model_version=model_version)


def _artifact(name: str, run: RunArtifact) -> Artifact:
    metadata = dict(run.metadata)  # incl. the producing step's step/seconds, step/peak_rss_mb
    digest = metadata.get("content_hash") if name == "snapshot" else None
    if digest and not digest.startswith("sha256:"):
        digest = f"sha256:{digest}"
    if digest is None and run.uri.startswith("gs://"):
        digest = content_hash(run.uri)
    elif digest is None and run.path and os.path.exists(run.path):
        digest = content_hash(run.path)
    return Artifact(type=name, uri=run.uri, content_hash=digest, metadata=metadata)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
