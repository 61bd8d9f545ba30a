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
  alone cannot tell "disliked" from "not shown". Serving retrieves by cosine and then ranks
  the candidates by this logit (the user's bias left out: it does not change a user's order).

Both losses are weighted means over the rows they cover, weighted by each example's `weight`
(pseudo-user examples can count less).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from swiperec.model.config import TrainConfig
from swiperec.model.towers import (
    USER_TOWER_INPUTS,
    VIDEO_TOWER_INPUTS,
    build_user_ranker,
    build_video_ranker,
)


def like_logits(cosine, video_ranking, user_bias) -> tf.Tensor:
    """[B] like logits `scale * cosine + bias + user_bias`; video_ranking [B, 2] = (bias, scale)."""
    return video_ranking[:, 1] * cosine + video_ranking[:, 0] + user_bias


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

    def __init__(self, user_tower, video_tower, config: TrainConfig, train_examples: int):
        super().__init__()
        self.user_tower = user_tower
        self.video_tower = video_tower
        self.config = config
        # The ranking terms share the towers' inputs and feature layers; `train_examples` sizes
        # the prior on the videos' own biases (`build_video_ranker`).
        self.video_ranker = build_video_ranker(video_tower, config, train_examples)
        self.user_ranker = build_user_ranker(user_tower)
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
        return user, video, like_logits(tf.reduce_sum(user * video, axis=-1), ranking, user_bias)

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
