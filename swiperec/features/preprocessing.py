"""The TensorFlow Transform graphs: raw features in, model-ready tensors out, one per tower.

The video graph is analysed on the catalogue (each video once: TF-IDF document frequencies are
over videos, not over how often a video was shown). The user graph is analysed on the training
examples (each user as of each example's time). Each graph travels inside its exported tower,
so serving tokenises and scales exactly as training did.

Japanese titles have no spaces, so text is split into characters and turned into character
n-grams inside the graph (`tf.strings.unicode_split` + `tf.strings.ngrams`), then TF-IDF over a
top-k vocabulary. Vocabularies are named (`vocab_filename=`) so the trainer can size embedding
tables by name (`vocabulary_size`: the text n-grams' file lists more than the top k); each has
OOV buckets for values first seen after training.

Video graph outputs (B = batch; "sparse" = `SparseTensor` [B, None]):
  video_text_ids / video_text_weights   sparse int64 / float32: TF-IDF of title + description
  video_genre_ids                       sparse int64 (vocab `genres`)
  video_maker_id                        [B] int64 (vocab `makers`)
  video_performer_ids                   sparse int64 (vocab `performers`)
  video_duration_z                      [B] float32: z-scored log1p(minutes)
  video_age                             [B] float32: `video_age_feature(age_days)`, no analyzer,
                                        so the trainer can give each example the video's age
                                        when the user saw it (`video_age_days`)
  video_id                              [B] int64, passed through
User graph outputs:
  user_is_pseudo, user_has_history      [B] float32 0/1
  user_<count>_z                        [B] float32: z-scored log1p of counts and day spans
  user_like_ratio, user_recency_like_ratio   [B] float32 in (0, 1)
  user_{liked,noped}_genre_ids / _weights    sparse (vocab `user_genres`) / recency shares
  user_{liked,noped}_maker_ids / _weights    sparse (vocab `user_makers`)
  user_{liked,noped}_performer_ids / _weights    sparse (vocab `user_performers`)
  user_title_ids / user_title_weights   sparse: liked titles' top n-grams (`user_title_ngrams`)
  user_recent_video_ids                 sparse int64 (vocab `recent_videos`)
  label [B] int64; weight, sampling_probability, video_age_days, match_*, video_like_logodds,
  video_swipes [B] float32; video_id, example_time_us [B] int64; user_key, negative_source [B]
  string: passed through for training and evaluation (`RANKING_FEATURE_NAMES`, the ranking
  stage's pair features: `match_*` how the video matches the user's history, then the video's
  own swipe evidence at the example's time).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_transform.experimental import approximate_vocabulary

from swiperec.features.config import VOCABULARY_CAPACITY, FeatureConfig
from swiperec.features.video_evidence import RANKING_FEATURE_NAMES

# Vocabulary file names: contracts with the trainer.
TEXT_VOCAB = "text_ngrams"
GENRE_VOCAB = "genres"
MAKER_VOCAB = "makers"
PERFORMER_VOCAB = "performers"
USER_GENRE_VOCAB = "user_genres"
USER_MAKER_VOCAB = "user_makers"
USER_PERFORMER_VOCAB = "user_performers"
USER_TITLE_VOCAB = "user_title_ngrams"
RECENT_VIDEO_VOCAB = "recent_videos"
VIDEO_VOCABULARIES = (TEXT_VOCAB, GENRE_VOCAB, MAKER_VOCAB, PERFORMER_VOCAB)
USER_VOCABULARIES = (
    USER_GENRE_VOCAB,
    USER_MAKER_VOCAB,
    USER_PERFORMER_VOCAB,
    USER_TITLE_VOCAB,
    RECENT_VIDEO_VOCAB,
)
OOV_BUCKETS = {
    GENRE_VOCAB: 1,
    MAKER_VOCAB: 1,
    PERFORMER_VOCAB: 4,
    USER_GENRE_VOCAB: 1,
    USER_MAKER_VOCAB: 1,
    USER_PERFORMER_VOCAB: 4,  # as the video graph's performers: a long tail of new names
    USER_TITLE_VOCAB: 1,
    RECENT_VIDEO_VOCAB: 4,
}
NO_MAKER = "__no_maker__"
AGE_SCALE_DAYS = 3652.5

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
    "liked_genres": ("liked_genre_weights", USER_GENRE_VOCAB),
    "noped_genres": ("noped_genre_weights", USER_GENRE_VOCAB),
    "liked_makers": ("liked_maker_weights", USER_MAKER_VOCAB),
    "noped_makers": ("noped_maker_weights", USER_MAKER_VOCAB),
    "liked_performers": ("liked_performer_weights", USER_PERFORMER_VOCAB),
    "noped_performers": ("noped_performer_weights", USER_PERFORMER_VOCAB),
}
EXAMPLE_PASSTHROUGH = {
    "label": tf.int64,
    "weight": tf.float32,
    "sampling_probability": tf.float32,
    "video_id": tf.int64,
    "video_age_days": tf.float32,
    "example_time_us": tf.int64,
    "user_key": tf.string,
    "negative_source": tf.string,  # "" for a like, "nope" or "sampled": the evaluator's split
    # how the example's video matches the user's history (`UserHistory.match`) and how real
    # users had answered it by then (`VideoSwipeCounts`): the ranking stage's pair features
    **{name: tf.float32 for name in RANKING_FEATURE_NAMES},
}


def video_feature_spec() -> dict:
    """Raw features of a video: what the video tower's serving signature takes."""
    fixed, var = tf.io.FixedLenFeature, tf.io.VarLenFeature
    return {
        "title": fixed([], tf.string),
        "description": fixed([], tf.string),
        "genres": var(tf.string),
        "maker": fixed([], tf.string),
        "performers": var(tf.string),
        "duration_sec": fixed([], tf.float32),
        "age_days": fixed([], tf.float32),
    }


def video_row_spec() -> dict:
    """A catalogue row for the video transform: the raw features plus the video's id."""
    return {**video_feature_spec(), "video_id": tf.io.FixedLenFeature([], tf.int64)}


def user_feature_spec() -> dict:
    """Raw features of a user as of a time: what the user tower's serving signature takes."""
    fixed, var = tf.io.FixedLenFeature, tf.io.VarLenFeature
    spec = {
        "user_source": fixed([], tf.string),
        "has_history": fixed([], tf.float32),
        "liked_title_ngrams": var(tf.string),
        "liked_title_ngram_weights": var(tf.float32),
        "recent_liked_videos": var(tf.string),
    }
    for name in (*USER_COUNTS, *USER_RATIOS):
        spec[name] = fixed([], tf.float32)
    for tokens, (weights, _) in USER_WEIGHTED_LISTS.items():
        spec[tokens] = var(tf.string)
        spec[weights] = var(tf.float32)
    return spec


def example_spec() -> dict:
    """A training example for the user transform: user features at the example's time, the
    label, and what training and evaluation need about the example (passed through)."""
    passthrough = {
        name: tf.io.FixedLenFeature([], dtype) for name, dtype in EXAMPLE_PASSTHROUGH.items()
    }
    return {**user_feature_spec(), **passthrough}


def vocabulary_size(output, name: str, config: FeatureConfig) -> int:
    """The values vocabulary `name` of a `tft.TFTransformOutput` gives ids to, OOV buckets
    aside: the text n-grams' file may list more than the graph keeps."""
    size = output.vocabulary_size_by_name(name)
    return min(size, config.title_vocab_size) if name == TEXT_VOCAB else size


def char_ngram_tokens(text: tf.Tensor, ngram_min: int, ngram_max: int) -> tf.RaggedTensor:
    """[B] strings -> [B, None] character n-grams (all `ngram_min`-grams first, then longer).

    Mirrored in Python by `swiperec.features.config.char_ngrams` for user histories.
    """
    chars = tf.strings.unicode_split(text, "UTF-8")
    return tf.strings.ngrams(
        chars, ngram_width=tuple(range(ngram_min, ngram_max + 1)), separator=""
    )


def video_age_feature(age_days: tf.Tensor) -> tf.Tensor:
    """Days since release -> log1p(days) / log1p(10 years): 0 at release, ~1 at ten years.

    A fixed scale rather than an analyzer: a video's age changes with the time it is shown, so
    the trainer recomputes this per example from `video_age_days` with this same function, and
    the exported video tower computes it from the raw `age_days` it is given.
    """
    age = tf.maximum(tf.cast(age_days, tf.float32), 0.0)
    return tf.math.log1p(age) / tf.math.log1p(AGE_SCALE_DAYS)


def _z_score(x: tf.Tensor) -> tf.Tensor:
    """z-score with float64 analyzers: Beam combines partial sums in whatever order bundles
    finish, and in float64 that order moves the float32 result by a unit in the last place at
    most, and rarely."""
    return tf.cast(tft.scale_to_z_score(tf.cast(x, tf.float64)), tf.float32)


def make_video_preprocessing_fn(config: FeatureConfig):
    """The video graph for `config` (vocabulary size, n-gram range)."""

    def preprocessing_fn(inputs: dict) -> dict:
        text = tf.concat(
            [
                char_ngram_tokens(inputs["title"], config.ngram_min, config.ngram_max),
                char_ngram_tokens(inputs["description"], config.ngram_min, config.ngram_max),
            ],
            axis=1,
        ).to_sparse()  # tft.tfidf needs a SparseTensor; a RaggedTensor fails
        # The n-grams' counts by Misra-Gries (approximate_vocabulary), which keeps them in one
        # bounded accumulator per bundle where the exact vocabulary makes each batch's distinct
        # n-grams Beam elements and sorts them all. Below its capacity (TFT's largest, 200,000)
        # the counts are exact, and so the order: the file lists every n-gram, most frequent
        # first, ties by bytes descending, as the exact vocabulary does. The graph keeps the
        # first `title_vocab_size` and maps the rest, with n-grams never seen, to one OOV id.
        counts = approximate_vocabulary(text, top_k=VOCABULARY_CAPACITY, vocab_filename=TEXT_VOCAB)
        ids = tft.apply_vocabulary(text, counts, num_oov_buckets=1)
        text_ids = tf.SparseTensor(
            ids.indices, tf.minimum(ids.values, config.title_vocab_size), ids.dense_shape
        )
        outputs = {}
        outputs["video_text_ids"], outputs["video_text_weights"] = tft.tfidf(
            text_ids, config.title_vocab_size + 1
        )
        outputs["video_genre_ids"] = tft.compute_and_apply_vocabulary(
            inputs["genres"], vocab_filename=GENRE_VOCAB, num_oov_buckets=OOV_BUCKETS[GENRE_VOCAB]
        )
        maker = tf.where(tf.strings.length(inputs["maker"]) > 0, inputs["maker"], NO_MAKER)
        outputs["video_maker_id"] = tft.compute_and_apply_vocabulary(
            maker, vocab_filename=MAKER_VOCAB, num_oov_buckets=OOV_BUCKETS[MAKER_VOCAB]
        )
        outputs["video_performer_ids"] = tft.compute_and_apply_vocabulary(
            inputs["performers"],
            vocab_filename=PERFORMER_VOCAB,
            num_oov_buckets=OOV_BUCKETS[PERFORMER_VOCAB],
        )
        minutes = tf.math.log1p(tf.maximum(inputs["duration_sec"], 0.0) / 60.0)
        outputs["video_duration_z"] = _z_score(minutes)
        outputs["video_age"] = video_age_feature(inputs["age_days"])
        if "video_id" in inputs:
            outputs["video_id"] = inputs["video_id"]
        return outputs

    return preprocessing_fn


def make_user_preprocessing_fn(config: FeatureConfig):
    """The user graph for `config`."""

    def preprocessing_fn(inputs: dict) -> dict:
        outputs = {
            "user_is_pseudo": tf.cast(tf.equal(inputs["user_source"], "pseudo"), tf.float32),
            "user_has_history": inputs["has_history"],
        }
        for name in USER_COUNTS:
            outputs[f"user_{name}_z"] = _z_score(tf.math.log1p(tf.maximum(inputs[name], 0.0)))
        for name in USER_RATIOS:
            outputs[f"user_{name}"] = inputs[name]

        # Every example repeats its user's lists, so the token streams are long: Misra-Gries
        # (approximate_vocabulary) keeps the analysis to bounded accumulators, where the exact
        # vocabulary turns each distinct token of each batch into a Beam element. Below
        # `user_vocab_size` distinct values it is exact, and so deterministic.
        def ids(tokens, name):
            vocabulary = approximate_vocabulary(
                tokens,
                top_k=config.user_vocab_size,
                vocab_filename=name,
            )
            return tft.apply_vocabulary(tokens, vocabulary, num_oov_buckets=OOV_BUCKETS[name])

        # Liked and noped lists share a vocabulary, so "liked X" and "noped X" name one X.
        shared = {
            USER_GENRE_VOCAB: tf.sparse.concat(1, [inputs["liked_genres"], inputs["noped_genres"]]),
            USER_MAKER_VOCAB: tf.sparse.concat(1, [inputs["liked_makers"], inputs["noped_makers"]]),
            USER_PERFORMER_VOCAB: tf.sparse.concat(
                1, [inputs["liked_performers"], inputs["noped_performers"]]
            ),
        }
        vocabularies = {
            name: approximate_vocabulary(tokens, top_k=config.user_vocab_size, vocab_filename=name)
            for name, tokens in shared.items()
        }
        for tokens, (weights, vocab) in USER_WEIGHTED_LISTS.items():
            kind = tokens.removesuffix("s")  # liked_genre, noped_maker, liked_performer, ...
            outputs[f"user_{kind}_ids"] = tft.apply_vocabulary(
                inputs[tokens], vocabularies[vocab], num_oov_buckets=OOV_BUCKETS[vocab]
            )
            outputs[f"user_{kind}_weights"] = inputs[weights]
        outputs["user_title_ids"] = ids(inputs["liked_title_ngrams"], USER_TITLE_VOCAB)
        outputs["user_title_weights"] = inputs["liked_title_ngram_weights"]
        outputs["user_recent_video_ids"] = ids(inputs["recent_liked_videos"], RECENT_VIDEO_VOCAB)
        for name in EXAMPLE_PASSTHROUGH:
            if name in inputs:
                outputs[name] = inputs[name]
        return outputs

    return preprocessing_fn
