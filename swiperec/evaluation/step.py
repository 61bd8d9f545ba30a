"""The evaluation step as the pipeline and the CLI run it: evaluate, bless, write, report.

    outcome = run_evaluation("artifacts/model", "artifacts/examples", "artifacts/evaluation",
                             ground_truth="truth.npz")

Writes to `out_dir`: `evaluation.json` (every metric of the model, the baselines and the
oracle; see `swiperec.evaluation.evaluate`), `blessing.json` (the decision with its checks and
reasons) and, unless `report=False`, `report.html`. `production` is the evaluation of the model
now serving, when there is one: the relative thresholds compare against it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from swiperec.evaluation.blessing import BlessingThresholds, bless
from swiperec.evaluation.evaluate import EVALUATION_FILE, BaselineConfig, evaluate, write_results

BLESSING_FILE = "blessing.json"
REPORT_FILE = "report.html"


@dataclass
class EvaluationOutcome:
    results: dict
    blessing: dict
    out_dir: str


def run_evaluation(
    model_dir: str,
    examples_dir: str,
    out_dir: str,
    ground_truth: str | None = None,
    thresholds: BlessingThresholds | None = None,
    production: dict | None = None,
    report: bool = True,
    baseline: BaselineConfig | None = None,
) -> EvaluationOutcome:
    import tensorflow as tf

    results = evaluate(model_dir, examples_dir, ground_truth, baseline=baseline)
    embeddings = results.pop("embeddings")
    blessing = bless(results, embeddings, thresholds, production)
    tf.io.gfile.makedirs(out_dir)
    write_results(results, os.path.join(out_dir, EVALUATION_FILE))
    with tf.io.gfile.GFile(os.path.join(out_dir, BLESSING_FILE), "w") as handle:
        handle.write(json.dumps(blessing, indent=1))
    if report:
        from swiperec.evaluation.report import render_report

        render_report(results, os.path.join(out_dir, REPORT_FILE), blessing=blessing)
    return EvaluationOutcome(results, blessing, out_dir)
