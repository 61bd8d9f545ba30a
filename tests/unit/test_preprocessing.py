"""The two TFT graphs on a handful of rows, with every expected value worked out by hand."""

import math
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf
from tensorflow_transform.beam import tft_unit
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from swiperec.features.config import FeatureConfig, char_ngrams
from swiperec.features.preprocessing import (
    example_spec,
    make_user_preprocessing_fn,
    make_video_preprocessing_fn,
    user_feature_spec,
    video_feature_spec,
    video_row_spec,
)
from swiperec.features.video_evidence import RANKING_FEATURE_NAMES


def metadata(spec):
    return dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))


class TransformTestCase(tft_unit.TransformTestCase):
    """tft_unit's test case on Beam's in-process FnApiRunner, the runner the transform step uses
    (`swiperec.beam_pipeline`): tft_unit's "DirectRunner" would first try Beam's Prism runner."""

    test_session = None  # tf.test.TestCase's helper of that name is not a test

    def _makeTestPipeline(self):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return self._TestPipeline(runner=FnApiRunner())


def video_row(video_id, title, genres, maker):
    return {
        "video_id": video_id,
        "title": title.encode(),
        "description": b"",
        "genres": [g.encode() for g in genres],
        "maker": maker.encode(),
        "performers": [],
        "duration_sec": 3600.0,
        "age_days": 10.0,
    }


def equal_shares(names):
    return [1.0 / len(names)] * len(names) if names else []


def user_example(liked_genres, like_count, source, title_ngrams, label, performers=((), ())):
    """`performers`: (liked, noped) performer names, each list with equal shares."""
    liked_performers, noped_performers = performers
    row = {
        name: [] if isinstance(spec, tf.io.VarLenFeature) else 0.0
        for name, spec in user_feature_spec().items()
    }
    row.update(
        user_source=source.encode(),
        like_count=like_count,
        like_ratio=0.5,
        recency_like_ratio=0.5,
        liked_genres=[g.encode() for g in liked_genres],
        liked_genre_weights=[1.0] * len(liked_genres),
        liked_title_ngrams=[t.encode() for t in title_ngrams],
        liked_title_ngram_weights=[1.0 / len(title_ngrams)] * len(title_ngrams),
        liked_performers=[p.encode() for p in liked_performers],
        liked_performer_weights=equal_shares(liked_performers),
        noped_performers=[p.encode() for p in noped_performers],
        noped_performer_weights=equal_shares(noped_performers),
        label=label,
        weight=1.0,
        sampling_probability=0.5,
        video_id=1,
        video_age_days=3.0,
        example_time_us=0,
        user_key=b"u",
        negative_source=b"" if label else b"nope",
        **{name: 0.25 for name in RANKING_FEATURE_NAMES},
    )
    return row


class VideoGraphTest(TransformTestCase):
    def test_japanese_title_ngrams_tfidf_and_vocabularies(self):
        config = FeatureConfig(title_vocab_size=5, ngram_min=1, ngram_max=2)
        rows = [
            video_row(1, "恋の告白", ["恋愛", "ドラマ"], "メーカーA"),
            video_row(2, "告白", ["恋愛"], ""),
        ]
        # The tokens the graph makes, as the Python mirror makes them for user histories.
        assert char_ngrams("恋の告白", 1, 2) == ["恋", "の", "告", "白", "恋の", "の告", "告白"]

        # Counts: 告 白 告白 twice; 恋 の 恋の の告 once. TFT orders a vocabulary by count,
        # then by the token's bytes, descending: 白 (e7..) 告白 (e5 91 8a e7) 告 (e5 91 8a),
        # then 恋の (e6 81 8b e3) 恋 (e6 81 8b) の告 (e3 81 ae e5) の (e3 81 ae).
        # The file lists all seven; title_vocab_size = 5 keeps 白 告白 告 恋の 恋 (ids 0-4),
        # and の告 and の share the one OOV id (5) with n-grams never seen.
        # tfidf = (count / tokens in the title) * (1 + log((N + 1) / (df + 1))), N = 2 videos:
        # ids 0-2 appear in both titles (idf 1), ids 3-5 only in the first (idf 1 + log 1.5).
        rare = 1 + math.log(3 / 2)
        expected = [
            {
                "video_id": 1,
                "video_text_ids": [0, 1, 2, 3, 4, 5],
                "video_text_weights": [1 / 7, 1 / 7, 1 / 7, rare / 7, rare / 7, 2 * rare / 7],
                "video_genre_ids": [0, 1],  # 恋愛 (twice) before ドラマ
                "video_maker_id": 0,  # メーカーA (e3 83..) sorts above __no_maker__ (5f..)
                "video_age": math.log(11) / math.log(3653.5),  # 10 days on a 10-year scale
            },
            {
                "video_id": 2,
                "video_text_ids": [0, 1, 2],
                "video_text_weights": [1 / 3, 1 / 3, 1 / 3],
                "video_genre_ids": [0],
                "video_maker_id": 1,  # an empty maker is the __no_maker__ token
                "video_age": math.log(11) / math.log(3653.5),
            },
        ]
        full = make_video_preprocessing_fn(config)
        checked = set(expected[0])
        self.assertAnalyzeAndTransformResults(
            rows,
            metadata(video_row_spec()),
            lambda inputs: {k: v for k, v in full(inputs).items() if k in checked},
            expected,
            expected_vocab_file_contents={
                "text_ngrams": [
                    t.encode() for t in ("白", "告白", "告", "恋の", "恋", "の告", "の")
                ],
                "genres": ["恋愛".encode(), "ドラマ".encode()],
                "makers": ["メーカーA".encode(), b"__no_maker__"],
            },
        )


class VideoGraphUnseenValuesTest(TransformTestCase):
    def test_missing_title_unknown_genre_and_maker_map_to_oov_without_error(self):
        config = FeatureConfig(title_vocab_size=5, ngram_min=1, ngram_max=2)
        analysed = [
            video_row(1, "恋の告白", ["恋愛", "ドラマ"], "メーカーA"),
            video_row(2, "告白", ["恋愛"], ""),
        ]
        # Seen after training: no title, an unknown genre next to a known one, a new maker.
        # Genres vocab: 恋愛 0, ドラマ 1, OOV 2; makers: メーカーA 0, __no_maker__ 1, OOV 2.
        unseen = [video_row(3, "", ["ホラー", "恋愛"], "メーカーZ")]
        expected = [
            {
                "video_id": 3,
                "video_text_ids": [],
                "video_text_weights": [],
                "video_genre_ids": [2, 0],
                "video_maker_id": 2,
            }
        ]
        full = make_video_preprocessing_fn(config)
        checked = set(expected[0])
        self.assertAnalyzeAndTransformResults(
            analysed,
            metadata(video_row_spec()),
            lambda inputs: {k: v for k, v in full(inputs).items() if k in checked},
            expected,
            test_data=unseen,
        )


class VideoGraphSmallerVocabularyTest(TransformTestCase):
    def test_fewer_ngrams_than_kept_put_the_oov_id_after_the_last(self):
        # Seven n-grams (ids 0-6, as above) under title_vocab_size = 10: the one OOV id is 7,
        # the file's length, and the text's table has 8 rows, as the exact top-k vocabulary
        # gave. 恋雪 -> 恋 (id 4), 雪 and 恋雪 (never seen: id 7 twice). tfidf over N = 2
        # analysed videos: 恋 has df 1 (idf 1 + log 1.5); the OOV id df 0 (idf 1 + log 3).
        config = FeatureConfig(title_vocab_size=10, ngram_min=1, ngram_max=2)
        analysed = [
            video_row(1, "恋の告白", ["恋愛"], "メーカーA"),
            video_row(2, "告白", ["恋愛"], ""),
        ]
        expected = [
            {
                "video_id": 3,
                "video_text_ids": [4, 7],
                "video_text_weights": [(1 + math.log(3 / 2)) / 3, 2 * (1 + math.log(3)) / 3],
            }
        ]
        full = make_video_preprocessing_fn(config)
        checked = set(expected[0])
        self.assertAnalyzeAndTransformResults(
            analysed,
            metadata(video_row_spec()),
            lambda inputs: {k: v for k, v in full(inputs).items() if k in checked},
            expected,
            test_data=[video_row(3, "恋雪", ["恋愛"], "メーカーA")],
        )


class UserGraphTest(TransformTestCase):
    def test_counts_vocabularies_and_an_unseen_genre(self):
        config = FeatureConfig(title_vocab_size=5)
        analysed = [
            user_example(["恋愛"], 0.0, "real", ["海", "夏"], 1, (["演者A", "演者B"], [])),
            user_example(["恋愛"], 3.0, "pseudo", ["海"], 0, (["演者A"], ["演者C"])),
        ]
        transformed = [
            user_example(
                ["ホラー"], 3.0, "pseudo", ["海", "雪"], 0, (["演者B", "演者Z"], ["演者A"])
            )
        ]
        # like_count 0 and 3 -> log1p -> 0 and log 4: mean log 2, population std log 2, so the
        # transformed row's log 4 is z = +1. Genres: only 恋愛 was seen (id 0); ホラー is OOV
        # (id 1). Title n-grams: 海 twice (id 0), 夏 once (id 1); 雪 unseen: OOV id 2.
        # Performers: liked and noped share one vocabulary, by count then bytes descending:
        # 演者A (twice: liked, liked) id 0, then once each 演者C id 1 and 演者B id 2 (C's last
        # byte 0x43 is above B's 0x42); 演者Z is unseen: one of the 4 OOV buckets, ids 3-6, by
        # its fingerprint (tf.strings.to_hash_bucket_fast("演者Z", 4) is 3, so id 6).
        expected = [
            {
                "user_liked_performer_ids": [2, 6],
                "user_liked_performer_weights": [0.5, 0.5],
                "user_noped_performer_ids": [0],
                "user_noped_performer_weights": [1.0],
                "user_like_count_z": 1.0,
                "user_is_pseudo": 1.0,
                "user_liked_genre_ids": [1],
                "user_liked_genre_weights": [1.0],
                "user_title_ids": [0, 2],
                "user_title_weights": [0.5, 0.5],
                "label": 0,
                "video_age_days": 3.0,
                # the match features pass through untouched
                **{name: 0.25 for name in RANKING_FEATURE_NAMES},
            }
        ]
        full = make_user_preprocessing_fn(config)
        checked = set(expected[0])
        self.assertAnalyzeAndTransformResults(
            analysed,
            metadata(example_spec()),
            lambda inputs: {k: v for k, v in full(inputs).items() if k in checked},
            expected,
            test_data=transformed,
            expected_vocab_file_contents={
                "user_genres": ["恋愛".encode()],
                "user_title_ngrams": ["海".encode(), "夏".encode()],
                "user_performers": [p.encode() for p in ("演者A", "演者C", "演者B")],
            },
        )


def test_each_tower_takes_its_own_raw_features():
    """The serving contract: the towers' raw inputs do not overlap, and a training example
    is the user's features plus bookkeeping only (videos are joined by id)."""
    users, videos = set(user_feature_spec()), set(video_feature_spec())
    assert not users & videos
    assert set(example_spec()) - users == {
        "label",
        "weight",
        "sampling_probability",
        "video_id",
        "video_age_days",
        "example_time_us",
        "user_key",
        "negative_source",
        *RANKING_FEATURE_NAMES,
    }
    assert set(video_row_spec()) - videos == {"video_id"}
