"""Keras layers the towers are made of; registered so `.keras` files load them by name."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


@tf.keras.utils.register_keras_serializable("swiperec")
class EmbeddingBag(tf.keras.layers.Layer):
    """Sparse ids (+ optional weights) -> one vector per row: a weighted bag of table rows.

    Call with `ids` or `[ids, weights]`: `ids` a `SparseTensor` [B, None] int64 in
    [0, vocab_size), `weights` a `SparseTensor` with the same indices, float32. Returns
    [B, dim] float32: the `combiner` ("sqrtn", "mean" or "sum") of the rows' embeddings, zeros
    for a row with no ids. Negative ids are dropped; an id >= `vocab_size` is an error on CPU
    (TFT's vocabularies and OOV buckets size the table, so one means a mismatched graph).

    `l2` > 0 penalises, while training, the rows the batch looks up: `l2 * sum of their squared
    norms / batch rows` (each distinct row once per step, so a row is penalised as often as it
    is used). A penalty on the whole table would make every step's gradient dense over the
    vocabulary (up to 200k rows), where a large table's lookup touches only the batch's rows.

    A table of at most `DENSE_ROWS` rows is multiplied instead: the batch's (combined) weights
    scattered into a [B, vocab_size] matrix, times the table; its gradient is then dense (a
    small table's). A TF-IDF row holds ~100 ids of a 1,001-row vocabulary, and the lookup's
    gather, scale and scatter-add of the gradient run one thread each; the matmul and its
    gradient (one more matmul) use every core: 5 ms against 13-14 ms a step at batch 1024 on
    two cores, the same sums to float32 rounding.
    """

    DENSE_ROWS = 2048  # at batch 1024, an 8 MB matrix; larger vocabularies keep the lookup

    def __init__(self, vocab_size: int, dim: int, combiner: str = "sqrtn", l2: float = 0.0,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.vocab_size, self.dim, self.combiner, self.l2 = vocab_size, dim, combiner, l2

    def build(self, input_shape):
        self.table = self.add_weight(
            name="table",
            shape=(self.vocab_size, self.dim),
            initializer=tf.keras.initializers.TruncatedNormal(stddev=1.0 / self.dim**0.5),
        )
        super().build(input_shape)

    def call(self, inputs, training=None):
        ids, weights = inputs if isinstance(inputs, list | tuple) else (inputs, None)
        ids = tf.sparse.SparseTensor(ids.indices, tf.cast(ids.values, tf.int64), ids.dense_shape)
        if self.l2 and training:
            used = tf.unique(tf.boolean_mask(ids.values, ids.values >= 0)).y
            rows = tf.cast(tf.maximum(ids.dense_shape[0], 1), tf.float32)
            self.add_loss(self.l2 * tf.reduce_sum(tf.square(tf.gather(self.table, used))) / rows)
        if self.vocab_size > self.DENSE_ROWS:
            return tf.nn.safe_embedding_lookup_sparse(
                self.table, ids, weights, combiner=self.combiner, default_id=None
            )
        return tf.matmul(self._dense_weights(ids, weights), self.table)

    def _dense_weights(self, ids: tf.SparseTensor, weights) -> tf.Tensor:
        """[B, vocab_size] float32: each row's combined weight of every id, as
        `safe_embedding_lookup_sparse` combines them: negative ids dropped, and weights <= 0
        for "mean" and "sqrtn" (a "sum" keeps every weight); a repeated id summed; "mean"
        dividing by the row's weight sum, "sqrtn" by the square root of its sum of squared
        weights (0 where that is 0)."""
        values = ids.values
        keep = values >= 0
        if weights is None:
            w = tf.ones(tf.shape(values), tf.float32)
        else:
            w = tf.cast(weights.values, tf.float32)
            if self.combiner != "sum":
                keep &= w > 0
        indices, values, w = (tf.boolean_mask(x, keep) for x in (ids.indices, values, w))
        rows, batch = indices[:, 0], ids.dense_shape[0]
        if self.combiner == "mean":
            w = tf.math.divide_no_nan(
                w, tf.gather(tf.math.unsorted_segment_sum(w, rows, batch), rows)
            )
        elif self.combiner == "sqrtn":
            norms = tf.sqrt(tf.math.unsorted_segment_sum(w * w, rows, batch))
            w = tf.math.divide_no_nan(w, tf.gather(norms, rows))
        shape = tf.stack([batch, tf.constant(self.vocab_size, tf.int64)])
        return tf.scatter_nd(tf.stack([rows, values], axis=1), w, shape)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "dim": self.dim,
            "combiner": self.combiner,
            "l2": self.l2,
        }


@tf.keras.utils.register_keras_serializable("swiperec")
class StackScalars(tf.keras.layers.Layer):
    """A list of k scalar features, each [B], -> [B, k] float32."""

    def call(self, inputs):
        return tf.stack([tf.cast(x, tf.float32) for x in inputs], axis=-1)


@tf.keras.utils.register_keras_serializable("swiperec")
class L2Normalize(tf.keras.layers.Layer):
    """[B, D] -> [B, D] with unit L2 norm per row, so a dot product is a cosine similarity."""

    def call(self, inputs):
        return tf.math.l2_normalize(inputs, axis=-1, epsilon=1e-12)


@tf.keras.utils.register_keras_serializable("swiperec")
class VideoRanking(tf.keras.layers.Layer):
    """A video's ranking terms: `[features [B, F], id_index [B]] -> [B, 2]` = (bias, scale).

    The like logit of a (user, video) pair is `scale * cosine + bias (+ the user's bias)`. Both
    terms are what a cosine of two unit vectors cannot hold: a video's general appeal (bias)
    and how strongly taste decides it (scale).

    - bias = b0 + features . w_b + id_bias[id_index]: a part from the video tower's features
      (its content, and its id embedding when it has one), plus a per-video part for videos
      with their own id (`id_index` > 0; 0 is the out-of-vocabulary index, whose part is 0, so
      a video new since training gets the bias its content predicts). The per-video table
      has an L2 penalty `id_bias_l2` (a Gaussian prior, see `build_video_ranker`): a video
      seen a few times stays near its content's bias, as a like-rate is shrunk toward the
      mean.
    - scale = exp(log_s0 + features . w_s), positive, starting at `initial_scale` for every
      video.
    """

    def __init__(self, id_count: int, id_bias_l2: float = 0.0, initial_scale: float = 5.0,
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        self.id_count, self.id_bias_l2, self.initial_scale = id_count, id_bias_l2, initial_scale

    def build(self, input_shape):
        features = int(input_shape[0][-1])
        # The whole table is penalised every step ([N, 1]: a dense gradient of N floats is
        # cheap), so each video's bias carries the same prior whether it was seen once or often.
        regularizer = tf.keras.regularizers.l2(self.id_bias_l2) if self.id_bias_l2 else None
        self.id_bias = self.add_weight(
            name="id_bias", shape=(self.id_count, 1), initializer="zeros", regularizer=regularizer
        )
        self.kernel = self.add_weight(name="kernel", shape=(features, 2), initializer="zeros")
        self.offset = self.add_weight(
            name="offset",
            shape=(2,),
            initializer=tf.keras.initializers.Constant([0.0, float(np.log(self.initial_scale))]),
        )
        super().build(input_shape)

    def call(self, inputs):
        features, id_index = inputs
        id_index = tf.cast(id_index, tf.int64)
        known = tf.cast(id_index > 0, tf.float32)
        id_bias = tf.gather(self.id_bias[:, 0], id_index) * known
        terms = tf.matmul(tf.cast(features, tf.float32), self.kernel) + self.offset
        return tf.stack([terms[:, 0] + id_bias, tf.exp(terms[:, 1])], axis=-1)

    def get_config(self):
        return {**super().get_config(), "id_count": self.id_count,
                "id_bias_l2": self.id_bias_l2, "initial_scale": self.initial_scale}  # fmt: skip


@tf.keras.utils.register_keras_serializable("swiperec")
class IdDropout(tf.keras.layers.Layer):
    """[B] int64 lookup indices -> the same with each set to 0 (out of vocabulary) with
    probability `rate` while training; unchanged at inference.

    A video's own id embedding and bias are dropped now and then, so its content alone must
    place it too: the path every video new since training takes."""

    def __init__(self, rate: float, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate

    def call(self, ids, training=None):
        if not self.rate or not training:
            return ids
        keep = tf.random.uniform(tf.shape(ids)) >= self.rate
        return tf.where(keep, ids, tf.zeros_like(ids))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


@tf.keras.utils.register_keras_serializable("swiperec")
class KnownOnly(tf.keras.layers.Layer):
    """`[vectors [B, d], ids [B]] -> vectors` with the rows of out-of-vocabulary ids (0) set
    to zero: an unknown video has no id part, rather than one vector shared by all of them."""

    def call(self, inputs):
        vectors, ids = inputs
        return vectors * tf.cast(ids > 0, vectors.dtype)[:, None]
