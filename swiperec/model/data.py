"""Training input: transformed examples joined to the transformed catalogue, as tf.data.

The transform step writes user-side examples (`examples_dir/{train,validation,test}`) that name
their video by `video_id`, and the catalogue once (`examples_dir/videos`). `Catalogue` holds the
catalogue's transformed features in memory (ragged rows, ~50 MB at 200k videos) and adds each
batch's video features by id, so a video's features are stored once, not once per example.

One thing is per example rather than per video: the video's age when the user saw it. The
catalogue's `video_age` is as of the snapshot; the join replaces it with
`video_age_feature(video_age_days)` of the example, the same function the video graph applies.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from swiperec.features.preprocessing import video_age_feature

CATALOGUE_FOLDER = "videos"


def tfrecord_files(examples_dir: str, split: str) -> list[str]:
    """The TFRecord shards of one split (or `videos`), sorted; raises if there are none.

    The transform writes them uncompressed (`part-*.tfrecord`); outputs of earlier versions,
    gzipped (`part-*.tfrecord.gz`), are read as well, one kind per folder."""
    folder = os.path.join(examples_dir, split)
    plain = sorted(tf.io.gfile.glob(os.path.join(folder, "part-*.tfrecord")))
    gzipped = sorted(tf.io.gfile.glob(os.path.join(folder, "part-*.tfrecord.gz")))
    if plain and gzipped:
        raise ValueError(f"{folder} holds both gzipped and plain TFRecord shards")
    if not plain and not gzipped:
        raise FileNotFoundError(f"no examples in {folder}")
    return plain or gzipped


def _compression(files: list[str]) -> str:
    return "GZIP" if files[0].endswith(".gz") else ""


# tf.data's autotuning is off in every pipeline here: deleting an autotuned iterator waits for
# its tuning thread (`RootDataset::Iterator::~Iterator`), which can be asleep for seconds
# between rounds. Without it, each parallel map runs one call per core.
_NOT_AUTOTUNED = tf.data.Options()
_NOT_AUTOTUNED.autotune.enabled = False


def _records(files: list[str]) -> tf.data.Dataset:
    return tf.data.TFRecordDataset(files, _compression(files)).with_options(_NOT_AUTOTUNED)


def count_video_rows(examples_dir: str, split: str = "train") -> dict[int, int]:
    """video_id -> number of examples of `split` naming it (likes, nopes and sampled)."""
    spec = {"video_id": tf.io.FixedLenFeature([], tf.int64)}
    ids = [
        batch["video_id"].numpy()
        for batch in _records(tfrecord_files(examples_dir, split))
        .batch(8192)
        .map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
    ]
    values, counts = np.unique(np.concatenate(ids) if ids else np.empty(0, np.int64),
                               return_counts=True)  # fmt: skip
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


class Catalogue:
    """The transformed catalogue, in memory, joined to batches of examples by video id.

    `features`: name -> [N] tensor or [N, None] `RaggedTensor`, row i being video `video_ids[i]`.
    `candidate_probability` [N]: how often each video is an in-batch candidate, for the softmax's
    log-frequency correction: its training rows (likes, nopes and sampled: every row is a
    candidate) over the most frequent video's, floored at one row. The softmax is unchanged by a
    constant factor, so relative frequencies serve; unlike shares of all rows they stay above
    TFRS's 1e-6 clip at any data size, so rare videos keep distinct corrections.

    The examples' own `sampling_probability` (the negative sampler's distribution) is not used
    here: in-batch candidates are every row's video, not the sampler's draws alone.
    """

    def __init__(self, video_ids: np.ndarray, features: dict, row_counts: dict[int, int]):
        self.video_ids = np.asarray(video_ids, dtype=np.int64)
        self.features = features
        counts = np.array([row_counts.get(int(v), 0) for v in self.video_ids], dtype=np.float64)
        most = max(1.0, float(counts.max(initial=0.0)))
        self.candidate_probability = tf.constant(np.maximum(counts, 1.0) / most, tf.float32)
        self._row = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.video_ids), tf.range(len(self.video_ids), dtype=tf.int64)
            ),
            default_value=-1,
        )

    @classmethod
    def load(cls, examples_dir: str, transformed_spec: dict, row_counts: dict[int, int]):
        """Read `examples_dir/videos` (the video graph's output, `transformed_spec`)."""
        parsed = [
            batch
            for batch in _records(tfrecord_files(examples_dir, CATALOGUE_FOLDER))
            .batch(16384)
            .map(lambda s: tf.io.parse_example(s, transformed_spec))
        ]
        features = {}
        for name in transformed_spec:
            parts = [batch[name] for batch in parsed]
            if isinstance(parts[0], tf.SparseTensor):
                features[name] = tf.concat([tf.RaggedTensor.from_sparse(p) for p in parts], 0)
            else:
                features[name] = tf.concat(parts, 0)
        video_ids = features.pop("video_id").numpy()
        if len(np.unique(video_ids)) != len(video_ids):
            raise ValueError(f"the catalogue in {examples_dir} names a video twice")
        return cls(video_ids, features, row_counts)

    def __len__(self) -> int:
        return len(self.video_ids)

    def rows(self, video_ids: tf.Tensor) -> tf.Tensor:
        """[B] video ids -> [B] catalogue rows; raises InvalidArgumentError for an unknown id."""
        rows = self._row.lookup(video_ids)
        tf.debugging.assert_non_negative(
            rows, message="an example names a video not in the catalogue"
        )
        return rows

    def join(self, batch: dict) -> dict:
        """A parsed batch of examples -> the same batch plus its videos' features.

        Adds every catalogue feature (sparse ones as `SparseTensor` [B, None], as parsing would
        give them), `video_age` as of each example, and `candidate_probability` [B].
        """
        rows = self.rows(batch["video_id"])
        joined = dict(batch)
        for name, values in self.features.items():
            taken = tf.gather(values, rows)
            joined[name] = taken.to_sparse() if isinstance(taken, tf.RaggedTensor) else taken
        joined["video_age"] = video_age_feature(batch["video_age_days"])
        joined["candidate_probability"] = tf.gather(self.candidate_probability, rows)
        return joined

    def all_rows(self, batch_size: int = 4096) -> tf.data.Dataset:
        """The whole catalogue as batches of video-tower inputs (its own ages), in row order."""
        ids = tf.data.Dataset.from_tensor_slices(self.video_ids).batch(batch_size)

        def features(video_ids):
            rows = self._row.lookup(video_ids)
            out = {"video_id": video_ids}
            for name, values in self.features.items():
                taken = tf.gather(values, rows)
                out[name] = taken.to_sparse() if isinstance(taken, tf.RaggedTensor) else taken
            return out

        return ids.map(features).with_options(_NOT_AUTOTUNED)


def example_dataset(
    examples_dir: str,
    split: str,
    spec: dict,
    catalogue: Catalogue,
    batch_size: int,
    shuffle_buffer: int = 0,
    seed: int | None = None,
    repeat: bool = False,
    reshuffle: bool = True,
) -> tf.data.Dataset:
    """Batches of one split's examples, parsed with `spec` (the user graph's transformed
    feature spec) and joined to the catalogue. Shuffled (seeded) when `shuffle_buffer` > 0:
    the transform writes each user's examples together, and a batch of a few users' rows makes
    a poor in-batch softmax (their other likes become negatives). With `repeat=False` and a
    shuffle, each pass reshuffles (training); `reshuffle=False` keeps one order (validation,
    so its in-batch metrics compare across epochs).

    Not autotuned (`_NOT_AUTOTUNED`): Keras makes a new iterator for every epoch and every
    validation pass, and with autotuning a fit of the default data lost up to 30 s an epoch
    at random waiting for their deletion; without it the model is fed as well (an epoch in
    ~50 s, no stalls)."""
    files = tfrecord_files(examples_dir, split)
    if shuffle_buffer:
        compression = _compression(files)
        files = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
        records = files.interleave(
            lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
            cycle_length=4,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        ).shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=reshuffle)
    else:
        records = _records(files)
    if repeat:
        records = records.repeat()
    return (
        records.batch(batch_size)
        .map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
        .map(catalogue.join, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
        .with_options(_NOT_AUTOTUNED)
    )


def ranking_feature_names(config) -> tuple[str, ...]:
    """The pair features a model with `config` weighs in its ranking stage, in order: none
    without `match_features`; the match with the user's history; then, with `video_evidence`,
    the video's swipe evidence (`RANKING_FEATURE_NAMES`)."""
    from swiperec.features.video_evidence import MATCH_FEATURE_NAMES, RANKING_FEATURE_NAMES

    if not config.match_features:
        return ()
    return RANKING_FEATURE_NAMES if config.video_evidence else MATCH_FEATURE_NAMES


def card_ranking_weights(card: dict) -> np.ndarray | None:
    """[len(RANKING_FEATURE_NAMES)] float32: a model card's `match_weights` in
    `RANKING_FEATURE_NAMES` order (None: a model without match features). A model trained
    without the video evidence weighs it 0."""
    from swiperec.features.video_evidence import RANKING_FEATURE_NAMES, VIDEO_EVIDENCE_NAMES

    weights = card.get("match_weights")
    if weights is None:
        return None
    missing = [
        n for n in RANKING_FEATURE_NAMES if n not in weights and n not in VIDEO_EVIDENCE_NAMES
    ]
    if missing:
        raise ValueError(f"the model card's match_weights have no {', '.join(missing)}")
    return np.array([weights.get(n, 0.0) for n in RANKING_FEATURE_NAMES], np.float32)


def served_ranking_weights(card: dict) -> np.ndarray | None:
    """`card_ranking_weights` as serving weighs them: plus the model's `exposure_prior` on
    `video_swipes` (0 for a card from before it existed, and for a model trained without the
    videos' swipe evidence, which serves without it). What the video set stores and the
    evaluator's served lists use; the like/nope score keeps `card_ranking_weights`."""
    from swiperec.features.video_evidence import RANKING_FEATURE_NAMES

    weights = card_ranking_weights(card)
    if weights is None or "video_swipes" not in card["match_weights"]:
        return weights
    prior = float(card.get("hyperparameters", {}).get("exposure_prior", 0.0))
    weights[RANKING_FEATURE_NAMES.index("video_swipes")] += prior
    return weights


# The new-release bonus of a model card from before `TrainConfig.new_release_bonus`: the
# constant the SQL function used then.
EARLIER_NEW_RELEASE_BONUS = 1.0


def served_new_release_bonus(card: dict) -> float:
    """The exploration bonus serving adds to a new release's like logit for the model of
    `card` (`TrainConfig.new_release_bonus`; `EARLIER_NEW_RELEASE_BONUS` for a card from before
    it). What the video set stores and the evaluator's served lists use."""
    hyperparameters = card.get("hyperparameters", {})
    return float(hyperparameters.get("new_release_bonus", EARLIER_NEW_RELEASE_BONUS))


def require_match_features(available, names) -> None:
    """Raise a ValueError naming the pair features `names` missing from `available` (the
    features of a batch or of the examples' spec), if any."""
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(
            f"the examples have no {', '.join(missing)} (made by an older transform): re-run "
            "`swiperec transform`, or train with --no-match-features (match_features off)"
        )


def read_match_features(examples_dir: str, split: str, spec: dict, features):
    """(match [N, len(features)] float32, label [N], weight [N]) of one split's examples:
    the pair features `features` alone, parsed without the rest of each example."""
    require_match_features(spec, features)
    names = [*features, "label", "weight"]
    parsed = {name: [] for name in names}
    for batch in _records(tfrecord_files(examples_dir, split)).batch(8192):
        values = tf.io.parse_example(batch, {name: spec[name] for name in names})
        for name in names:
            parsed[name].append(values[name].numpy())
    columns = {name: np.concatenate(parts) for name, parts in parsed.items()}
    match = np.stack([columns[name] for name in features], axis=1)
    return match.astype(np.float32), columns["label"], columns["weight"]
