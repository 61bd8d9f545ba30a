"""The user tower and the video tower: symmetric MLPs over the transform's outputs.

Each tower is a functional Keras model taking a dict of transformed features (the names the
TFT graphs in `swiperec.features.preprocessing` output) and returning [B, 768] float32,
L2-normalised: the dot product of a user and a video vector is their cosine similarity, which
is what pgvector's `<=>` serves.

    sparse id lists --EmbeddingBag--> [B, bag_dim] each  \
    single ids      --Embedding-----> [B, bag_dim] each   > concat -> Dense(ReLU) ... -> 768 -> L2
    scalars (z-scores, ratios, flags) -> [B, k]          /

Sparse inputs stay sparse (`SparseTensor` [B, None]) on their way in: a TF-IDF row is a
handful of (id, weight) pairs. A bag over a vocabulary of at most 2,048 rows (on the default
data the text n-grams' 1,001, the genres, the users' makers) multiplies the batch's weights by
its table, which trains faster on CPU than looking the rows up (`EmbeddingBag`); a larger one
looks them up.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from swiperec.features.config import FeatureConfig
from swiperec.features.preprocessing import (
    GENRE_VOCAB,
    MAKER_VOCAB,
    OOV_BUCKETS,
    PERFORMER_VOCAB,
    RECENT_VIDEO_VOCAB,
    TEXT_VOCAB,
    USER_COUNTS,
    USER_GENRE_VOCAB,
    USER_MAKER_VOCAB,
    USER_PERFORMER_VOCAB,
    USER_RATIOS,
    USER_TITLE_VOCAB,
    USER_VOCABULARIES,
    VIDEO_VOCABULARIES,
    vocabulary_size,
)
from swiperec.model.config import TrainConfig
from swiperec.model.layers import (
    EmbeddingBag,
    IdDropout,
    KnownOnly,
    L2Normalize,
    StackScalars,
    VideoRanking,
)

# Sparse id list -> (its weights or None, vocabulary, combiner). Weighted lists are shares or
# TF-IDF weights already, so they are summed; plain lists are averaged.
VIDEO_BAGS = {
    "video_text_ids": ("video_text_weights", TEXT_VOCAB, "sum"),
    "video_genre_ids": (None, GENRE_VOCAB, "mean"),
    "video_performer_ids": (None, PERFORMER_VOCAB, "mean"),
}
VIDEO_SCALARS = ("video_duration_z", "video_age")
USER_BAGS = {
    "user_liked_genre_ids": ("user_liked_genre_weights", USER_GENRE_VOCAB, "sum"),
    "user_noped_genre_ids": ("user_noped_genre_weights", USER_GENRE_VOCAB, "sum"),
    "user_liked_maker_ids": ("user_liked_maker_weights", USER_MAKER_VOCAB, "sum"),
    "user_noped_maker_ids": ("user_noped_maker_weights", USER_MAKER_VOCAB, "sum"),
    "user_liked_performer_ids": ("user_liked_performer_weights", USER_PERFORMER_VOCAB, "sum"),
    "user_noped_performer_ids": ("user_noped_performer_weights", USER_PERFORMER_VOCAB, "sum"),
    "user_title_ids": ("user_title_weights", USER_TITLE_VOCAB, "sum"),
    "user_recent_video_ids": (None, RECENT_VIDEO_VOCAB, "mean"),
}
USER_SCALARS = (
    "user_is_pseudo",
    "user_has_history",
    *(f"user_{name}_z" for name in USER_COUNTS),
    *(f"user_{name}" for name in USER_RATIOS),
)
_TEXT_OOV_BUCKETS = 1  # apply_vocabulary(num_oov_buckets=1) in the video graph


def _bag_inputs(bags: dict) -> list[str]:
    return [name for ids, (weights, _, _) in bags.items() for name in (ids, weights) if name]


VIDEO_TOWER_INPUTS = (*_bag_inputs(VIDEO_BAGS), "video_maker_id", "video_id", *VIDEO_SCALARS)
USER_TOWER_INPUTS = (*_bag_inputs(USER_BAGS), *USER_SCALARS)


def table_sizes(video_output, user_output, config: FeatureConfig) -> dict[str, int]:
    """Rows of each embedding table: vocabulary size plus its OOV buckets, read by name from
    the two `tft.TFTransformOutput`s that `config` made."""
    sizes = {}
    for output, names in ((video_output, VIDEO_VOCABULARIES), (user_output, USER_VOCABULARIES)):
        for name in names:
            oov = OOV_BUCKETS.get(name, _TEXT_OOV_BUCKETS)
            sizes[name] = vocabulary_size(output, name, config) + oov
    return sizes


def _mlp(x, config: TrainConfig, name: str):
    regularizer = tf.keras.regularizers.l2(config.weight_decay) if config.weight_decay else None
    for i, units in enumerate(config.hidden_units):
        x = tf.keras.layers.Dense(
            units, activation="relu", kernel_regularizer=regularizer, name=f"{name}_hidden_{i}"
        )(x)
        if config.dropout:
            # No op seed: with the same seed in both towers, row i of the user batch and row i
            # of the video batch would get the same dropout mask, and the model learns to
            # match pairs by their masks (in-batch accuracy ~1 in training, chance in
            # validation). The global seed (`set_random_seed`) keeps runs reproducible.
            x = tf.keras.layers.Dropout(config.dropout, name=f"{name}_drop_{i}")(x)
    x = tf.keras.layers.Dense(
        config.embedding_dim, kernel_regularizer=regularizer, name=f"{name}_projection"
    )(x)
    return L2Normalize(name=f"{name}_l2")(x)


def _bags(inputs: dict, bags: dict, sizes: dict, config: TrainConfig) -> list:
    parts = []
    for ids, (weights, vocabulary, combiner) in bags.items():
        bag = EmbeddingBag(
            sizes[vocabulary], config.bag_dim, combiner, l2=config.bag_l2, name=f"{ids}_bag"
        )
        parts.append(bag([inputs[ids], inputs[weights]] if weights else inputs[ids]))
    return parts


def _sparse_input(name: str, dtype) -> tf.keras.Input:
    return tf.keras.Input(shape=(None,), sparse=True, dtype=dtype, name=name)


def build_video_tower(
    sizes: dict[str, int], known_video_ids: np.ndarray, config: TrainConfig
) -> tf.keras.Model:
    """The video tower: transformed video features -> [B, 768] L2-normalised.

    `known_video_ids`: videos that get their own id embedding (enough training examples);
    every other id, a video new since training included, has no id part (zeros), so it is
    embedded from its content alone; `config.video_id_dropout` trains that content-only path
    on known videos too (`IdDropout`).
    """
    inputs = {}
    for ids, (weights, _, _) in VIDEO_BAGS.items():
        inputs[ids] = _sparse_input(ids, tf.int64)
        if weights:
            inputs[weights] = _sparse_input(weights, tf.float32)
    inputs["video_maker_id"] = tf.keras.Input(shape=(), dtype=tf.int64, name="video_maker_id")
    inputs["video_id"] = tf.keras.Input(shape=(), dtype=tf.int64, name="video_id")
    for name in VIDEO_SCALARS:
        inputs[name] = tf.keras.Input(shape=(), dtype=tf.float32, name=name)

    parts = _bags(inputs, VIDEO_BAGS, sizes, config)
    parts.append(
        tf.keras.layers.Embedding(sizes[MAKER_VOCAB], config.bag_dim, name="video_maker_embedding")(
            inputs["video_maker_id"]
        )
    )
    known = np.asarray(known_video_ids, dtype=np.int64)
    if not len(known):
        # No video has an id embedding: one id that never occurs (-1 is the OOV token).
        known = np.array([-2], dtype=np.int64)
    id_index = tf.keras.layers.IntegerLookup(
        vocabulary=known.tolist(),
        num_oov_indices=1,
        mask_token=None,
        name="video_id_lookup",
    )(inputs["video_id"])
    id_index = IdDropout(config.video_id_dropout, name="video_id_dropout")(id_index)
    id_vector = tf.keras.layers.Embedding(
        len(known) + 1, config.bag_dim, name="video_id_embedding"
    )(id_index)
    parts.append(KnownOnly(name="video_id_known")([id_vector, id_index]))
    parts.append(StackScalars(name="video_scalars")([inputs[n] for n in VIDEO_SCALARS]))
    x = tf.keras.layers.Concatenate(name="video_features")(parts)
    return tf.keras.Model(inputs, _mlp(x, config, "video"), name="video_tower")


def build_user_tower(sizes: dict[str, int], config: TrainConfig) -> tf.keras.Model:
    """The user tower: transformed user features -> [B, 768] L2-normalised.

    Users have no id embedding: a user is what they liked and noped, so a new user is
    embedded from their first swipes, and a pseudo-user from their reviews.
    """
    inputs = {}
    for ids, (weights, _, _) in USER_BAGS.items():
        inputs[ids] = _sparse_input(ids, tf.int64)
        if weights:
            inputs[weights] = _sparse_input(weights, tf.float32)
    for name in USER_SCALARS:
        inputs[name] = tf.keras.Input(shape=(), dtype=tf.float32, name=name)
    parts = _bags(inputs, USER_BAGS, sizes, config)
    parts.append(StackScalars(name="user_scalars")([inputs[n] for n in USER_SCALARS]))
    x = tf.keras.layers.Concatenate(name="user_features")(parts)
    return tf.keras.Model(inputs, _mlp(x, config, "user"), name="user_tower")


def build_video_ranker(video_tower: tf.keras.Model, config: TrainConfig,
                       train_examples: int) -> tf.keras.Model:  # fmt: skip
    """The video's ranking terms, `[B, 2]` = (bias, scale) (`VideoRanking`), over the video
    tower's own inputs and feature layers (shared weights: one set of bags serves both).

    The per-video bias's prior is N(0, `config.bias_prior_std`^2): with the batch losses
    being means over rows, an L2 of 1 / (2 sigma^2 n_train) per step adds up to the prior's
    log density over an epoch of `train_examples` rows (against the like/nope loss at
    `pointwise_weight` 1; a larger weight makes the prior relatively weaker).
    """
    features = video_tower.get_layer("video_features").output
    lookup = video_tower.get_layer("video_id_lookup")
    ranking = VideoRanking(
        lookup.vocabulary_size(),
        id_bias_l2=1.0 / (2 * config.bias_prior_std**2 * max(1, train_examples)),
        name="video_ranking",
    )([features, video_tower.get_layer("video_id_dropout").output])
    return tf.keras.Model(video_tower.input, ranking, name="video_ranker")


def build_user_ranker(user_tower: tf.keras.Model) -> tf.keras.Model:
    """The user's bias, `[B]`: how much of what they are shown this user likes, from their
    features (like ratio, counts). It moves every video's logit alike, so it never changes a
    user's ranking; it makes the model's like probabilities comparable across users."""
    features = user_tower.get_layer("user_features").output
    bias = tf.keras.layers.Dense(1, kernel_initializer="zeros", name="user_bias")(features)
    return tf.keras.Model(user_tower.input, bias[:, 0], name="user_ranker")
