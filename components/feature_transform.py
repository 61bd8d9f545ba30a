"""KFP component: snapshot -> TFT transform graph + transformed train/validation/test examples."""

from kfp import dsl

from swiperec.version import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def feature_transform(
    snapshot: dsl.Input[dsl.Dataset],
    transform_graph: dsl.Output[dsl.Artifact],
    examples: dsl.Output[dsl.Dataset],
    negatives_per_positive: float = 2.0,
    feature_config_json: str = "{}",
    beam_pipeline_args: list = [],  # noqa: B006 - KFP parameters take literal defaults
) -> None:
    """Runs `swiperec.features.transform.run_transform` on the snapshot.

    negatives_per_positive: the sampling ratio, negatives per like (2.0 = 1:2).
    feature_config_json: other FeatureConfig fields to override, e.g. '{"seed": 7}'.
    beam_pipeline_args: Beam options, e.g. ["--runner=DataflowRunner", "--project=...", ...].
    """
    import json

    from swiperec.features.config import FeatureConfig
    from swiperec.features.transform import run_transform
    from swiperec.pipeline.steps import record_step, step_started

    started = step_started()

    def location(artifact) -> str:
        # gs:// URIs as they are, so Dataflow workers can read them (not Vertex's /gcs mount).
        return artifact.uri if artifact.uri.startswith("gs://") else artifact.path

    overrides = {
        **json.loads(feature_config_json),
        "negatives_per_positive": negatives_per_positive,
    }
    config = FeatureConfig.from_dict(overrides)
    result = run_transform(
        location(snapshot),
        location(transform_graph),
        location(examples),
        config,
        list(beam_pipeline_args),
    )
    meta = result.metadata
    for artifact in (transform_graph, examples):
        artifact.metadata["snapshot_content_hash"] = meta["snapshot"]["content_hash"]
        artifact.metadata["validation_start"] = meta["split_boundaries"]["validation_start"]
        artifact.metadata["test_start"] = meta["split_boundaries"]["test_start"]
    for name, size in meta["vocabulary_sizes"].items():
        transform_graph.metadata[f"vocabulary_size/{name}"] = size
    for split, counts in meta["counts"].items():
        for kind, n in counts.items():
            examples.metadata[f"{split}/{kind}"] = n
    examples.metadata["videos"] = meta["catalogue"]["videos"]
    record_step(started, transform_graph, examples)
