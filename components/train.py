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
    tuning_trials: int = 0,
    search_space_json: str = "{}",
) -> None:
    """Runs `swiperec.pipeline.steps.train`; the model artifact holds user_tower/, video_tower/
    (SavedModels on raw features), the two .keras towers and model_card.json.

    epochs: the most epochs to train (early stopping usually ends sooner); 0 leaves it to
        train_config_json or TrainConfig's default.
    train_config_json: other TrainConfig fields to override, e.g. '{"temperature": 0.1}'.
    tuning_trials: > 0 runs a hyper-parameter search (Optuna, TPE) of that many training runs
        and publishes the one with the best validation AUC; its model card records the study
        under "tuning". 0: one training run with the config above.
    search_space_json: what the search varies, TrainConfig field -> {"low", "high"[, "log"]}
        or {"choices": [...]}; "{}" = swiperec.model.tune.DEFAULT_SEARCH_SPACE.
    """
    import json

    from swiperec.pipeline import steps
    from swiperec.pipeline.kfp_artifacts import location, log_metrics, stamp

    result = steps.train(
        location(transform_graph), location(examples), location(model),
        epochs=epochs, train_config=json.loads(train_config_json),
        tuning_trials=tuning_trials, search_space=json.loads(search_space_json) or None,
    )  # fmt: skip
    stamp(result, model=model)
    log_metrics(metrics, result["metrics"])
