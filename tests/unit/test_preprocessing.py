"""The TFT preprocessing_fn on two rows, with every expected value worked out by hand."""

import math
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf
from tensorflow_transform.beam import tft_unit
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from swiperec.features.config import FeatureConfig, char_ngrams
from swiperec.features.preprocessing import (
    make_preprocessing_fn,
    raw_feature_spec,
    user_feature_spec,
    video_feature_spec,
)

CHECKED = (
    "video_text_ids",
    "video_text_weights",
    "video_genre_ids",
    "video_maker_id",
    "user_liked_genre_ids",
    "user_liked_genre_weights",
    "user_like_count_z",
    "user_is_pseudo",
    "label",
)


def raw_row(title, genres, maker, liked_genres, like_count, source, label):
    """A raw example; features this test does not check get neutral values."""
    row = {
        "title": title.encode(),
        "description": b"",
        "genres": [g.encode() for g in genres],
        "maker": maker.encode(),
        "performers": [],
        "duration_sec": 3600.0,
        "age_days": 10.0,
        "user_source": source.encode(),
        "has_history": 1.0,
        "liked_title_ngrams": [],
        "liked_title_ngram_weights": [],
        "recent_liked_videos": [],
        "label": label,
        "weight": 1.0,
        "sampling_probability": 0.5,
        "video_id": 1,
        "example_time_us": 0,
        "user_key": b"u",
        "liked_genres": [g.encode() for g in liked_genres],
        "liked_genre_weights": [1.0] * len(liked_genres),
    }
    for tokens, weights in (
        ("noped_genres", "noped_genre_weights"),
        ("liked_makers", "liked_maker_weights"),
        ("noped_makers", "noped_maker_weights"),
    ):
        row[tokens], row[weights] = [], []
    for name in (
        "like_count",
        "nope_count",
        "recency_like_count",
        "recency_nope_count",
        "days_since_last_decision",
        "tenure_days",
    ):
        row[name] = 0.0
    row["like_count"] = like_count
    row["like_ratio"] = row["recency_like_ratio"] = 0.5
    return row


class PreprocessingTest(tft_unit.TransformTestCase):
    test_session = None  # tf.test.TestCase's helper of that name is not a test

    def test_japanese_title_ngrams_vocabularies_and_scaling(self):
        config = FeatureConfig(title_vocab_size=5, ngram_min=1, ngram_max=2)
        rows = [
            raw_row("恋の告白", ["恋愛", "ドラマ"], "メーカーA", ["恋愛"], 0.0, "real", 1),
            raw_row("告白", ["恋愛"], "", ["ホラー"], 3.0, "pseudo", 0),
        ]
        # The tokens the graph makes, as the Python mirror makes them for user histories.
        assert char_ngrams("恋の告白", 1, 2) == ["恋", "の", "告", "白", "恋の", "の告", "告白"]

        # Counts: 告 白 告白 twice; 恋 の 恋の の告 once. TFT orders a vocabulary by count,
        # then by the token's bytes, descending: 白 (e7..) 告白 (e5 91 8a e7) 告 (e5 91 8a),
        # then 恋の (e6 81 8b e3) 恋 (e6 81 8b) の告 (e3 81 ae e5) の (e3 81 ae). top_k = 5
        # keeps 白 告白 告 恋の 恋 (ids 0-4); の and の告 fall in the one OOV bucket (id 5).
        # tfidf = (count / tokens in the title) * (1 + log((N + 1) / (df + 1))), N = 2 titles:
        # ids 0-2 appear in both titles (idf 1), ids 3-5 only in the first (idf 1 + log 1.5).
        rare = 1 + math.log(3 / 2)
        # like_count 0 and 3 -> log1p -> 0 and log 4; z-scored with the population std: -1, +1.
        expected = [
            {
                "video_text_ids": [0, 1, 2, 3, 4, 5],
                "video_text_weights": [1 / 7, 1 / 7, 1 / 7, rare / 7, rare / 7, 2 * rare / 7],
                "video_genre_ids": [0, 1],  # 恋愛 (twice) before ドラマ
                "video_maker_id": 0,  # メーカーA (e3 83..) sorts above __no_maker__ (5f..)
                "user_liked_genre_ids": [0],
                "user_liked_genre_weights": [1.0],
                "user_like_count_z": -1.0,
                "user_is_pseudo": 0.0,
                "label": 1,
            },
            {
                "video_text_ids": [0, 1, 2],
                "video_text_weights": [1 / 3, 1 / 3, 1 / 3],
                "video_genre_ids": [0],
                "video_maker_id": 1,  # an empty maker is the __no_maker__ token
                "user_liked_genre_ids": [2],  # ホラー is unknown: the genres OOV bucket
                "user_liked_genre_weights": [1.0],
                "user_like_count_z": 1.0,
                "user_is_pseudo": 1.0,
                "label": 0,
            },
        ]
        full = make_preprocessing_fn(config)

        def preprocessing_fn(inputs):
            return {k: v for k, v in full(inputs).items() if k in CHECKED}

        metadata = dataset_metadata.DatasetMetadata(
            schema_utils.schema_from_feature_spec(raw_feature_spec())
        )
        self.assertAnalyzeAndTransformResults(
            rows,
            metadata,
            preprocessing_fn,
            expected,
            expected_vocab_file_contents={
                "text_ngrams": [
                    b"\xe7\x99\xbd",
                    "告白".encode(),
                    "告".encode(),
                    "恋の".encode(),
                    "恋".encode(),
                ],
                "genres": ["恋愛".encode(), "ドラマ".encode()],
                "makers": ["メーカーA".encode(), b"__no_maker__"],
            },
        )


def test_each_tower_needs_only_its_own_raw_features():
    """The serving contract: the user tower feeds user features only, the video tower video
    features only; together they are the raw example minus label and bookkeeping."""
    users, videos = set(user_feature_spec()), set(video_feature_spec())
    assert not users & videos
    bookkeeping = {
        "label",
        "weight",
        "sampling_probability",
        "video_id",
        "example_time_us",
        "user_key",
    }
    assert users | videos | bookkeeping == set(raw_feature_spec())
    assert all(
        isinstance(spec, (tf.io.FixedLenFeature, tf.io.VarLenFeature))
        for spec in raw_feature_spec().values()
    )
