"""The training pipeline's steps, one function each. KFP components and CLI commands call these
and nothing else; each does all of its step's work and returns a plain dict.

    ingest_snapshot(out, cutoff=..., model_version=...)        -> snapshot
    feature_transform(snapshot, transform_graph, examples)     -> transform_graph, examples
    train(transform_graph, examples, model)                    -> model
    evaluate(model, examples, transform_graph, snapshot, out)  -> evaluation, blessed
    write_embeddings(model, snapshot, model_version=...)       -> embedding_set
    register(artifacts, model_version=..., run_id=...)         -> lineage; promotes when asked

Arguments are locations (local paths or gs:// URIs) of the step's declared inputs and outputs,
and its parameters. A step reads only what it is given. The returned dict holds, under each
output's name, the metadata for that output artifact, stamped with what the step was and did:
`step/name`, `step/inputs` (the names of the inputs it read), `step/parameters`,
`step/started_at`, `step/finished_at`, `step/seconds`, `step/peak_rss_mb`. `register` turns
those stamps into the run's lineage, so every execution is recorded with exactly the
parameters it ran with and the artifacts it read.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime


def step_database_url(given: str = "") -> str:
    """The database a step works on: `given` (the pipeline's `database_url`), else the step's
    DATABASE_URL. Never the embedded server: inside a cluster's container that would be a
    fresh, empty database that vanishes with the step (`swiperec pipeline run --local` passes
    the embedded server's URL explicitly)."""
    url = given or os.environ.get("DATABASE_URL")
    if not url:
        raise ValueError(
            "no database for this step: set the pipeline's database_url parameter, or give the "
            "steps DATABASE_URL in their environment (e.g. from a Kubernetes secret)"
        )
    return url


# -- the steps ------------------------------------------------------------------------------------


def ingest_snapshot(
    snapshot: str,
    *,
    cutoff: str = "",
    model_version: str = "",
    database_url: str = "",
    overwrite: bool = True,
    progress=None,
    migration: bool = False,
    feature_config: dict | None = None,
) -> dict:
    """The database -> a consistent snapshot at `cutoff` (ISO 8601, "" = the database's now).
    `progress(table)` is called as each table starts.

    Also names the run's model version: `model_version`, refused when it exists already, or a
    new name (`swiperec.registry.versions.new_version_name`); and the run's training mix: the
    FeatureConfig overrides `feature_config`, with `migration` the active migration plan's
    current stage's mix on top (`swiperec.migration.plan.training_mix`; a field given in both
    is refused) - returned as `feature_config` and `migration` (None without)."""
    from swiperec.db import connect
    from swiperec.registry.versions import RegistryError, new_version_name, version_exists
    from swiperec.snapshot import take_snapshot

    started = time.time()
    overrides, mix = dict(feature_config or {}), None
    conn = connect(step_database_url(database_url))
    try:
        if migration:
            from swiperec.migration.plan import MigrationError, training_mix

            mix = training_mix(conn)
            if mix is None:
                raise MigrationError(
                    "migration=True but no migration plan is active: `swiperec migration plan`"
                )
            both = sorted(set(overrides) & set(mix["feature_config"]))
            if both:
                raise MigrationError(
                    f"{', '.join(both)} given while the migration plan sets the mix: leave them "
                    "out, or run with migration=False"
                )
            overrides.update(mix["feature_config"])
        # Early, for a clear message before any work; the claim itself is atomic (evaluate).
        if model_version and version_exists(conn, model_version):
            raise RegistryError(
                f"model version {model_version!r} already exists: name the run's version "
                "differently, or leave model_version empty for a new name"
            )
        when = datetime.fromisoformat(cutoff) if cutoff else None
        meta = take_snapshot(conn, snapshot, cutoff=when, overwrite=overwrite, progress=progress)
    finally:
        conn.close()
    version = model_version or new_version_name(datetime.fromtimestamp(started, UTC))
    described = {
        "content_hash": meta.content_hash,
        "cutoff": meta.cutoff.isoformat(),
        **{f"rows/{table}": rows for table, rows in meta.row_counts.items()},
        "model_version": version,
    }
    spans = {
        table: [t.isoformat() for t in span] if span else None
        for table, span in meta.time_ranges.items()
    }
    parameters = {"cutoff": cutoff, "model_version": model_version, "migration": migration,
                  "feature_config": feature_config or {}}  # fmt: skip
    return _stamped(
        "ingest_snapshot", started, [], parameters, {"snapshot": described},
        model_version=version, uri=meta.uri, time_ranges=spans, feature_config=overrides,
        migration=mix,
    )  # fmt: skip


def feature_transform(
    snapshot: str,
    transform_graph: str,
    examples: str,
    *,
    negatives_per_positive: float | None = None,
    feature_config: dict | None = None,
    beam_pipeline_args: list[str] | None = None,
) -> dict:
    """A snapshot -> the TFT transform graphs and the transformed train/validation/test
    examples (`swiperec.features.transform.run_transform`). `feature_config`: FeatureConfig
    fields to override; `negatives_per_positive` (the sampling ratio) wins over it."""
    from swiperec.features.config import FeatureConfig
    from swiperec.features.transform import run_transform

    started = time.time()
    overrides = dict(feature_config or {})
    if negatives_per_positive is not None:
        overrides["negatives_per_positive"] = negatives_per_positive
    config = FeatureConfig.from_dict(overrides)
    args = list(beam_pipeline_args or [])
    meta = run_transform(snapshot, transform_graph, examples, config, args).metadata
    common = {
        "snapshot_content_hash": meta["snapshot"]["content_hash"],
        "validation_start": meta["split_boundaries"]["validation_start"],
        "test_start": meta["split_boundaries"]["test_start"],
    }
    graph = {**common, **{f"vocabulary_size/{k}": n for k, n in meta["vocabulary_sizes"].items()}}
    counted = {
        **common,
        **{f"{split}/{kind}": n for split, c in meta["counts"].items() for kind, n in c.items()},
        "videos": meta["catalogue"]["videos"],
    }
    parameters = {"negatives_per_positive": negatives_per_positive,
                  "feature_config": overrides, "beam_pipeline_args": args}  # fmt: skip
    return _stamped(
        "feature_transform", started, ["snapshot"], parameters,
        {"transform_graph": graph, "examples": counted}, metadata=meta,
    )  # fmt: skip


def train(
    transform_graph: str,
    examples: str,
    model: str,
    *,
    epochs: int = 0,
    train_config: dict | None = None,
    tuning_trials: int = 0,
    search_space: dict | None = None,
    verbose: int = 2,
) -> dict:
    """Transform graph + examples -> the two-tower model (`swiperec.model.train.train`):
    user_tower/, video_tower/ (SavedModels on raw features), the .keras towers and
    model_card.json. `epochs`: the most epochs (0 leaves it to `train_config` or the default).

    `tuning_trials` > 0: a hyper-parameter search instead (`swiperec.model.tune.tune`, Optuna):
    that many models trained over `search_space` (TrainConfig field -> range or choices; None
    or {}: `swiperec.model.tune.DEFAULT_SEARCH_SPACE`) on top of the config above, the one with
    the best validation AUC published, its model card recording the study under "tuning"."""
    from swiperec.model.config import TrainConfig
    from swiperec.model.train import train as train_model

    started = time.time()
    overrides = dict(train_config or {})
    if epochs:
        overrides["epochs"] = epochs
    config = TrainConfig.from_dict(overrides)
    if tuning_trials < 0:
        raise ValueError(f"tuning_trials must be >= 0, got {tuning_trials}")
    if search_space and not tuning_trials:
        raise ValueError("a search space was given but tuning_trials is 0: nothing would use it")
    if tuning_trials:
        from swiperec.model.tune import tune

        card = tune(transform_graph, examples, model, config, tuning_trials, search_space,
                    verbose=verbose).card  # fmt: skip
    else:
        card = train_model(transform_graph, examples, model, config, verbose=verbose).card
    metrics = {
        f"{split}/{name}": value
        for split, values in card["metrics"].items()
        for name, value in values.items()
    }
    described = {
        "embedding_dim": card["embedding_dim"],
        "snapshot_content_hash": card["input"]["snapshot_content_hash"],
        "framework": "tensorflow",
        "best_epoch": card["training"]["best_epoch"],
        "epochs_run": card["training"]["epochs_run"],
        "training_seconds": card["training"]["seconds"],
        **metrics,
    }
    parameters = {"epochs": epochs, "train_config": overrides}
    logged = {**metrics, "training_seconds": card["training"]["seconds"]}
    if tuning_trials:  # (without tuning, the step records exactly what it did before)
        tuning = card["tuning"]
        parameters.update(tuning_trials=tuning_trials, search_space=tuning["search_space"])
        described.update({"tuning/trials": tuning["trials_run"],
                          "tuning/best_trial": tuning["best_trial"]})  # fmt: skip
        logged.update({"tuning/trials": tuning["trials_run"],
                       "tuning/seconds": tuning["seconds"]})  # fmt: skip
    return _stamped(
        "train", started, ["transform_graph", "examples"], parameters,
        {"model": described}, card=card, metrics=logged,
    )  # fmt: skip


def evaluate(
    model: str,
    examples: str,
    transform_graph: str,
    snapshot: str,
    evaluation: str,
    *,
    model_version: str = "",
    model_uri: str = "",
    run_id: str | None = None,
    ground_truth_uri: str = "",
    thresholds: dict | None = None,
    production_evaluation_uri: str = "",
    report_path: str = "",
    database_url: str = "",
    migration: dict | None = None,
) -> dict:
    """The model on the test period against popularity, the like rate, matrix factorisation
    and (with a ground truth) the oracle, and the blessing decision; writes evaluation.json,
    blessing.json and report.html into `evaluation` (and a copy of the report to `report_path`).

    With `model_version`, the evaluation is recorded in the registry under it, with the model's
    URI `model_uri` (default `model`; the name is claimed for `run_id`: another run's version is
    refused), and the relative thresholds
    compare with the recorded evaluation of the version now serving, unless
    `production_evaluation_uri` names an evaluation.json to compare with instead.

    `migration` (ingest_snapshot's, for a run at a migration plan's stage): the blessing also
    needs the stage's gate, the model against the version serving on the real users of the
    test period (`swiperec.migration.plan.check_gate`); its verdict is recorded in the plan."""
    import json
    import shutil

    import tensorflow as tf

    from swiperec.evaluation.blessing import BlessingThresholds
    from swiperec.evaluation.evaluate import REPORT_FILE, evaluate_and_bless

    started = time.time()
    production, compared_with, conn = None, None, None
    if production_evaluation_uri:
        with tf.io.gfile.GFile(production_evaluation_uri) as handle:
            production, compared_with = json.load(handle), production_evaluation_uri
    if model_version:
        from swiperec.db import connect
        from swiperec.registry.versions import production_evaluation

        conn = connect(step_database_url(database_url))
        found = None if production else production_evaluation(conn, excluding=model_version)
        if found:
            compared_with, production = found
    gate, extra_checks = None, []
    try:
        if migration:
            # Recorded first: a run that fails or is killed later still leaves the verdict.
            gate = _migration_gate(migration, model, examples, snapshot, model_version,
                                   database_url)  # fmt: skip
            extra_checks.append(gate["check"])
        outcome = evaluate_and_bless(
            model, examples, transform_graph, snapshot, evaluation, ground_truth_uri or None,
            BlessingThresholds.from_dict(thresholds or {}), production,
            extra_checks=extra_checks,
        )  # fmt: skip
        if conn is not None:
            from swiperec.registry.versions import record_evaluation

            record_evaluation(conn, model_version, model_uri or model, outcome.results,
                              outcome.blessing, run_id=run_id)  # fmt: skip

    finally:
        if conn is not None:
            conn.close()
    if report_path:
        os.makedirs(os.path.dirname(os.path.abspath(report_path)), exist_ok=True)
        rendered = os.path.join(evaluation, REPORT_FILE)
        with tf.io.gfile.GFile(rendered, "rb") as source, open(report_path, "wb") as target:
            shutil.copyfileobj(source, target)
    results, blessing = outcome.results, outcome.blessing
    parameters = {"model_version": model_version, "ground_truth_uri": ground_truth_uri,
                  "thresholds": thresholds or {},
                  "production_evaluation_uri": production_evaluation_uri,
                  "migration": migration}  # fmt: skip
    roc = results["curves"]["model"]["roc"]
    return _stamped(
        "evaluate", started, ["model", "examples", "transform_graph", "snapshot"], parameters,
        {"evaluation": {"blessed": blessing["blessed"], "reasons": blessing["reasons"]}},
        blessed=blessing["blessed"], metrics=_evaluation_metrics(results, blessing),
        roc=(roc["fpr"], roc["tpr"], roc["thresholds"]),
        confusion_matrix=results["confusion_matrix"], results=results, blessing=blessing,
        compared_with=compared_with, migration_gate=gate and gate["result"],
    )  # fmt: skip


def _migration_gate(migration: dict, model: str, examples: str, snapshot: str, version: str,
                    database_url: str) -> dict:  # fmt: skip
    """The migration stage's gate on real users: checked, recorded in the plan, and returned as
    a blessing check. A comparison that cannot be made fails the gate, with the error."""
    from swiperec.db import connect
    from swiperec.features.config import datetime_to_us
    from swiperec.features.transform import read_transform_metadata
    from swiperec.migration.plan import check_gate, record_gate

    version = version or "candidate"
    text = read_transform_metadata(examples)["split_boundaries"]["test_start"]
    test_start = datetime_to_us(datetime.fromisoformat(text.replace("Z", "+00:00")))
    conn = connect(step_database_url(database_url))
    try:
        try:
            result = check_gate(conn, migration, version, model, snapshot, test_start)
        except Exception as e:  # e.g. the serving model unreadable: no comparison, no blessing
            conn.rollback()
            reason = f"the comparison with the version serving failed: {e!r}"
            result = {"passed": False, "serving": None, "comparison": None, "reasons": [reason]}
        record_gate(conn, migration, version, result)
    finally:
        conn.close()
    reason = "; ".join(result["reasons"])
    check = {"name": "migration_gate_real_users", "passed": result["passed"],
             "value": f"plan {migration['plan']} stage {migration['stage']}",
             "limit": "no regression on real users beyond the stage's margins",
             "reason": None if result["passed"] else f"migration gate: {reason}"}  # fmt: skip
    return {"result": result, "check": check}


def write_embeddings(
    model: str,
    snapshot: str,
    *,
    model_version: str,
    database_url: str = "",
    database_secret: str = "",
    beam_pipeline_args: list[str] | None = None,
) -> dict:
    """A model -> its embedding set in pgvector: every video and real user of the snapshot,
    written, indexed and attached, ready but not serving (`register` or `promote` switches).
    `database_secret` ("" = the step's DATABASE_URL_SECRET): a Beam secret spec holding the
    database URL, for workers on other machines (the job itself carries no password)."""
    from swiperec.db.connection import redact
    from swiperec.embeddings.writer import write_embeddings as write

    started = time.time()
    url = step_database_url(database_url)
    args = list(beam_pipeline_args or [])
    secret = database_secret or os.environ.get("DATABASE_URL_SECRET") or None
    result = write(model, model_version, snapshot, database_url=url, database_secret=secret,
                   pipeline_args=args)  # fmt: skip
    described = {
        "model_version": model_version,
        "database": redact(url),
        **{f"{kind}_rows": rows for kind, rows in result.rows.items()},
        **{f"seconds/{stage}": seconds for stage, seconds in result.seconds.items()},
    }
    return _stamped(
        "write_embeddings", started, ["model", "snapshot"],
        {"model_version": model_version, "beam_pipeline_args": args},
        {"embedding_set": described}, skipped=result.skipped, rows=result.rows,
        seconds=result.seconds,
    )  # fmt: skip


@dataclass(frozen=True)
class RunArtifact:
    """One artifact of a run as `register` sees it: where it is and its (stamped) metadata."""

    uri: str
    path: str
    metadata: dict = field(default_factory=dict)


def register(
    artifacts: dict[str, RunArtifact],
    *,
    model_version: str,
    run_id: str,
    activate: bool = False,
    keep: int = 3,
    database_url: str = "",
    promotion: str = "instant",
) -> dict:
    """The run's lineage into the registry, then (with `activate` and an embedding set) the
    promotion that makes the version serve, then retention of `keep` embedding sets.

    `promotion`: "instant" switches serving to the version for everyone at once; "canary"
    starts a staged rollout of it instead (`swiperec.experiments.design.start_rollout`, default
    stages; `swiperec rollout tick` moves it on or rolls it back). With nothing serving yet
    there is no control to compare with, so a canary promotes at once. A rollout takes every
    user, so while an experiment runs none starts: the version stays blessed, not serving, and
    `rollout_refused` says why (start it later with `swiperec rollout start V`).

    `artifacts`: the run's artifacts by name (snapshot, transform_graph, examples, model,
    evaluation, and embedding_set when one was written), each stamped by the step that wrote it.
    Recording the same run again adds nothing; the version is refused when another run owns
    it. Serving switches last, after the run is recorded; the register execution's end is then
    moved to when all of that is done, so its time counts the promotion too (a register that
    fails after recording keeps the recording's moment as its end)."""
    from swiperec.db import connect
    from swiperec.registry.lineage import finish_execution, record_run

    if promotion not in ("instant", "canary"):
        raise ValueError(f"promotion is 'instant' or 'canary', got {promotion!r}")
    started = datetime.now(UTC)
    parameters = {"model_version": model_version, "run_id": run_id, "activate": activate,
                  "keep": keep, "promotion": promotion}  # fmt: skip
    executions = run_executions(artifacts, parameters, started)
    conn = connect(step_database_url(database_url))
    try:
        added = record_run(conn, run_id, executions, model_version=model_version)
        previous, retired, rollout, refused = None, [], None, None
        promoted = activate and "embedding_set" in artifacts
        if promoted and promotion == "canary" and _serving(conn) is not None:
            from swiperec.embeddings.store import retire
            from swiperec.experiments.design import ExperimentError, start_rollout

            try:
                rollout = start_rollout(conn, model_version, actor=f"pipeline run {run_id}")["name"]
            except ExperimentError as e:  # e.g. an experiment holds some of the users
                refused = f"no rollout started: {e}"
            promoted, retired = False, retire(conn, keep)
        elif "embedding_set" in artifacts:
            previous, retired = promote_and_retire(
                conn, model_version, promote=promoted, keep=keep, actor=f"pipeline run {run_id}"
            )
        with conn.cursor() as cur:
            cur.execute("select stage from model_versions where model_version = %s",
                        (model_version,))  # fmt: skip
            stage = cur.fetchone()[0]
        conn.rollback()
        finish_execution(conn, run_id, "register", datetime.now(UTC))
    finally:
        conn.close()
    return {"model_version": model_version, "stage": stage, "promoted": promoted,
            "previous_version": previous, "retired": retired, "recorded": added,
            "rollout": rollout, "rollout_refused": refused}  # fmt: skip


def _serving(conn) -> str | None:
    with conn.cursor() as cur:
        cur.execute("select model_version from serving_state")
        row = cur.fetchone()
    conn.rollback()
    return row[0] if row else None


def monitor(*, config: str = "", database_url: str = "") -> dict:
    """One monitoring pass (`swiperec.monitoring.compute.run_pass`): the monitoring pipeline's
    only step, run on a schedule. `config`: a monitoring TOML file ("" the packaged one).
    Returns the pass's figures: buckets computed, metric rows, alerts fired, seconds."""
    from swiperec.db import connect
    from swiperec.monitoring.compute import run_pass
    from swiperec.monitoring.config import load_config

    settings = load_config(config or None)
    conn = connect(step_database_url(database_url))
    try:
        summary = run_pass(conn, settings)
    finally:
        conn.close()
    return {
        "buckets": len(summary.buckets),
        "metric_rows": summary.rows,
        "alerts_fired": len(summary.alerts),
        "alerts": [alert["message"] for alert in summary.alerts],
        "seconds": round(sum(summary.seconds.values()), 3),
    }


def rollout_tick(*, database_url: str = "") -> list[dict]:
    """One pass of the rollout controller (`swiperec.experiments.rollout.tick`): the monitoring
    pipeline's other step. Returns the decision for each running experiment."""
    from swiperec.db import connect
    from swiperec.experiments.rollout import tick

    conn = connect(step_database_url(database_url))
    try:
        return tick(conn)
    finally:
        conn.close()


def promote_and_retire(
    conn, version: str, *, promote: bool, keep: int, actor: str | None = None
) -> tuple[str | None, list[str]]:
    """After a version's embedding sets are written: promote it (when asked), then drop all
    but the `keep` newest sets, never one in use. Returns (the version that served before, or
    None; the versions retired)."""
    from swiperec.embeddings.store import retire
    from swiperec.registry.versions import promote as promote_version

    previous = promote_version(conn, version, actor=actor) if promote else None
    return previous, retire(conn, keep)


def run_executions(
    artifacts: dict[str, RunArtifact], parameters: dict, register_started: datetime
) -> list:
    """The run's executions, read off its artifacts' stamps: each step with its parameters,
    times, the inputs it read and the outputs it wrote; then `register` itself, with its
    `parameters`, which read every artifact it was given."""
    from swiperec.registry.lineage import Execution

    missing = {"snapshot", "transform_graph", "examples", "model", "evaluation"} - set(artifacts)
    if missing:
        raise ValueError(f"the run's lineage needs these artifacts too: {sorted(missing)}")
    records = {name: _artifact(name, run) for name, run in artifacts.items()}
    steps: dict[str, dict] = {}  # step -> {"stamp": its metadata, "outputs": [names]}
    for name, run in artifacts.items():
        stamp = run.metadata
        if "step/name" not in stamp:
            raise ValueError(f"the {name} artifact carries no step stamp: not written by a step")
        entry = steps.setdefault(stamp["step/name"], {"stamp": stamp, "outputs": []})
        entry["outputs"].append(name)
    executions = []
    for step, entry in sorted(steps.items(), key=lambda s: s[1]["stamp"]["step/started_at"]):
        stamp = entry["stamp"]
        unknown = set(stamp["step/inputs"]) - set(records)
        if unknown:
            raise ValueError(f"step {step} read {sorted(unknown)}, which register was not given")
        executions.append(
            Execution(
                step=step,
                parameters=stamp["step/parameters"],
                inputs=tuple(records[n] for n in stamp["step/inputs"]),
                outputs=tuple(records[n] for n in entry["outputs"]),
                started_at=datetime.fromisoformat(stamp["step/started_at"]),
                finished_at=datetime.fromisoformat(stamp["step/finished_at"]),
            )
        )
    executions.append(
        Execution(
            step="register",
            parameters=parameters,
            inputs=tuple(records.values()),
            started_at=register_started,
            finished_at=datetime.now(UTC),  # moved to register's end by finish_execution
        )
    )
    return executions


# -- what every step records ----------------------------------------------------------------------


def peak_rss_mb() -> int:
    """Peak resident memory of this process or of its largest finished child, in MB (Beam's
    DirectRunner works in-process; worker processes it started count when they have exited)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024)


def _stamped(
    step: str, started: float, inputs: list[str], parameters: dict, outputs: dict, **extra
) -> dict:
    """The step's result: each output's metadata stamped with the step's name, inputs,
    parameters, times and peak memory; then `extra` (what callers print or log)."""
    finished = time.time()
    stamp = {
        "step/name": step,
        "step/inputs": list(inputs),
        "step/parameters": parameters,
        "step/started_at": _iso(started),
        "step/finished_at": _iso(finished),
        "step/seconds": round(finished - started, 2),
        "step/peak_rss_mb": peak_rss_mb(),
    }
    return {**{name: {**meta, **stamp} for name, meta in outputs.items()}, **extra}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _evaluation_metrics(results: dict, blessing: dict) -> dict:
    """The evaluation's headline numbers, flat, as KFP shows them."""
    metrics = {}
    for scorer, tasks in results["classification"].items():
        for task, values in tasks.items():
            for name in ("roc_auc", "pr_auc"):
                if values[name] is not None:
                    metrics[f"{scorer}/{task}/{name}"] = values[name]
    for scorer, values in results["retrieval"].items():
        for name, value in values.items():
            if "@" in name and value is not None:
                metrics[f"{scorer}/{name}"] = value
    share = (results.get("share_of_achievable_auc") or {}).get("like_vs_all")
    if share is not None:
        metrics["share_of_achievable_auc"] = share
    metrics["blessed"] = float(blessing["blessed"])
    return metrics


def _artifact(name: str, run: RunArtifact):
    """The lineage record of one artifact: the snapshot by its content hash, the others by a
    hash of their files."""
    from swiperec.registry.lineage import Artifact, content_hash

    metadata = dict(run.metadata)
    digest = metadata.get("content_hash") if name == "snapshot" else None
    if digest and not digest.startswith("sha256:"):
        digest = f"sha256:{digest}"
    if digest is None and run.uri.startswith("gs://"):
        digest = content_hash(run.uri)
    elif digest is None and run.path and os.path.exists(run.path):
        digest = content_hash(run.path)
    return Artifact(type=name, uri=run.uri, content_hash=digest, metadata=metadata)
