"""The TensorFlow Transform graph: raw user and video features in, model-ready tensors out.

One `preprocessing_fn` covers both towers. The graph is analysed on the training split and then
travels inside each exported tower, which feeds it only its own raw features: TFT prunes the
outputs whose inputs are absent, so the user tower needs no video features and vice versa
(`tests/unit/test_preprocessing.py` checks this). Serving therefore tokenises and scales exactly
as training did.

Japanese titles have no spaces, so text is split into characters and turned into character
n-grams inside the graph (`tf.strings.unicode_split` + `tf.strings.ngrams`), then TF-IDF over a
top-k vocabulary. Vocabularies are named (`vocab_filename=`) so the trainer can size embedding
tables by name; each has OOV buckets for values first seen after training.

Transformed features (B = batch; "sparse" = `SparseTensor` [B, None]):
  video_text_ids / video_text_weights    sparse int64 / float32: TF-IDF of title + description
  video_genre_ids                        sparse int64 (vocab `genres`)
  video_maker_id                         [B] int64 (vocab `makers`)
  video_performer_ids                    sparse int64 (vocab `performers`)
  video_duration_z, video_age_z          [B] float32: z-scored log1p(minutes), log1p(days)
  user_is_pseudo, user_has_history       [B] float32 0/1
  user_<count>_z                         [B] float32: z-scored log1p of counts and day spans
  user_like_ratio, user_recency_like_ratio  [B] float32 in (0, 1)
  user_{liked,noped}_genre_ids / _weights   sparse (vocab `genres`) / recency-weighted shares
  user_{liked,noped}_maker_ids / _weights   sparse (vocab `makers`)
  user_title_ids / user_title_weights    sparse: liked titles' top n-grams (vocab `text_ngrams`)
                                         with their shares
  user_recent_video_ids                  sparse int64 (vocab `recent_videos`)
  label [B] int64, weight / sampling_probability [B] float32, video_id / example_time_us [B]
  int64, user_key [B] string: passed through for training and evaluation.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

from swiperec.features.config import FeatureConfig

# Vocabulary file names: contracts with the trainer.
TEXT_VOCAB = "text_ngrams"
GENRE_VOCAB = "genres"
MAKER_VOCAB = "makers"
PERFORMER_VOCAB = "performers"
RECENT_VIDEO_VOCAB = "recent_videos"
OOV_BUCKETS = {GENRE_VOCAB: 1, MAKER_VOCAB: 1, PERFORMER_VOCAB: 4, RECENT_VIDEO_VOCAB: 4}
NO_MAKER = "__no_maker__"

USER_COUNTS = (
    "like_count",
    "nope_count",
    "recency_like_count",
    "recency_nope_count",
    "days_since_last_decision",
    "tenure_days",
)
USER_RATIOS = ("like_ratio", "recency_like_ratio")
USER_WEIGHTED_LISTS = {  # raw token list -> (its weights, vocabulary)
    "liked_genres": ("liked_genre_weights", GENRE_VOCAB),
    "noped_genres": ("noped_genre_weights", GENRE_VOCAB),
    "liked_makers": ("liked_maker_weights", MAKER_VOCAB),
    "noped_makers": ("noped_maker_weights", MAKER_VOCAB),
}

VIDEO_RAW_FEATURES = (
    "title",
    "description",
    "genres",
    "maker",
    "performers",
    "duration_sec",
    "age_days",
)
USER_RAW_FEATURES = (
    "user_source",
    *USER_COUNTS,
    *USER_RATIOS,
    "has_history",
    *USER_WEIGHTED_LISTS,
    *(weights for weights, _ in USER_WEIGHTED_LISTS.values()),
    "liked_title_ngrams",
    "liked_title_ngram_weights",
    "recent_liked_videos",
)
PASSTHROUGH = ("label", "weight", "sampling_probability", "video_id", "example_time_us", "user_key")


def raw_feature_spec() -> dict[str, tf.io.FixedLenFeature | tf.io.VarLenFeature]:
    """The raw example: user features at the example's time, the video's features, the label."""
    fixed, var = tf.io.FixedLenFeature, tf.io.VarLenFeature
    spec = {
        "title": fixed([], tf.string),
        "description": fixed([], tf.string),
        "genres": var(tf.string),
        "maker": fixed([], tf.string),
        "performers": var(tf.string),
        "duration_sec": fixed([], tf.float32),
        "age_days": fixed([], tf.float32),
        "user_source": fixed([], tf.string),
        "has_history": fixed([], tf.float32),
        "liked_title_ngrams": var(tf.string),
        "liked_title_ngram_weights": var(tf.float32),
        "recent_liked_videos": var(tf.string),
        "label": fixed([], tf.int64),
        "weight": fixed([], tf.float32),
        "sampling_probability": fixed([], tf.float32),
        "video_id": fixed([], tf.int64),
        "example_time_us": fixed([], tf.int64),
        "user_key": fixed([], tf.string),
    }
    for name in (*USER_COUNTS, *USER_RATIOS):
        spec[name] = fixed([], tf.float32)
    for tokens, (weights, _) in USER_WEIGHTED_LISTS.items():
        spec[tokens] = var(tf.string)
        spec[weights] = var(tf.float32)
    return spec


def video_feature_spec() -> dict:
    """Raw features the video tower's serving signature takes."""
    spec = raw_feature_spec()
    return {name: spec[name] for name in VIDEO_RAW_FEATURES}


def user_feature_spec() -> dict:
    """Raw features the user tower's serving signature takes."""
    spec = raw_feature_spec()
    return {name: spec[name] for name in USER_RAW_FEATURES}


def char_ngram_tokens(text: tf.Tensor, ngram_min: int, ngram_max: int) -> tf.RaggedTensor:
    """[B] strings -> [B, None] character n-grams (all `ngram_min`-grams first, then longer).

    Mirrored in Python by `swiperec.features.config.char_ngrams` for user histories.
    """
    chars = tf.strings.unicode_split(text, "UTF-8")
    return tf.strings.ngrams(
        chars, ngram_width=tuple(range(ngram_min, ngram_max + 1)), separator=""
    )


def _z_score(x: tf.Tensor) -> tf.Tensor:
    """z-score with float64 analyzers: Beam combines partial sums in whatever order bundles
    finish, and in float64 that order moves the float32 result by a unit in the last place at
    most, and rarely."""
    return tf.cast(tft.scale_to_z_score(tf.cast(x, tf.float64)), tf.float32)


def make_preprocessing_fn(config: FeatureConfig):
    """Returns the `preprocessing_fn` for `config` (vocabulary size, n-gram range)."""

    def preprocessing_fn(inputs: dict) -> dict:
        outputs = {}

        # -- video ---------------------------------------------------------------------------
        text = tf.concat(
            [
                char_ngram_tokens(inputs["title"], config.ngram_min, config.ngram_max),
                char_ngram_tokens(inputs["description"], config.ngram_min, config.ngram_max),
            ],
            axis=1,
        ).to_sparse()  # tft.tfidf needs a SparseTensor; a RaggedTensor fails
        text_vocab = tft.vocabulary(text, top_k=config.title_vocab_size, vocab_filename=TEXT_VOCAB)
        text_ids = tft.apply_vocabulary(text, text_vocab, num_oov_buckets=1)
        outputs["video_text_ids"], outputs["video_text_weights"] = tft.tfidf(
            text_ids, config.title_vocab_size + 1
        )

        genre_vocab = tft.vocabulary(inputs["genres"], vocab_filename=GENRE_VOCAB)
        outputs["video_genre_ids"] = tft.apply_vocabulary(
            inputs["genres"], genre_vocab, num_oov_buckets=OOV_BUCKETS[GENRE_VOCAB]
        )
        maker = tf.where(tf.strings.length(inputs["maker"]) > 0, inputs["maker"], NO_MAKER)
        maker_vocab = tft.vocabulary(maker, vocab_filename=MAKER_VOCAB)
        outputs["video_maker_id"] = tft.apply_vocabulary(
            maker, maker_vocab, num_oov_buckets=OOV_BUCKETS[MAKER_VOCAB]
        )
        outputs["video_performer_ids"] = tft.compute_and_apply_vocabulary(
            inputs["performers"],
            vocab_filename=PERFORMER_VOCAB,
            num_oov_buckets=OOV_BUCKETS[PERFORMER_VOCAB],
        )
        minutes = tf.math.log1p(tf.maximum(inputs["duration_sec"], 0.0) / 60.0)
        outputs["video_duration_z"] = _z_score(minutes)
        outputs["video_age_z"] = _z_score(tf.math.log1p(tf.maximum(inputs["age_days"], 0.0)))

        # -- user ----------------------------------------------------------------------------
        outputs["user_is_pseudo"] = tf.cast(tf.equal(inputs["user_source"], "pseudo"), tf.float32)
        outputs["user_has_history"] = inputs["has_history"]
        for name in USER_COUNTS:
            outputs[f"user_{name}_z"] = _z_score(tf.math.log1p(tf.maximum(inputs[name], 0.0)))
        for name in USER_RATIOS:
            outputs[f"user_{name}"] = inputs[name]
        vocabularies = {GENRE_VOCAB: genre_vocab, MAKER_VOCAB: maker_vocab}
        for tokens, (weights, vocab) in USER_WEIGHTED_LISTS.items():
            kind = tokens.removesuffix("s")  # liked_genre, noped_maker, ...
            outputs[f"user_{kind}_ids"] = tft.apply_vocabulary(
                inputs[tokens], vocabularies[vocab], num_oov_buckets=OOV_BUCKETS[vocab]
            )
            outputs[f"user_{kind}_weights"] = inputs[weights]
        outputs["user_title_ids"] = tft.apply_vocabulary(
            inputs["liked_title_ngrams"], text_vocab, num_oov_buckets=1
        )
        outputs["user_title_weights"] = inputs["liked_title_ngram_weights"]
        outputs["user_recent_video_ids"] = tft.compute_and_apply_vocabulary(
            inputs["recent_liked_videos"],
            vocab_filename=RECENT_VIDEO_VOCAB,
            num_oov_buckets=OOV_BUCKETS[RECENT_VIDEO_VOCAB],
        )

        for name in PASSTHROUGH:
            outputs[name] = inputs[name]
        return outputs

    return preprocessing_fn
