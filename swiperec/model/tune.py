"""Hyper-parameter search for the two-tower model: an Optuna study around `train()`.

    result = tune("artifacts/transform", "artifacts/examples", "artifacts/model",
                  TrainConfig(), trials=20, search_space=None)

Each trial trains one model with `swiperec.model.train.train` (the base TrainConfig with the
trial's sampled fields) into a scratch folder beside `model_dir`, and scores it by its best
validation AUC (the model card's `metrics.validation.auc`, what early stopping watches). The
sampler is Optuna's TPE, seeded; the study lives in memory. Only the best trial's folder is kept
while the study runs; at the end it is moved into `model_dir` with the same atomic renames as
`train()` publishes with, and its model card gains a "tuning" section: the trials run, the
search space, each trial's parameters, validation AUC and epochs, the best trial and the
chosen TrainConfig (the card's "hyperparameters" are that config). The scratch folder is removed
at the end, also when a trial fails or the run is stopped (SIGTERM included) between trials; a
folder left by a run killed outright is removed by the next run.

Search space: a dict from TrainConfig field names to either a range or choices,

    {"learning_rate": {"low": 5e-4, "high": 5e-3, "log": true},   # a range
     "video_id_min_count": {"choices": [0, 5, 20]}}                # choices

A range may have "log": true (low > 0) or a "step"; an int field's range samples ints, a
boolean field takes choices; fields that are no single number (hidden_units) cannot be searched.
A given
search space replaces `DEFAULT_SEARCH_SPACE` as a whole (None or {} = the default); fields not in
it keep the base config's values. A search space that names no TrainConfig field, is malformed,
or whose bounds or choices TrainConfig refuses raises ValueError before any training.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import fields

from swiperec.errors import SwiperecError
from swiperec.model.config import SERVING_ONLY_FIELDS, TrainConfig
from swiperec.model.train import MODEL_CARD, TrainResult, publish, train

# The default search space (names are TrainConfig fields): the learning rate, the regularisers,
# the softmax temperature, which videos get an id embedding (0 = content only) and the weight of
# the like/nope loss against the in-batch softmax.
DEFAULT_SEARCH_SPACE: dict[str, dict] = {
    "learning_rate": {"low": 5e-4, "high": 5e-3, "log": True},
    "dropout": {"low": 0.0, "high": 0.3},
    "temperature": {"low": 0.03, "high": 0.2, "log": True},
    "weight_decay": {"low": 1e-7, "high": 1e-4, "log": True},
    "video_id_min_count": {"choices": [0, 5, 20]},
    "pointwise_weight": {"low": 0.5, "high": 2.0},
    "video_id_dropout": {"low": 0.0, "high": 0.3},
    "bias_prior_std": {"low": 0.1, "high": 2.0, "log": True},
}

_RANGE_KEYS = {"low", "high", "log", "step"}
_INT_FIELDS = {
    f.name
    for f in fields(TrainConfig)
    if isinstance(f.default, int) and not isinstance(f.default, bool)
} | {"steps_per_epoch"}  # int | None
_BOOL_FIELDS = {f.name for f in fields(TrainConfig) if isinstance(f.default, bool)}
_SCALAR_FIELDS = (
    _INT_FIELDS | _BOOL_FIELDS | {f.name for f in fields(TrainConfig) if type(f.default) is float}
)


def parse_search_space(
    space: dict | str | None = None, base: TrainConfig | None = None
) -> dict[str, dict]:
    """A search space (a dict, or its JSON text; None or empty: `DEFAULT_SEARCH_SPACE`) checked
    and normalised: each field -> {"type": "float"|"int", "low", "high", "log", "step"} or
    {"type": "categorical", "choices"}. Every bound and choice must make a valid TrainConfig
    when put into `base` (default TrainConfig()). Raises ValueError naming every problem."""
    if isinstance(space, str):
        try:
            space = json.loads(space) if space.strip() else None
        except json.JSONDecodeError as err:
            raise ValueError(f"search space is not valid JSON: {err}") from err
    if not space:
        space = DEFAULT_SEARCH_SPACE
    if not isinstance(space, dict):
        raise ValueError(
            "search space must be a JSON object of TrainConfig field -> "
            f'{{"low", "high"[, "log", "step"]}} or {{"choices": [...]}}, got {space!r}'
        )
    base = base or TrainConfig()
    known = {f.name for f in fields(TrainConfig)}
    problems, parsed = [], {}
    for name, spec in space.items():
        if name not in known:
            problems.append(f"{name!r} is not a TrainConfig field")
            continue
        if name in SERVING_ONLY_FIELDS:
            problems.append(f"{name}: a serving setting, which the trials' validation AUC does "
                            "not measure")  # fmt: skip
            continue
        if name not in _SCALAR_FIELDS:
            problems.append(f"{name}: only fields with a number or boolean value can be searched")
            continue
        try:
            parsed[name] = _parse_one(name, spec)
        except ValueError as err:
            problems.append(str(err))
            continue
        entry = parsed[name]
        values = (
            entry["choices"] if entry["type"] == "categorical" else [entry["low"], entry["high"]]
        )
        for value in values:
            try:
                TrainConfig.from_dict({**base.to_dict(), name: value})
            except (ValueError, TypeError) as err:
                problems.append(f"{name}: {value!r} is not a valid value ({err})")
    if problems:
        raise ValueError("invalid search space: " + "; ".join(problems))
    return parsed


def _parse_one(name: str, spec) -> dict:
    if not isinstance(spec, dict):
        raise ValueError(
            f'{name}: expected {{"low": ..., "high": ...[, "log": true][, "step": ...]}} or '
            f'{{"choices": [...]}}, got {spec!r}'
        )
    # The normalised form (as a model card records it) parses to itself: "type" may be given.
    kind = "categorical" if "choices" in spec else "int" if name in _INT_FIELDS else "float"
    if spec.get("type", kind) != kind:
        raise ValueError(f"{name}: type {spec['type']!r} does not fit, expected {kind!r}")
    spec = {k: v for k, v in spec.items() if k != "type"}
    if "choices" in spec:
        extra = sorted(set(spec) - {"choices"})
        if extra:
            raise ValueError(f"{name}: choices take no other keys, got {extra}")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{name}: choices must be a non-empty list, got {choices!r}")
        if not all(c is None or isinstance(c, bool | int | float | str) for c in choices):
            raise ValueError(f"{name}: choices must be numbers, booleans, strings or null")
        return {"type": "categorical", "choices": list(choices)}
    extra = sorted(set(spec) - _RANGE_KEYS)
    if extra:
        raise ValueError(f"{name}: unknown keys {extra} (a range takes low, high, log, step)")
    if "low" not in spec or "high" not in spec:
        raise ValueError(f"{name}: a range needs both low and high, got {spec!r}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if name in _BOOL_FIELDS:
        raise ValueError(f'{name}: a boolean field takes {{"choices": [true, false]}}, not a range')
    number = int if kind == "int" else int | float
    for key, value in (("low", low), ("high", high)) + ((("step", step),) if step else ()):
        if not isinstance(value, number) or isinstance(value, bool) or not math.isfinite(value):
            what = "an int" if kind == "int" else "a finite number"
            raise ValueError(f"{name}: {key} must be {what}, got {value!r}")
    if not isinstance(log, bool):
        raise ValueError(f"{name}: log must be true or false, got {log!r}")
    if not low < high:
        raise ValueError(f"{name}: low must be below high, got low={low!r} high={high!r}")
    if log and low <= 0:
        raise ValueError(f"{name}: a log range needs low > 0, got {low!r}")
    if log and step is not None:
        raise ValueError(f"{name}: a range takes log or step, not both")
    if step is not None and step <= 0:
        raise ValueError(f"{name}: step must be > 0, got {step!r}")
    if kind == "float":
        low, high = float(low), float(high)
    return {"type": kind, "low": low, "high": high, "log": log, "step": step}


def _suggest(trial, space: dict[str, dict]) -> dict:
    params = {}
    for name, spec in space.items():
        if spec["type"] == "categorical":
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["type"] == "int":
            params[name] = trial.suggest_int(
                name, spec["low"], spec["high"], step=spec["step"] or 1, log=spec["log"]
            )
        else:
            params[name] = trial.suggest_float(
                name, spec["low"], spec["high"], step=spec["step"], log=spec["log"]
            )
    return params


def tune(
    transform_dir: str,
    examples_dir: str,
    model_dir: str,
    base: TrainConfig | None = None,
    trials: int = 20,
    search_space: dict | str | None = None,
    seed: int | None = None,
    verbose: int = 2,
) -> TrainResult:
    """Run `trials` training runs of an Optuna study (TPE, seeded with `seed`, default
    `base.seed`) over `search_space` (see the module's docstring) on top of `base`, maximising
    the validation AUC; publish the best trial's model to `model_dir` with the study recorded
    in its model card's "tuning" section. Returns the best trial's TrainResult."""
    import optuna

    base = base or TrainConfig()
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ValueError(f"tuning needs at least 1 trial, got {trials!r}")
    space = parse_search_space(search_space, base)  # before any training
    seed = base.seed if seed is None else seed
    started = time.time()
    remote = "://" in model_dir
    scratch = _scratch_root(model_dir)
    best: dict = {}  # "number", "auc", "result", "folder" of the best finished trial
    records: list[dict] = []

    def objective(trial) -> float:
        params = _suggest(trial, space)
        record = {"number": trial.number, "params": params}
        records.append(record)
        try:
            config = TrainConfig.from_dict({**base.to_dict(), **params})
        except ValueError as err:  # a combination TrainConfig refuses (each bound was fine)
            record.update(state="FAIL", error=str(err))
            return float("nan")
        folder = os.path.join(scratch, f"trial-{trial.number:03d}")
        import tensorflow as tf

        tf.keras.backend.clear_session()  # each trial starts from a fresh Keras state
        trial_started = time.time()
        try:
            result = train(transform_dir, examples_dir, folder, config, verbose=verbose)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            record.update(state="FAIL", error="training raised (the study stopped)")
            raise
        card = result.card
        auc = float(card["metrics"]["validation"].get("auc", float("nan")))
        record.update(
            validation_auc=auc,
            epochs_run=card["training"]["epochs_run"],
            best_epoch=card["training"]["best_epoch"],
            seconds=round(time.time() - trial_started, 1),
        )
        if not math.isfinite(auc):
            record.update(state="FAIL", error="validation AUC is not finite")
            shutil.rmtree(folder, ignore_errors=True)
            return float("nan")
        record["state"] = "COMPLETE"
        if not best or auc > best["auc"]:  # ties keep the earlier trial, as Optuna does
            if best:
                shutil.rmtree(best["folder"], ignore_errors=True)
            best.update(number=trial.number, auc=auc, result=result, folder=folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
        return auc

    try:
        with _cleanup_on_sigterm(), _optuna_logging(optuna, verbose):
            study = optuna.create_study(
                direction="maximize",
                sampler=optuna.samplers.TPESampler(seed=seed),
                study_name="swiperec-two-tower",
            )  # no storage: in memory
            study.optimize(objective, n_trials=trials, gc_after_trial=True)
        if not best:
            raise SwiperecError(
                f"no tuning trial finished with a validation AUC: {json.dumps(records)}"
            )
        result = best["result"]
        card = dict(result.card)
        chosen = card["hyperparameters"]
        card["tuning"] = {
            "library": f"optuna {optuna.__version__}",
            "sampler": {"name": "TPESampler", "seed": seed},
            "objective": "metrics.validation.auc, maximised",
            "trials_run": len(records),
            "search_space": space,
            "trials": records,
            "best_trial": best["number"],
            "best_validation_auc": best["auc"],
            "best_params": records[best["number"]]["params"],
            "chosen_config": chosen,
            "seconds": round(time.time() - started, 1),
        }
        _write_card(best["folder"], card)
        if remote:
            _copy_to_remote(best["folder"], model_dir)
        else:
            publish(best["folder"], model_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return TrainResult(model_dir, card, result.model, result.catalogue)


def _scratch_root(model_dir: str) -> str:
    """Where the trials train: beside a local `model_dir` (one filesystem, so the best trial
    moves into place with a rename); a local temporary folder for a gs:// one. A folder left by
    a run that was killed outright is removed first."""
    if "://" in model_dir:
        return tempfile.mkdtemp(prefix="swiperec-tuning-")
    model_dir = os.path.abspath(model_dir)
    root = os.path.join(os.path.dirname(model_dir), f".{os.path.basename(model_dir)}.tuning")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    return root


def _write_card(folder: str, card: dict) -> None:
    path = os.path.join(folder, MODEL_CARD)
    with open(path + ".tmp", "w") as handle:
        handle.write(json.dumps(card, indent=2))
    os.replace(path + ".tmp", path)


def _copy_to_remote(local: str, model_dir: str) -> None:
    """An object store has no rename: as `train()` does there, an earlier model card goes first
    and the new one is written last, so a copy that fails never looks like a finished model."""
    import tensorflow as tf

    card = os.path.join(model_dir, MODEL_CARD)
    if tf.io.gfile.exists(card):
        tf.io.gfile.remove(card)
    for folder, _, files in os.walk(local):
        target = os.path.join(model_dir, os.path.relpath(folder, local))
        tf.io.gfile.makedirs(target)
        for name in files:
            if folder != local or name != MODEL_CARD:
                tf.io.gfile.copy(os.path.join(folder, name), f"{target}/{name}", overwrite=True)
    tf.io.gfile.copy(os.path.join(local, MODEL_CARD), card, overwrite=True)


@contextmanager
def _cleanup_on_sigterm():
    """SIGTERM (how a step is stopped) raises SystemExit inside the study, so the `finally`
    that removes the scratch folder runs. Only in the main thread, where handlers can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _optuna_logging(optuna, verbose: int):
    """Optuna's one line per trial when `verbose`; warnings only otherwise."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)
