"""KFP component: model + examples -> metrics, the blessing decision and an HTML report."""

from typing import NamedTuple

from kfp import dsl

from swiperec.version import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate(
    model: dsl.Input[dsl.Model],
    examples: dsl.Input[dsl.Dataset],
    evaluation: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    classification_metrics: dsl.Output[dsl.ClassificationMetrics],
    report: dsl.Output[dsl.HTML],
    ground_truth_uri: str = "",
    thresholds_json: str = "{}",
    production_evaluation_uri: str = "",
    model_version: str = "",
    database_url: str = "",
) -> NamedTuple("EvaluateOutputs", [("blessed", bool)]):
    """Runs `swiperec.evaluation.step.run_evaluation`; `blessed` gates the steps after it.

    ground_truth_uri: the synthetic data's ground_truth.npz (the oracle ceiling), or "".
    thresholds_json: BlessingThresholds fields to override, e.g. '{"min_auc": 0.6}'.
    production_evaluation_uri: evaluation.json of the model now serving, or "" for none.
    model_version: when given, the evaluation is recorded in the registry under it, and
    (without production_evaluation_uri) the candidate is compared with the recorded evaluation
    of the version now serving.
    database_url: the registry's database; "" uses DATABASE_URL of the step's environment.
    """
    import json
    import os
    import shutil
    from collections import namedtuple

    import tensorflow as tf

    from swiperec.evaluation.blessing import BlessingThresholds
    from swiperec.evaluation.step import REPORT_FILE, run_evaluation
    from swiperec.pipeline.steps import record_step, step_started

    started = step_started()

    def location(artifact) -> str:
        return artifact.uri if artifact.uri.startswith("gs://") else artifact.path

    production, conn = None, None
    if model_version:
        from swiperec.db import connect
        from swiperec.pipeline.steps import step_database_url
        from swiperec.registry.versions import production_evaluation

        conn = connect(step_database_url(database_url))
        found = production_evaluation(conn, excluding=model_version)
        production = found[1] if found else None
    if production_evaluation_uri:
        with tf.io.gfile.GFile(production_evaluation_uri) as handle:
            production = json.load(handle)
    outcome = run_evaluation(
        location(model),
        location(examples),
        location(evaluation),
        ground_truth_uri or None,
        BlessingThresholds.from_dict(json.loads(thresholds_json)),
        production,
    )
    results, blessing = outcome.results, outcome.blessing
    if conn is not None:
        from swiperec.registry.versions import record_evaluation

        record_evaluation(conn, model_version, model.uri, results, blessing)
        conn.close()
    for scorer, tasks in results["classification"].items():
        for task, values in tasks.items():
            for name in ("roc_auc", "pr_auc"):
                if values[name] is not None:
                    metrics.log_metric(f"{scorer}/{task}/{name}", values[name])
    for scorer, values in results["retrieval"].items():
        for name, value in values.items():
            if "@" in name and value is not None:
                metrics.log_metric(f"{scorer}/{name}", value)
    share = (results.get("share_of_achievable_auc") or {}).get("like_vs_all")
    if share is not None:
        metrics.log_metric("share_of_achievable_auc", share)
    metrics.log_metric("blessed", float(blessing["blessed"]))

    roc = results["curves"]["model"]["roc"]
    classification_metrics.log_roc_curve(roc["fpr"], roc["tpr"], roc["thresholds"])
    classification_metrics.log_confusion_matrix(["nope", "like"], results["confusion_matrix"])

    os.makedirs(os.path.dirname(report.path), exist_ok=True)
    rendered = os.path.join(location(evaluation), REPORT_FILE)
    with tf.io.gfile.GFile(rendered, "rb") as source, open(report.path, "wb") as target:
        shutil.copyfileobj(source, target)
    evaluation.metadata["blessed"] = blessing["blessed"]
    evaluation.metadata["reasons"] = blessing["reasons"]
    record_step(started, evaluation)
    return namedtuple("EvaluateOutputs", ["blessed"])(blessing["blessed"])
