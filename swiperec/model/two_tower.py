"""The two-tower model: composes the towers and implements `compute_loss`.

Loss = retrieval_weight * in-batch softmax + pointwise_weight * like/nope cross-entropy.

- In-batch softmax (TFRS `tasks.Retrieval`): each liked (user, video) row is a query whose
  positive is its own video; every other video in the batch is a negative. Logits are cosine /
  temperature, minus log(candidate frequency) (popular videos are in-batch negatives more
  often than they deserve), with accidental hits (the same video twice) removed. Nope and
  sampled rows take part as candidates only.
- Pointwise: every row, like = 1 and nope/sampled = 0, with the like logit
  `scale_v * cos + bias_v + bias_u`: the video's ranking terms (`build_video_ranker`: its
  general appeal and how much taste decides it) and the user's bias (`build_user_ranker`).
  This is where explicit nopes teach the model what a user turned down; the in-batch softmax
  alone cannot tell "disliked" from "not shown". With `match_features`, the logit adds
  `w . match`: how the video matches the user's history (`UserHistory.match`), one weight per
  feature. Serving retrieves by cosine and then ranks the candidates by this logit (the
  user's bias left out: it does not change a user's order).

Both losses are weighted means over the rows they cover, weighted by each example's `weight`
(pseudo-user examples can count less).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from swiperec.model.config import TrainConfig
from swiperec.model.data import ranking_feature_names, require_match_features
from swiperec.model.towers import (
    USER_TOWER_INPUTS,
    VIDEO_TOWER_INPUTS,
    build_user_ranker,
    build_video_ranker,
)


def like_logits(cosine, video_ranking, user_bias) -> tf.Tensor:
    """[B] like logits `scale * cosine + bias + user_bias`; video_ranking [B, 2] = (bias, scale)."""
    return video_ranking[:, 1] * cosine + video_ranking[:, 0] + user_bias


def match_inputs(features: dict, names) -> tf.Tensor:
    """[B, len(names)] float32: the batch's pair features `names`, in that order."""
    require_match_features(features, names)
    return tf.stack([tf.cast(features[name], tf.float32) for name in names], -1)


def match_weights(model) -> dict[str, float] | None:
    """The trained weights of the raw match features by name (None: a model without them):
    what serving multiplies the shares by."""
    if model.match is None:
        return None
    kernel = model.match.kernel.numpy()[:, 0] / model.match_scale.numpy()
    return {name: float(w) for name, w in zip(model.match_names, kernel, strict=True)}


def fit_match_start(match, label, weight, l2: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Where the match weights start: (scale [F], kernel [F]) for the F pair features
    (`ranking_feature_names`).

    The shares are small numbers whose useful weights are several logits; Adam moves a weight
    by about the learning rate per step, so from zero they would still be far from useful when
    validation AUC peaks (an epoch or two). They start instead from the weighted logistic
    regression of the like on the match features alone (scipy's L-BFGS; an intercept and a
    small L2 `l2` per example), over the features divided by their root mean square `scale`,
    and training goes on from there in those units.
    """
    from scipy.optimize import minimize

    match = np.asarray(match, np.float64)
    label = np.asarray(label, np.float64)
    weight = np.asarray(weight, np.float64)
    scale = np.sqrt(np.mean(match**2, axis=0))
    scale[scale == 0] = 1.0  # a feature that is always 0 (no makers, say): nothing to learn
    x = np.concatenate([match / scale, np.ones((len(match), 1))], axis=1)
    total = weight.sum()

    def loss(w):
        z = x @ w
        # weighted mean log-loss of sigmoid(z), and its gradient
        per_row = np.logaddexp(0.0, z) - label * z
        p = np.exp(-np.logaddexp(0.0, -z))
        gradient = x.T @ (weight * (p - label)) / total + l2 * np.append(w[:-1], 0.0)
        return float(weight @ per_row / total + 0.5 * l2 * w[:-1] @ w[:-1]), gradient

    fitted = minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B")
    kernel = fitted.x[:-1]
    if not np.isfinite(kernel).all():  # nothing usable (e.g. no examples): start from zero
        kernel = np.zeros_like(kernel)
    return scale.astype(np.float32), kernel.astype(np.float32)


def pointwise_loss(logits, label, weight) -> tf.Tensor:
    """Weighted mean binary cross-entropy of `sigmoid(logits)` against `label`.

    logits, label, weight: [B]. Returns a scalar; 0 when all weights are 0.
    """
    per_row = tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(label, tf.float32), logits)
    weight = tf.cast(weight, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(weight * per_row), tf.reduce_sum(weight))


def in_batch_softmax_loss(
    task: tfrs.tasks.Retrieval,
    user_embeddings,
    video_embeddings,
    label,
    weight,
    video_ids,
    candidate_probability,
) -> tf.Tensor:
    """Weighted mean in-batch softmax cross-entropy over the liked rows.

    user_embeddings, video_embeddings: [B, D] L2-normalised; label [B] 0/1; weight [B];
    video_ids [B] int64 (for accidental hits); candidate_probability [B] (each row's video's
    share of training rows; None turns the correction off). `task` must sum its loss
    (`Reduction.SUM`); this divides by the liked rows' total weight. Returns a scalar.
    """
    query_weight = tf.cast(label, tf.float32) * tf.cast(weight, tf.float32)
    total = task(
        user_embeddings,
        video_embeddings,
        sample_weight=query_weight,
        candidate_sampling_probability=candidate_probability,
        candidate_ids=video_ids,
        compute_metrics=False,
    )
    return tf.math.divide_no_nan(total, tf.reduce_sum(query_weight))


class TwoTowerModel(tfrs.models.Model):
    """User tower x video tower, trained on batches of joined examples.

    A batch is a dict of [B]-rowed tensors: every `USER_TOWER_INPUTS` and `VIDEO_TOWER_INPUTS`
    feature, plus `label` (int64 0/1), `weight` (float32) and `candidate_probability` (float32,
    see `swiperec.model.data`).
    """

    def __init__(self, user_tower, video_tower, config: TrainConfig, train_examples: int,
                 match_start: tuple[np.ndarray, np.ndarray] | None = None):  # fmt: skip
        super().__init__()
        self.user_tower = user_tower
        self.video_tower = video_tower
        self.config = config
        # The ranking terms share the towers' inputs and feature layers; `train_examples` sizes
        # the prior on the videos' own biases (`build_video_ranker`).
        self.video_ranker = build_video_ranker(video_tower, config, train_examples)
        self.user_ranker = build_user_ranker(user_tower)
        # One weight per pair feature (`ranking_feature_names`: the match features, and the
        # video's swipe evidence with `video_evidence`), over the features divided by
        # `scale`, starting from `kernel` (`fit_match_start`; without it: scale 1, weights 0).
        self.match = self.match_scale = None
        self.match_names = ranking_feature_names(config)
        if self.match_names:
            n = len(self.match_names)
            scale, kernel = match_start or (np.ones(n, np.float32), np.zeros(n, np.float32))
            self.match_scale = tf.constant(scale, tf.float32)
            self.match = tf.keras.layers.Dense(
                1, use_bias=False, name="match",
                kernel_initializer=tf.keras.initializers.Constant(np.reshape(kernel, (n, 1))),
            )  # fmt: skip
            self.match.build((None, n))
        # Each side in one pass for training: one feature computation, and one id-dropout
        # mask for a video's id embedding and its own bias alike (a dropped row is then a
        # new video's case, content alone, at the rate `video_id_dropout`).
        self._video_side = tf.keras.Model(
            video_tower.input, [video_tower.output, self.video_ranker.output]
        )
        self._user_side = tf.keras.Model(
            user_tower.input, [user_tower.output, self.user_ranker.output]
        )
        self.retrieval = tfrs.tasks.Retrieval(
            loss=tf.keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.SUM
            ),
            temperature=config.temperature,
            remove_accidental_hits=config.remove_accidental_hits,
            # Cheap: ranks within the batch only. The full-catalogue metrics belong to the
            # evaluator (FactorizedTopK inside fit would scan every video per batch).
            batch_metrics=[tf.keras.metrics.TopKCategoricalAccuracy(10, name="in_batch_top10")],
        )
        self.auc = tf.keras.metrics.AUC(name="auc", from_logits=True, num_thresholds=1000)
        self.retrieval_loss_mean = tf.keras.metrics.Mean(name="retrieval_loss")
        self.pointwise_loss_mean = tf.keras.metrics.Mean(name="pointwise_loss")

    def call(self, features, training=False):
        """features -> (user [B, D], video [B, D]), both L2-normalised."""
        user = self.user_tower({k: features[k] for k in USER_TOWER_INPUTS}, training=training)
        video = self.video_tower({k: features[k] for k in VIDEO_TOWER_INPUTS}, training=training)
        return user, video

    def logits(self, features, training=False) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """features -> (user [B, D], video [B, D], like logits [B])."""
        video, ranking = self._video_side(
            {k: features[k] for k in VIDEO_TOWER_INPUTS}, training=training
        )
        user, user_bias = self._user_side(
            {k: features[k] for k in USER_TOWER_INPUTS}, training=training
        )
        logits = like_logits(tf.reduce_sum(user * video, axis=-1), ranking, user_bias)
        if self.match is not None:
            match = match_inputs(features, self.match_names)
            logits += self.match(match / self.match_scale)[:, 0]
        return user, video, logits

    def compute_loss(self, features, training=False) -> tf.Tensor:
        user, video, logits = self.logits(features, training=training)
        label, weight = features["label"], features["weight"]
        pointwise = pointwise_loss(logits, label, weight)
        probability = features["candidate_probability"] if self.config.logq_correction else None
        retrieval = in_batch_softmax_loss(
            self.retrieval,
            user,
            video,
            label,
            weight,
            features["video_id"],
            probability,
        )
        self.auc.update_state(label, logits, weight)
        self.retrieval_loss_mean.update_state(retrieval)
        self.pointwise_loss_mean.update_state(pointwise)
        return self.config.retrieval_weight * retrieval + self.config.pointwise_weight * pointwise
