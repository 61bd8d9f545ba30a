"""KFP component: transform graph + examples -> the two-tower model (towers + model card)."""

from kfp import dsl

from swiperec.version import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train(
    transform_graph: dsl.Input[dsl.Artifact],
    examples: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
    epochs: int = 0,
    train_config_json: str = "{}",
) -> None:
    """Runs `swiperec.model.train.train`; the model artifact holds user_tower/, video_tower/
    (SavedModels on raw features), the two .keras towers and model_card.json.

    epochs: the most epochs to train (early stopping usually ends sooner); 0 leaves it to
        train_config_json or TrainConfig's default.
    train_config_json: other TrainConfig fields to override, e.g. '{"temperature": 0.1}'.
    """
    import json

    from swiperec.model.config import TrainConfig
    from swiperec.model.train import train as train_model
    from swiperec.pipeline.steps import record_step, step_started

    started = step_started()

    def location(artifact) -> str:
        return artifact.uri if artifact.uri.startswith("gs://") else artifact.path

    overrides = json.loads(train_config_json)
    if epochs:
        overrides["epochs"] = epochs
    config = TrainConfig.from_dict(overrides)
    card = train_model(
        location(transform_graph), location(examples), location(model), config, verbose=2
    ).card
    model.metadata["embedding_dim"] = card["embedding_dim"]
    model.metadata["snapshot_content_hash"] = card["input"]["snapshot_content_hash"]
    model.metadata["framework"] = "tensorflow"
    model.metadata["best_epoch"] = card["training"]["best_epoch"]
    model.metadata["epochs_run"] = card["training"]["epochs_run"]
    model.metadata["training_seconds"] = card["training"]["seconds"]
    for split, values in card["metrics"].items():
        for name, value in values.items():
            metrics.log_metric(f"{split}/{name}", value)
            model.metadata[f"{split}/{name}"] = value
    metrics.log_metric("training_seconds", card["training"]["seconds"])
    record_step(started, model, metrics)
