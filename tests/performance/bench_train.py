"""Benchmark: training on the default data (32,304 videos), tower latency, and the loss mix.

    python -m tests.performance.bench_train                  # prepare, train, measure
    python -m tests.performance.bench_train --work DIR       # keep the prepared data in DIR
    python -m tests.performance.bench_train --work DIR --mixes   # the loss-weight study
    python -m tests.performance.bench_train --videos 2000 --users 200 --pseudo-users 400 --epochs 2
    python -m tests.performance.bench_train --work DIR --batch-size 2048 --out F   # another batch

Prepares the default synthetic data, or the one --videos/--users/--pseudo-users ask for
(generated, written as a snapshot, transformed; reused from --work when already there), then
trains with the default TrainConfig in a child process (`swiperec train`) and reports its
wall time and peak RSS: the goal is < 10 min and < 4 GB on 2 cores (the original
requirement: 1 h and 8 GB).

Baselines in the same run:
- time: one pass of the input pipeline alone (read, parse, join; no model), per epoch;
- quality: AUC of like vs nope/sampled on the validation and test periods for the model, for
  popularity (training-row counts) and for the ground truth's own P(like) (the ceiling);
  and Recall@K of each test like against the whole catalogue, model vs popularity;
- latency: one embedding from each exported SavedModel on raw features (p50/p95 of single
  requests; goal p95 < 20 ms), against the Keras tower on already-transformed features;
- compute (`flops` in the results): the model FLOP utilisation, the model's FLOPs per second
  of fit against numpy's matmul rate measured in the same run, and against TensorFlow's own
  rate for the model's dense products alone (`flop_utilisation`; goal >= 50 %). The fit's
  time includes tracing the graphs, which a short run does not amortise.

--mixes trains once per (retrieval_weight, pointwise_weight) and reports the same quality
figures, to choose the default mix. Results: tests/performance/results/train_default.json
(train_<videos>.json for another size), train_mixes.json; the committed training figures are
the performance suite's (results/suite/<scale>.json), which runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from tests.performance.record import add_out_argument, save

RESULTS = Path(__file__).parent / "results"
MIXES = ((1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.25), (0.25, 1.0))
RECALL_AT = (10, 50, 100)


def prepare(work: Path, data) -> tuple[Path, Path]:
    """The data set (a `SyntheticConfig`), snapshotted and transformed under `work` (reused if
    there)."""
    from swiperec.data.synthetic import generate
    from swiperec.features.transform import run_transform
    from tests.performance.bench_transform import write_snapshot

    transform, examples = work / "transform", work / "examples"
    recorded = work / "data.json"
    if (examples / "metadata.json").exists() and (work / "ground_truth.npz").exists():
        if recorded.exists() and json.loads(recorded.read_text()) != data.__dict__:
            raise SystemExit(f"{work} holds another data set ({recorded}): use another --work")
        return transform, examples
    dataset = generate(data)
    dataset.ground_truth.save(work / "ground_truth.npz")
    snapshot = work / "snapshot"
    if not (snapshot / "metadata.json").exists():
        write_snapshot(dataset, snapshot)
    del dataset
    run_transform(str(snapshot), str(transform), str(examples))
    recorded.write_text(json.dumps(data.__dict__, default=str))
    return transform, examples


def train_in_child(transform: Path, examples: Path, out: Path, overrides: dict) -> dict:
    """`swiperec train` in a child process: wall seconds and the child's peak RSS."""
    command = [sys.executable, "-m", "swiperec.cli", "train", "--transform", str(transform),
               "--examples", str(examples), "--out", str(out), "--quiet"]  # fmt: skip
    for flag, value in overrides.items():
        command += [flag, str(value)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "seconds": round(seconds, 1),
        # ru_maxrss of children is the largest child so far: exact for the first child.
        "peak_rss_mb": round(peak / 1024) if peak > before else None,
    }


def flop_utilisation(model_dir: Path, card: dict) -> dict:
    """The model FLOP utilisation of training: the FLOPs the model needs, counted from its
    shapes, over the fit's wall time, against two float32 matmul rates measured now: numpy's
    (the machine's calibration, the best of three) and TensorFlow's for the model's own dense
    products (`tf_matmul_gflops`). numpy's BLAS may use instructions TensorFlow's kernels are
    not built for (the TensorFlow wheel says so of AVX-512 on a Xeon), so numpy's rate
    measures the CPU and TensorFlow's what the model's framework can get from it.

    Per example, forward: 2 x in x out for every dense layer of both towers, plus the example's
    row of in-batch logits (2 x batch x dimension); a training step is ~3x its forward pass
    (forward, and backward for activations and weights), validation 1x. Embedding bags are
    left out, as the ranking heads' few parameters: a lookup is memory traffic, and a small
    bag's product with its [B, vocab] matrix of weights (`EmbeddingBag`) multiplies mostly
    zeros, work the model does not need."""
    import tensorflow as tf

    from swiperec.model.export import load_keras_tower
    from tests.performance.record import calibration

    shapes = []
    for tower in ("user_tower", "video_tower"):
        for layer in load_keras_tower(str(model_dir / f"{tower}.keras")).layers:
            if isinstance(layer, tf.keras.layers.Dense):
                shapes.append(tuple(int(n) for n in layer.kernel.shape))
    dense = sum(2 * fan_in * fan_out for fan_in, fan_out in shapes)
    batch = card["hyperparameters"]["batch_size"]
    logits = 2 * batch * card["embedding_dim"]
    forward = dense + logits
    examples, training = card["input"]["examples"], card["training"]
    # An epoch is every training example, or steps_per_epoch batches when that is set (the
    # input then repeats).
    fixed_steps = card["hyperparameters"].get("steps_per_epoch")
    trained = (fixed_steps * card["hyperparameters"]["batch_size"] if fixed_steps
               else examples["train"])  # fmt: skip
    per_epoch = 3 * forward * trained + forward * examples["validation"]
    achieved = training["epochs_run"] * per_epoch / training["fit_seconds"] / 1e9
    # The best of three calibrations: one can read low on a shared machine (169 against
    # 197-212 GFLOP/s the same hour), and a low rate would overstate the utilisation.
    matmul = max(calibration()["matmul_gflops"] for _ in range(3))
    tf_matmul = tf_matmul_gflops(shapes, batch)
    return {
        "forward_flops_per_example": forward,
        "achieved_gflops": round(achieved, 2),
        "matmul_gflops_same_run": matmul,
        "utilisation": round(achieved / matmul, 4),
        "tf_matmul_gflops_model_shapes": tf_matmul,
        "utilisation_vs_tf_matmul": round(achieved / tf_matmul, 4),
    }


def tf_matmul_gflops(shapes: list[tuple[int, int]], batch: int, repeats: int = 5) -> float:
    """TensorFlow's float32 matmul rate on the model's dense layers, measured now: for each
    layer (fan_in, fan_out), the three products of a training step on a batch (forward
    [batch, in] x [in, out]; the gradients for the inputs and for the weights), all in one
    graph, with nothing else: the most the model's framework gets from this CPU for the work
    the FLOP count counts. Best of `repeats` timings of ~10 GFLOP each."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    xs = [tf.constant(rng.standard_normal((batch, i), dtype=np.float32)) for i, _ in shapes]
    ws = [tf.constant(rng.standard_normal((i, o), dtype=np.float32)) for i, o in shapes]
    gs = [tf.constant(rng.standard_normal((batch, o), dtype=np.float32)) for _, o in shapes]

    @tf.function
    def step():
        sums = []
        for x, w, g in zip(xs, ws, gs, strict=True):
            sums.append(tf.reduce_sum(tf.matmul(x, w)))  # forward
            sums.append(tf.reduce_sum(tf.matmul(g, w, transpose_b=True)))  # d inputs
            sums.append(tf.reduce_sum(tf.matmul(x, g, transpose_a=True)))  # d weights
        return tf.add_n(sums)

    flops = 3 * sum(2 * batch * i * o for i, o in shapes)
    calls = max(1, round(1e10 / flops))
    step().numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            result = step()
        result.numpy()
        best = min(best, time.perf_counter() - start)
    return round(calls * flops / best / 1e9, 1)


def popularity(examples: Path) -> dict[int, int]:
    from swiperec.model.data import count_video_rows

    return count_video_rows(str(examples), "train")


def quality(model_dir: Path, transform: Path, examples: Path, truth_path: Path) -> dict:
    """AUC (model, popularity, oracle) per period and catalogue-wide Recall@K of test likes."""
    import tensorflow_transform as tft

    from swiperec.data.synthetic_truth import GroundTruth
    from swiperec.evaluation.metrics import roc_auc
    from swiperec.model.data import Catalogue, example_dataset
    from swiperec.model.embed import embed_catalogue, embed_examples
    from swiperec.model.export import load_keras_tower

    outputs = {g: tft.TFTransformOutput(str(transform / g)) for g in ("user", "video")}
    counts = popularity(examples)
    catalogue = Catalogue.load(str(examples), outputs["video"].transformed_feature_spec(), counts)
    user_tower = load_keras_tower(str(model_dir / "user_tower.keras"))
    video_tower = load_keras_tower(str(model_dir / "video_tower.keras"))
    videos = embed_catalogue(video_tower, catalogue)
    row_of = {int(v): i for i, v in enumerate(catalogue.video_ids)}
    popularity_score = np.array([counts.get(int(v), 0) for v in catalogue.video_ids], float)
    truth = GroundTruth.load(truth_path)
    spec = outputs["user"].transformed_feature_spec()
    figures = {}
    for split in ("validation", "test"):
        data = example_dataset(str(examples), split, spec, catalogue, 4096)
        embedded = embed_examples(user_tower, data)
        rows = np.array([row_of[int(v)] for v in embedded.video_id])
        model_scores = np.sum(embedded.user * videos[rows], axis=1)
        oracle = truth.p_like(
            [k.removeprefix("review:") for k in embedded.user_key],
            [f"v{int(v):07d}" for v in embedded.video_id],
        )
        figures[split] = {
            "examples": len(rows),
            "auc_model": round(roc_auc(embedded.label, model_scores), 4),
            "auc_popularity": round(roc_auc(embedded.label, popularity_score[rows]), 4),
            "auc_oracle": round(roc_auc(embedded.label, oracle), 4),
        }
        f = figures[split]
        f["share_of_achievable_auc"] = round((f["auc_model"] - 0.5) / (f["auc_oracle"] - 0.5), 3)
        if split == "test":
            likes = embedded.label == 1
            f.update(catalogue_recall(embedded.user[likes], rows[likes], videos, popularity_score))
    return figures


def catalogue_recall(users, positive_rows, videos, popularity_score) -> dict:
    """Share of test likes whose video ranks in the top K of the whole catalogue for that user
    as of the like (nothing excluded: the evaluator's metrics exclude what the user decided)."""
    ranks = []
    for start in range(0, len(users), 1024):
        scores = users[start : start + 1024] @ videos.T
        own = scores[np.arange(len(scores)), positive_rows[start : start + 1024]]
        ranks.append((scores > own[:, None]).sum(axis=1))
    ranks = np.concatenate(ranks)
    popularity_rank = (popularity_score[None, :] > popularity_score[positive_rows][:, None]).sum(1)
    out = {"likes": len(ranks)}
    for k in RECALL_AT:
        out[f"recall@{k}_model"] = round(float((ranks < k).mean()), 4)
        out[f"recall@{k}_popularity"] = round(float((popularity_rank < k).mean()), 4)
    return out


def latency(model_dir: Path, transform: Path, examples: Path, snapshot: Path, n: int = 300):
    """p50/p95 (ms) of one embedding per call: SavedModels on raw features, Keras on
    transformed features."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from swiperec.features.config import FeatureConfig
    from swiperec.features.events import load_snapshot
    from swiperec.features.preprocessing import user_feature_spec, video_row_spec
    from swiperec.features.raw_features import video_raw_features
    from swiperec.features.user_history import UserHistory
    from swiperec.model.data import Catalogue, example_dataset
    from swiperec.model.export import load_keras_tower, load_serving_tower, serialize_raw
    from swiperec.model.towers import USER_TOWER_INPUTS, VIDEO_TOWER_INPUTS

    catalogue, events, _ = load_snapshot(snapshot)
    now = int(events.time_us.max())
    _, is_pseudo, rows = next(iter(events.user_slices()))
    history = UserHistory(catalogue, FeatureConfig(), is_pseudo)
    for video, label, t in zip(events.video_id[rows], events.label[rows], events.time_us[rows],
                               strict=True):  # fmt: skip
        history.add(int(video), int(label), int(t))
    requests = {
        "user_tower": serialize_raw([history.features(now)], user_feature_spec()),
        "video_tower": serialize_raw([video_raw_features(catalogue, 0, now)], video_row_spec()),
    }
    outputs = {g: tft.TFTransformOutput(str(transform / g)) for g in ("user", "video")}
    table = Catalogue.load(str(examples), outputs["video"].transformed_feature_spec(), {})
    [batch] = list(
        example_dataset(
            str(examples), "test", outputs["user"].transformed_feature_spec(), table, 1
        ).take(1)
    )
    figures = {}
    for name, inputs in (("user_tower", USER_TOWER_INPUTS), ("video_tower", VIDEO_TOWER_INPUTS)):
        serve = load_serving_tower(str(model_dir / name))
        request = tf.constant(requests[name])
        keras_tower = load_keras_tower(str(model_dir / f"{name}.keras"))
        features = {k: batch[k] for k in inputs}
        keras_call = tf.function(lambda f, tower=keras_tower: tower(f, training=False))
        figures[name] = {
            "savedmodel_raw": _timed(
                lambda s=serve, r=request: s(examples=r)["embedding"].numpy(), n
            ),
            "keras_transformed": _timed(lambda k=keras_call, f=features: k(f).numpy(), n),
        }
    return figures


def _timed(call, n: int) -> dict:
    """p50/p95 in ms of `n` calls after 20 warm-up calls."""
    for _ in range(20):
        call()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": round(float(np.percentile(samples, 50)), 2),
        "p95_ms": round(float(np.percentile(samples, 95)), 2),
    }


def input_pipeline_seconds(transform: Path, examples: Path) -> float:
    """One pass over the training split through the trainer's input pipeline, no model."""
    import tensorflow_transform as tft

    from swiperec.model.config import TrainConfig
    from swiperec.model.data import Catalogue, example_dataset

    config = TrainConfig()
    outputs = {g: tft.TFTransformOutput(str(transform / g)) for g in ("user", "video")}
    catalogue = Catalogue.load(
        str(examples), outputs["video"].transformed_feature_spec(), popularity(examples)
    )
    data = example_dataset(
        str(examples), "train", outputs["user"].transformed_feature_spec(), catalogue,
        config.batch_size, shuffle_buffer=config.shuffle_buffer, seed=config.seed,
    )  # fmt: skip
    start = time.perf_counter()
    for _ in data:
        pass
    return time.perf_counter() - start


def main(argv=None) -> int:
    from swiperec.data.synthetic import SyntheticConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", help="folder for the prepared data (default: a temporary one)")
    parser.add_argument("--mixes", action="store_true", help="run the loss-weight study")
    defaults = SyntheticConfig()
    parser.add_argument("--videos", type=int, default=defaults.videos)
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--pseudo-users", type=int, default=defaults.pseudo_users)
    parser.add_argument("--epochs", type=int, help="maximum epochs (default: the trainer's)")
    parser.add_argument("--batch-size", type=int, help="examples a batch (default: the trainer's)")
    add_out_argument(parser, "train_default.json")
    args = parser.parse_args(argv)
    data = SyntheticConfig(videos=args.videos, users=args.users, pseudo_users=args.pseudo_users)
    with tempfile.TemporaryDirectory(prefix="swiperec-bench-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        transform, examples = prepare(work, data)
        truth = work / "ground_truth.npz"
        if args.mixes:
            return run_mixes(work, transform, examples, truth)
        flags = {"--epochs": args.epochs, "--batch-size": args.batch_size}
        overrides = {flag: value for flag, value in flags.items() if value}
        name = "default" if data == SyntheticConfig() else str(data.videos)
        name += f"_batch_{args.batch_size}" if args.batch_size else ""
        out = args.out or RESULTS / f"train_{name}.json"
        return run_default(work, transform, examples, truth, data, overrides, out)


def run_default(work, transform, examples, truth, data, overrides, out) -> int:
    from swiperec.model.train import read_model_card

    model_dir = work / "model"
    run = train_in_child(transform, examples, model_dir, overrides)
    card = read_model_card(str(model_dir))
    epochs = card["training"]["epochs_run"]
    input_s = input_pipeline_seconds(transform, examples)
    figures = {
        "data": data.__dict__,
        "examples": card["input"]["examples"],
        "training_seconds": run["seconds"],
        "training_peak_rss_mb": run["peak_rss_mb"],
        "epochs_run": epochs,
        "best_epoch": card["training"]["best_epoch"],
        "fit_seconds_per_epoch": round(card["training"]["fit_seconds"] / epochs, 1),
        "baseline_input_pipeline_seconds_per_epoch": round(input_s, 1),
        "epoch_vs_input_pipeline": round(card["training"]["fit_seconds"] / epochs / input_s, 2),
        "goal": {"seconds": 600, "peak_rss_mb": 4096},
        "flops": flop_utilisation(model_dir, card),
        "validation_metrics": card["metrics"]["validation"],
        "quality": quality(model_dir, transform, examples, truth),
        "latency": latency(model_dir, transform, examples, work / "snapshot"),
        "hyperparameters": card["hyperparameters"],
    }
    path = save(figures, out, "train_default.json")
    print(
        f"training, {data.videos:,} videos, {data.users:,} users, {data.pseudo_users:,} reviewers"
    )
    print(
        f"  train                  {run['seconds']:>8.1f} s  peak RSS {run['peak_rss_mb']:,} MB"
        f"  ({epochs} epochs, best {card['training']['best_epoch']})"
    )
    print(
        f"  per epoch              {figures['fit_seconds_per_epoch']:>8.1f} s  "
        f"(input pipeline alone {input_s:.1f} s: {figures['epoch_vs_input_pipeline']:.1f}x)"
    )
    flops = figures["flops"]
    print(
        f"  model FLOP utilisation {flops['utilisation']:>8.1%}  ({flops['achieved_gflops']} "
        f"GFLOP/s against numpy's matmul rate of {flops['matmul_gflops_same_run']} GFLOP/s; "
        f"goal 50 %)\n"
        f"                         {flops['utilisation_vs_tf_matmul']:>8.1%}  (against "
        f"TensorFlow's, {flops['tf_matmul_gflops_model_shapes']} GFLOP/s on the model's "
        f"dense products)"
    )
    for split, q in figures["quality"].items():
        print(
            f"  {split:<10} AUC model {q['auc_model']:.4f}  popularity {q['auc_popularity']:.4f}"
            f"  oracle {q['auc_oracle']:.4f}  share {q['share_of_achievable_auc']:.2f}"
        )
    test = figures["quality"]["test"]
    for k in RECALL_AT:
        print(
            f"  test recall@{k:<4} model {test[f'recall@{k}_model']:.4f}  "
            f"popularity {test[f'recall@{k}_popularity']:.4f}"
        )
    for name, timings in figures["latency"].items():
        raw, keras = timings["savedmodel_raw"], timings["keras_transformed"]
        print(
            f"  {name:<11} one embedding from raw: p50 {raw['p50_ms']:.2f} ms p95 "
            f"{raw['p95_ms']:.2f} ms  (Keras on transformed: p95 {keras['p95_ms']:.2f} ms)"
        )
    print(f"saved {path}")
    return 0


def run_mixes(work, transform, examples, truth) -> int:
    from swiperec.model.train import read_model_card

    rows = []
    for retrieval, pointwise in MIXES:
        model_dir = work / f"model_r{retrieval}_p{pointwise}"
        run = train_in_child(
            transform, examples, model_dir,
            {"--retrieval-weight": retrieval, "--pointwise-weight": pointwise},
        )  # fmt: skip
        card = read_model_card(str(model_dir))
        q = quality(model_dir, transform, examples, truth)
        rows.append({
            "retrieval_weight": retrieval, "pointwise_weight": pointwise,
            "seconds": run["seconds"], "epochs_run": card["training"]["epochs_run"],
            "validation_auc": q["validation"]["auc_model"], "test_auc": q["test"]["auc_model"],
            "test_share_of_achievable_auc": q["test"]["share_of_achievable_auc"],
            **{f"test_recall@{k}": q["test"][f"recall@{k}_model"] for k in RECALL_AT},
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "train_mixes.json"
    path.write_text(json.dumps(rows, indent=2))
    print(
        f"{'retrieval':>9} {'pointwise':>9} {'val AUC':>8} {'test AUC':>8} {'R@50':>7} {'R@100':>7}"
    )
    for r in rows:
        print(
            f"{r['retrieval_weight']:>9} {r['pointwise_weight']:>9} {r['validation_auc']:>8.4f} "
            f"{r['test_auc']:>8.4f} {r['test_recall@50']:>7.4f} {r['test_recall@100']:>7.4f}"
        )
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
