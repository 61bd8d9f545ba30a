"""What every KFP component does with its artifacts, in one place (imports nothing of kfp).

    result = steps.train(location(transform_graph), location(examples), location(model), ...)
    stamp(result, model=model)          # the step's metadata onto the output artifact

`location` is where a step reads or writes an artifact: a gs:// URI as it is, so that Beam's
Dataflow workers read and write it directly (not Vertex's /gcs mount of it), else the local
path the launcher gives (the artifact's copy on this machine or pod).
"""

from __future__ import annotations


def location(artifact) -> str:
    """Where the step reads or writes `artifact` (a `dsl.Artifact`)."""
    return artifact.uri if artifact.uri.startswith("gs://") else artifact.path


def stamp(result: dict, **artifacts) -> None:
    """Copy each output's metadata from a step's result onto the KFP artifact of that name."""
    for name, artifact in artifacts.items():
        artifact.metadata.update(result[name])


def log_metrics(metrics, values: dict) -> None:
    """Log `values` (name -> number) on a KFP `Metrics` artifact."""
    for name, value in values.items():
        metrics.log_metric(name, value)


def run_artifact(artifact):
    """A `steps.RunArtifact` of a KFP input artifact (None stays None: an optional input)."""
    from swiperec.pipeline.steps import RunArtifact

    if artifact is None:
        return None
    return RunArtifact(uri=artifact.uri, path=artifact.path, metadata=dict(artifact.metadata))
