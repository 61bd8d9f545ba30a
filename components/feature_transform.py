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
    """Runs `swiperec.pipeline.steps.feature_transform`.

    negatives_per_positive: the sampling ratio, negatives per like (2.0 = 1:2).
    feature_config_json: other FeatureConfig fields to override, e.g. '{"seed": 7}'.
    beam_pipeline_args: Beam options, e.g. ["--runner=DataflowRunner", "--project=...", ...].
    """
    import json

    from swiperec.pipeline import steps
    from swiperec.pipeline.kfp_artifacts import location, stamp

    result = steps.feature_transform(
        location(snapshot), location(transform_graph), location(examples),
        negatives_per_positive=negatives_per_positive,
        feature_config=json.loads(feature_config_json),
        beam_pipeline_args=list(beam_pipeline_args),
    )  # fmt: skip
    stamp(result, transform_graph=transform_graph, examples=examples)
