"""KFP component: model + examples (+ their transform graph and snapshot) -> metrics, the
blessing decision and an HTML report."""

from typing import NamedTuple

from kfp import dsl

from swiperec.version import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate(
    model: dsl.Input[dsl.Model],
    examples: dsl.Input[dsl.Dataset],
    transform_graph: dsl.Input[dsl.Artifact],
    snapshot: dsl.Input[dsl.Dataset],
    evaluation: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    classification_metrics: dsl.Output[dsl.ClassificationMetrics],
    report: dsl.Output[dsl.HTML],
    run_id: str = "",
    ground_truth_uri: str = "",
    thresholds_json: str = "{}",
    production_evaluation_uri: str = "",
    model_version: str = "",
    database_url: str = "",
    migration_json: str = "",
) -> NamedTuple("EvaluateOutputs", [("blessed", bool)]):
    """Runs `swiperec.pipeline.steps.evaluate`; `blessed` gates the steps after it.

    run_id: the pipeline run; the version name is claimed for it in the registry.
    ground_truth_uri: the synthetic data's ground_truth.npz (the oracle ceiling), or "".
    thresholds_json: BlessingThresholds fields to override, e.g. '{"min_auc": 0.6}'.
    production_evaluation_uri: evaluation.json of the model now serving, or "" for the
    registry's record of it.
    model_version: when given, the evaluation is recorded in the registry under it.
    database_url: the registry's database; "" uses DATABASE_URL of the step's environment.
    migration_json: ingest_snapshot's, for a run at a migration plan's stage ("" = none): the
    stage's gate on real users joins the blessing.
    """
    import json
    from collections import namedtuple

    from swiperec.pipeline import steps
    from swiperec.pipeline.kfp_artifacts import location, log_metrics, stamp

    result = steps.evaluate(
        location(model), location(examples), location(transform_graph), location(snapshot),
        location(evaluation), model_version=model_version, model_uri=model.uri,
        run_id=run_id or None,
        ground_truth_uri=ground_truth_uri, thresholds=json.loads(thresholds_json),
        production_evaluation_uri=production_evaluation_uri, report_path=report.path,
        database_url=database_url,
        migration=json.loads(migration_json) if migration_json else None,
    )  # fmt: skip
    stamp(result, evaluation=evaluation)
    log_metrics(metrics, result["metrics"])
    classification_metrics.log_roc_curve(*result["roc"])
    classification_metrics.log_confusion_matrix(["nope", "like"], result["confusion_matrix"])
    return namedtuple("EvaluateOutputs", ["blessed"])(result["blessed"])
