"""Keras layers the towers are made of; registered so `.keras` files load them by name."""

from __future__ import annotations

import tensorflow as tf


@tf.keras.utils.register_keras_serializable("swiperec")
class EmbeddingBag(tf.keras.layers.Layer):
    """Sparse ids (+ optional weights) -> one vector per row, without densifying the ids.

    Call with `ids` or `[ids, weights]`: `ids` a `SparseTensor` [B, None] int64 in
    [0, vocab_size), `weights` a `SparseTensor` with the same indices, float32. Returns
    [B, dim] float32: the `combiner` ("sqrtn", "mean" or "sum") of the rows' embeddings, zeros
    for a row with no ids. Negative ids are dropped; an id >= `vocab_size` is an error (TFT's
    vocabularies and OOV buckets size the table, so one means a mismatched graph).

    No L2 penalty on the table: it would make every step's gradient dense over the whole
    vocabulary (up to 200k rows), where the lookup's gradient touches only the batch's rows.
    """

    def __init__(self, vocab_size: int, dim: int, combiner: str = "sqrtn", **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.dim, self.combiner = vocab_size, dim, combiner

    def build(self, input_shape):
        self.table = self.add_weight(
            name="table",
            shape=(self.vocab_size, self.dim),
            initializer=tf.keras.initializers.TruncatedNormal(stddev=1.0 / self.dim**0.5),
        )
        super().build(input_shape)

    def call(self, inputs):
        ids, weights = inputs if isinstance(inputs, list | tuple) else (inputs, None)
        ids = tf.sparse.SparseTensor(ids.indices, tf.cast(ids.values, tf.int64), ids.dense_shape)
        return tf.nn.safe_embedding_lookup_sparse(
            self.table, ids, weights, combiner=self.combiner, default_id=None
        )

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "dim": self.dim,
            "combiner": self.combiner,
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
