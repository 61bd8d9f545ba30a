"""The training pipeline: snapshot -> features -> model -> evaluation -> (if blessed) embeddings
-> registry. Compiled by `python -m pipelines compile` (`make compile`) into
compiled/two_tower_training.yaml, which runs unchanged on KFP's local runner, a Kubeflow
Pipelines cluster and Vertex AI Pipelines; the swiperec package ships a copy of that file.

    ingest_snapshot -> feature_transform -> train -> evaluate
        blessed:     write_embeddings -> register (records the run, then promotes the version)
        not blessed: register (evaluation recorded, nothing written, serving untouched)

Serving switches last, in `register`, after the lineage is recorded: a run that fails at any
step leaves the version that was serving in place.

Steps that read or write the database are never cached: a re-run takes a new snapshot and
records itself. The Beam steps take runner options (Dataflow, Flink) in `beam_pipeline_args`.
"""

from kfp import dsl

from components.evaluate import evaluate
from components.feature_transform import feature_transform
from components.ingest_snapshot import ingest_snapshot
from components.register import register
from components.train import train
from components.write_embeddings import write_embeddings

PIPELINE_NAME = "two-tower-training"

# Memory and CPU each step asks for on a cluster (the local runner ignores them). The sizes are
# the 32k-video catalogue's measured peaks with room to spare; raise them with the catalogue.
RESOURCES = {
    "ingest-snapshot": ("1", "2G"),
    "feature-transform": ("2", "8G"),
    "train": ("4", "8G"),
    "evaluate": ("2", "8G"),
    "write-embeddings": ("2", "8G"),
    "register": ("1", "1G"),
}


def _sized(task, name: str):
    cpu, memory = RESOURCES[name]
    return task.set_cpu_limit(cpu).set_memory_limit(memory)


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Two-tower recommender: snapshot, TFT features, TFRS training, evaluation with "
    "a blessing gate, pgvector embeddings switched live, registry lineage.",
)
def two_tower_training(
    cutoff: str = "",
    model_version: str = "",
    negatives_per_positive: float = 2.0,
    feature_config_json: str = "{}",
    epochs: int = 15,
    train_config_json: str = "{}",
    tuning_trials: int = 0,
    search_space_json: str = "{}",
    thresholds_json: str = "{}",
    ground_truth_uri: str = "",
    activate: bool = True,
    promotion: str = "instant",
    migration: bool = False,
    keep: int = 3,
    beam_pipeline_args: list = [],  # noqa: B006 - KFP parameters take literal defaults
    database_url: str = "",
    database_url_secret: str = "",
) -> str:
    """cutoff: ISO 8601 time of the snapshot ("" = now). model_version: the new version's name
    ("" = v<run start time>). negatives_per_positive: the sampling ratio (2.0 = 1:2).
    epochs: the most training epochs (early stopping ends sooner). feature_config_json,
    train_config_json, thresholds_json: further FeatureConfig, TrainConfig and
    BlessingThresholds fields. tuning_trials: > 0 makes the train step a
    hyper-parameter search (Optuna) of that many training runs, publishing the one with the best
    validation AUC (its model card's "tuning" section records every trial); search_space_json:
    what it varies, TrainConfig field -> {"low", "high"[, "log"]} or {"choices": [...]} ("{}" =
    the default space of swiperec.model.tune). ground_truth_uri: the synthetic data's
    ground_truth.npz, for the oracle ceiling. activate: switch serving to a blessed model's
    embeddings. promotion: "instant" (everyone at once) or "canary" (a staged rollout with
    automatic rollback, moved on by `swiperec rollout tick`). migration: train at the active
    migration plan's current stage's mix, and bless only when the model does not regress on
    real users against the version serving (`swiperec migration`). keep: embedding sets kept
    (A/B arms' sets are never removed).
    beam_pipeline_args: Beam options, e.g. ["--runner=DataflowRunner", "--project=P", ...].
    database_url: "" = DATABASE_URL in the steps' environment (on a cluster, from a secret);
    a step with neither fails rather than use a throwaway database. database_url_secret: a Beam
    secret holding that URL, which the refresh's workers on other machines read (Dataflow:
    "type:GcpSecret;version_name:projects/P/secrets/S/versions/latest"; "" = the step's
    DATABASE_URL_SECRET): its job carries no password.
    Returns the model version."""
    ingest = _sized(
        ingest_snapshot(
            cutoff=cutoff,
            model_version=model_version,
            database_url=database_url,
            migration=migration,
            feature_config_json=feature_config_json,
        ),
        "ingest-snapshot",
    ).set_caching_options(False)
    version = ingest.outputs["model_version"]
    snapshot = ingest.outputs["snapshot"]
    features = _sized(
        feature_transform(
            snapshot=snapshot,
            negatives_per_positive=negatives_per_positive,
            feature_config_json=ingest.outputs["feature_config_json"],
            beam_pipeline_args=beam_pipeline_args,
        ),
        "feature-transform",
    )
    trained = _sized(
        train(
            transform_graph=features.outputs["transform_graph"],
            examples=features.outputs["examples"],
            epochs=epochs,
            train_config_json=train_config_json,
            tuning_trials=tuning_trials,
            search_space_json=search_space_json,
        ),
        "train",
    )
    evaluated = _sized(
        evaluate(
            model=trained.outputs["model"],
            examples=features.outputs["examples"],
            transform_graph=features.outputs["transform_graph"],
            snapshot=snapshot,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ground_truth_uri=ground_truth_uri,
            thresholds_json=thresholds_json,
            model_version=version,
            database_url=database_url,
            migration_json=ingest.outputs["migration_json"],
        ),
        "evaluate",
    ).set_caching_options(False)
    lineage = dict(
        snapshot=snapshot,
        transform_graph=features.outputs["transform_graph"],
        examples=features.outputs["examples"],
        model=trained.outputs["model"],
        evaluation=evaluated.outputs["evaluation"],
        model_version=version,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        activate=activate,
        promotion=promotion,
        keep=keep,
        database_url=database_url,
    )
    with dsl.If(evaluated.outputs["blessed"] == True, name="blessed"):  # noqa: E712 - a KFP condition
        written = _sized(
            write_embeddings(
                model=trained.outputs["model"],
                snapshot=snapshot,
                model_version=version,
                database_url=database_url,
                database_url_secret=database_url_secret,
                beam_pipeline_args=beam_pipeline_args,
            ),
            "write-embeddings",
        ).set_caching_options(False)
        _sized(
            register(embedding_set=written.outputs["embedding_set"], **lineage), "register"
        ).set_caching_options(False)
    with dsl.Else(name="not-blessed"):
        _sized(register(**lineage), "register").set_caching_options(False)
    return version
