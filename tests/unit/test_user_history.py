"""Char n-grams (the TF graph's twin), FeatureConfig, and UserHistory's features on hand cases."""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from swiperec.features.config import (
    FeatureConfig,
    char_ngrams,
    datetime_to_us,
    stored_feature_config,
)
from swiperec.features.events import catalogue_from_table
from swiperec.features.user_history import (
    DAY_US,
    MATCH_FEATURE_NAMES,
    USER_FEATURE_NAMES,
    UserHistory,
)

T0 = datetime_to_us(datetime(2026, 1, 1, tzinfo=UTC))


# -- char_ngrams -------------------------------------------------------------------------------
# Expected lists are what TF 2.21 printed for tf.strings.ngrams(tf.strings.unicode_split(text,
# "UTF-8"), ngram_width=(lo..hi), separator=""): all narrow n-grams first, then wider ones.


def test_char_ngrams_japanese_title():
    assert char_ngrams("初恋の", 1, 2) == ["初", "恋", "の", "初恋", "恋の"]
    assert char_ngrams("恋の放課後", 1, 2) == [
        "恋", "の", "放", "課", "後", "恋の", "の放", "放課", "課後",
    ]  # fmt: skip


def test_char_ngrams_widths_one_to_three():
    assert char_ngrams("初恋の夏", 1, 3) == [
        "初", "恋", "の", "夏", "初恋", "恋の", "の夏", "初恋の", "恋の夏",
    ]  # fmt: skip
    assert char_ngrams("初恋の夏", 2, 3) == ["初恋", "恋の", "の夏", "初恋の", "恋の夏"]


def test_char_ngrams_keeps_whitespace_and_drops_too_short_widths():
    # A space (and an ideographic space) is a character like any other in the TF graph.
    assert char_ngrams("ab c", 1, 2) == ["a", "b", " ", "c", "ab", "b ", " c"]
    assert char_ngrams("夏　海", 2, 2) == ["夏　", "　海"]
    # TF's preserve_short_sequences=False: a text shorter than a width has no such n-grams.
    assert char_ngrams("a", 2, 3) == []
    assert char_ngrams("ab", 1, 3) == ["a", "b", "ab"]


def test_char_ngrams_empty_text():
    assert char_ngrams("", 1, 2) == []
    assert char_ngrams(None, 1, 2) == []


# -- FeatureConfig ----------------------------------------------------------------------------


def test_config_round_trips_through_json():
    config = FeatureConfig(
        pseudo_user_weight=0.5,
        val_start=datetime(2026, 3, 1, tzinfo=UTC),
        test_start=datetime(2026, 4, 1, 9, tzinfo=timezone(timedelta(hours=9))),
    )
    assert config.test_start == datetime(2026, 4, 1, 0, tzinfo=UTC)  # normalised to UTC
    restored = FeatureConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert FeatureConfig.from_dict({}) == FeatureConfig()
    # An artifact's config from before the profile cap existed made uncapped profiles.
    assert stored_feature_config({}) == FeatureConfig(history_profile_size=0)
    assert stored_feature_config(config.to_dict()) == config


def test_config_reads_naive_datetimes_as_utc():
    config = FeatureConfig(val_start=datetime(2026, 3, 1), test_start=datetime(2026, 4, 1))
    assert config.val_start == datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"like_rating": 2, "nope_rating": 2}, "nope_rating < like_rating"),
        ({"like_rating": 6}, "like_rating <= 5"),
        ({"pseudo_user_weight": -0.1}, "pseudo_user_weight must not be negative"),
        ({"negatives_per_positive": float("nan")}, "must be finite"),
        ({"recency_half_life_days": 0}, "recency_half_life_days must be positive"),
        ({"history_titles": 2.5}, "history_titles must be an int"),
        ({"history_profile_size": -1}, "history_profile_size must not be negative"),
        ({"seed": True}, "seed must be an int"),
        ({"ngram_min": 3, "ngram_max": 2}, "ngram_min <= ngram_max"),
        ({"title_vocab_size": 200_001}, "title_vocab_size is at most 200000"),
        ({"user_vocab_size": 0}, "user_vocab_size must be at least 1"),
        ({"val_start": datetime(2026, 3, 1)}, "give both val_start and test_start"),
        (
            {"val_start": datetime(2026, 4, 1), "test_start": datetime(2026, 3, 1)},
            "must be before test_start",
        ),
    ],
)
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        FeatureConfig(**changes)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown FeatureConfig keys"):
        FeatureConfig.from_dict({"negatives_per_postive": 2.0})


# -- UserHistory ------------------------------------------------------------------------------


@pytest.fixture
def catalogue():
    return catalogue_from_table(
        pa.table(
            {
                "id": [1, 2, 3, 4],
                "external_id": ["v1", "v2", "v3", "v4"],
                "title": ["初恋", "夏祭り", "", "海"],
                "genres": [["恋愛", "ドラマ"], ["恋愛"], [], ["アクション"]],
                "maker": ["A", "B", None, "A"],
                "performers": [["P", "Q"], ["Q"], [], ["R", None]],
            }
        )
    )


# Half-life one day, so weights are powers of two of the event's age in days.
CONFIG = FeatureConfig(recency_half_life_days=1.0, history_titles=2, history_videos=2)


def test_empty_history(catalogue):
    features = UserHistory(catalogue, CONFIG, is_pseudo=False).features(T0)
    assert list(features) == list(USER_FEATURE_NAMES)
    assert features["user_source"] == "real"
    for name in ("like_count", "nope_count", "recency_like_count", "recency_nope_count",
                 "days_since_last_decision", "tenure_days", "has_history"):  # fmt: skip
        assert features[name] == 0.0, name
    assert features["like_ratio"] == features["recency_like_ratio"] == 0.5  # (0 + 1) / (0 + 2)
    for name in USER_FEATURE_NAMES[10:]:
        assert features[name] == [], name


def test_counts_ratios_recency_and_shares(catalogue):
    history = UserHistory(catalogue, CONFIG, is_pseudo=True)
    history.add(1, 1, T0)  # like 初恋: 恋愛, ドラマ, maker A
    history.add(2, 1, T0 + DAY_US)  # like 夏祭り: 恋愛, maker B
    history.add(4, 0, T0 + 2 * DAY_US)  # nope 海: アクション, maker A
    features = history.features(T0 + 3 * DAY_US)
    assert features["user_source"] == "pseudo"
    assert features["like_count"] == 2.0 and features["nope_count"] == 1.0
    assert features["like_ratio"] == pytest.approx(3 / 5)  # (2 + 1) / (3 + 2)
    # At day 3 the likes are 3 and 2 days old, the nope 1 day: 1/8 + 1/4 and 1/2.
    assert features["recency_like_count"] == pytest.approx(0.375)
    assert features["recency_nope_count"] == pytest.approx(0.5)
    assert features["recency_like_ratio"] == pytest.approx(1.375 / 2.875)
    assert features["days_since_last_decision"] == pytest.approx(1.0)
    assert features["tenure_days"] == pytest.approx(3.0)
    assert features["has_history"] == 1.0
    # 恋愛 carries both likes (1/8 + 1/4), ドラマ one (1/8): shares 3/4 and 1/4.
    assert features["liked_genres"] == ["恋愛", "ドラマ"]
    assert features["liked_genre_weights"] == pytest.approx([0.75, 0.25])
    # Maker B's like is the more recent one: 1/4 against A's 1/8.
    assert features["liked_makers"] == ["B", "A"]
    assert features["liked_maker_weights"] == pytest.approx([2 / 3, 1 / 3])
    assert features["noped_genres"] == ["アクション"] and features["noped_genre_weights"] == [1.0]
    assert features["noped_makers"] == ["A"] and features["noped_maker_weights"] == [1.0]
    # Q is in both liked videos (1/8 + 1/4), P in the older one (1/8): shares 3/4 and 1/4.
    assert features["liked_performers"] == ["Q", "P"]
    assert features["liked_performer_weights"] == pytest.approx([0.75, 0.25])
    # The noped video's NULL performer is dropped (the catalogue drops it): R alone.
    assert features["noped_performers"] == ["R"] and features["noped_performer_weights"] == [1.0]


def test_match_is_the_videos_share_of_the_liked_and_noped_weight(catalogue):
    history = UserHistory(catalogue, CONFIG, is_pseudo=False)
    # Nothing decided: nothing matches.
    assert history.match(0) == [0.0] * len(MATCH_FEATURE_NAMES)
    history.add(1, 1, T0)  # like 初恋: 恋愛, ドラマ, maker A, P, Q
    history.add(2, 1, T0 + DAY_US)  # like 夏祭り: 恋愛, maker B, Q
    history.add(4, 0, T0 + 2 * DAY_US)  # nope 海: アクション, maker A, R
    match = dict(zip(MATCH_FEATURE_NAMES, history.match(0), strict=True))  # video 1 itself
    features = history.features(T0 + 3 * DAY_US)
    # The shares `features` lists: liked makers B 2/3, A 1/3; genres 恋愛 3/4, ドラマ 1/4;
    # performers Q 3/4, P 1/4; noped maker A 1, genre アクション 1, performer R 1.
    assert features["liked_makers"] == ["B", "A"]
    assert match == pytest.approx(
        {
            "match_liked_maker": 1 / 3,
            "match_noped_maker": 1.0,
            "match_liked_genres": (3 / 4 + 1 / 4) / 2,  # the mean over the video's two genres
            "match_noped_genres": 0.0,
            "match_liked_performers": (1 / 4 + 3 / 4) / 2,
            "match_noped_performers": 0.0,
        }
    )
    # Video 4 (アクション, maker A, R): the noped video; its NULL performer is no performer.
    assert history.match(3) == pytest.approx([1 / 3, 1.0, 0.0, 1.0, 0.0, 1.0])
    # Video 3 has no genres, maker or performers: nothing to match.
    assert history.match(2) == [0.0] * len(MATCH_FEATURE_NAMES)
    # The shares do not depend on the query time, and asking changes nothing.
    assert history.match(0) == pytest.approx(list(match.values()))


def test_performer_shares_follow_recency_and_likes_and_nopes_apart(catalogue):
    history = UserHistory(catalogue, CONFIG, is_pseudo=False)  # half-life: one day
    history.add(2, 1, T0)  # like: Q
    history.add(1, 0, T0 + DAY_US)  # nope: P, Q
    history.add(1, 1, T0 + 2 * DAY_US)  # like: P, Q
    history.add(4, 0, T0 + 3 * DAY_US)  # nope: R
    at = T0 + 4 * DAY_US
    features = history.features(at)
    # Liked at days 0 and 2, so 4 and 2 days old: Q 1/16 + 1/4 = 5/16, P 1/4; total 9/16.
    assert features["liked_performers"] == ["Q", "P"]
    assert features["liked_performer_weights"] == pytest.approx([5 / 9, 4 / 9])
    # Noped at days 1 and 3, 3 and 1 days old: P 1/8, Q 1/8, R 1/2; total 3/4. P and Q tie,
    # so they sort by name.
    assert features["noped_performers"] == ["R", "P", "Q"]
    assert features["noped_performer_weights"] == pytest.approx([2 / 3, 1 / 6, 1 / 6])
    # A later nope re-ranks the noped list and leaves the liked list (cached) alone.
    history.add(2, 0, at)  # nope: Q, weight 1
    later = history.features(at)
    assert later["liked_performers"] == features["liked_performers"]
    assert later["liked_performer_weights"] == features["liked_performer_weights"]
    # Q 1/8 + 1 = 9/8, R 1/2, P 1/8; total 7/4.
    assert later["noped_performers"] == ["Q", "R", "P"]
    assert later["noped_performer_weights"] == pytest.approx([9 / 14, 2 / 7, 1 / 14])
    # The caller owns the lists it gets: changing them leaves the history's cache alone.
    later["liked_performers"].append("X")
    later["noped_performer_weights"][0] = 0.0
    again = history.features(at)
    assert again["liked_performers"] == ["Q", "P"]
    assert again["noped_performer_weights"] == pytest.approx([9 / 14, 2 / 7, 1 / 14])


def test_profiles_keep_the_largest_shares_of_the_whole_history(catalogue):
    capped = UserHistory(catalogue, replace(CONFIG, history_profile_size=1), is_pseudo=False)
    whole = UserHistory(catalogue, replace(CONFIG, history_profile_size=0), is_pseudo=False)
    for history in (capped, whole):
        history.add(1, 1, T0)  # P, Q; 恋愛, ドラマ; maker A: weight 1 each
        history.add(2, 1, T0)  # Q; 恋愛; B: 1
        history.add(4, 1, T0 + DAY_US)  # R; アクション; A: 2 (a day later)
    features, every = capped.features(T0 + 2 * DAY_US), whole.features(T0 + 2 * DAY_US)
    # Q (1 + 1) and R (2) tie on 2 of 5 and sort by name; P has 1 of 5.
    assert every["liked_performers"] == ["Q", "R", "P"]
    assert every["liked_performer_weights"] == pytest.approx([0.4, 0.4, 0.2])
    assert features["liked_performers"] == ["Q"]
    assert features["liked_performer_weights"] == pytest.approx([0.4])  # of all five, still
    assert every["liked_genres"] == ["アクション", "恋愛", "ドラマ"]
    assert features["liked_genres"] == ["アクション"]
    assert features["liked_maker_weights"] == pytest.approx([0.75])  # A: 3 of 4
    # The match features weigh every name, not only the profile's.
    for position in range(4):
        assert capped.match(position) == whole.match(position)
    assert capped.match(0)[4] == pytest.approx((0.2 + 0.4) / 2)  # P and Q


def test_decayed_count_halves_after_one_half_life(catalogue):
    config = FeatureConfig(recency_half_life_days=30.0)
    history = UserHistory(catalogue, config, is_pseudo=False)
    history.add(1, 1, T0)
    history.add(4, 0, T0)
    assert history.features(T0)["recency_like_count"] == pytest.approx(1.0)
    later = history.features(T0 + 30 * DAY_US)
    assert later["recency_like_count"] == pytest.approx(0.5)
    assert later["recency_nope_count"] == pytest.approx(0.5)
    assert history.features(T0 + 60 * DAY_US)["recency_like_count"] == pytest.approx(0.25)
    assert later["like_count"] == 1.0  # plain counts do not decay


def test_equal_weights_sort_by_name(catalogue):
    history = UserHistory(catalogue, CONFIG, is_pseudo=False)
    history.add(1, 1, T0)  # 恋愛 and ドラマ with the same weight
    features = history.features(T0)
    assert features["liked_genres"] == sorted(["恋愛", "ドラマ"])
    assert features["liked_genre_weights"] == [0.5, 0.5]


def test_title_ngrams_and_recent_videos_use_only_the_last_likes(catalogue):
    history = UserHistory(catalogue, CONFIG, is_pseudo=False)  # last 2 titles, last 2 videos
    history.add(1, 1, T0)  # 初恋: falls out of both windows
    history.add(2, 1, T0 + 1)  # 夏祭り
    history.add(3, 0, T0 + 2)  # a nope never enters the liked windows
    history.add(4, 1, T0 + 3)  # 海
    features = history.features(T0 + 4)
    # The profile of the last two liked titles (海, 夏祭り): each n-gram once, so ordered by
    # n-gram (code point order) with equal shares; 初恋 fell out of the window.
    assert features["liked_title_ngrams"] == sorted(["海", "夏", "祭", "り", "夏祭", "祭り"])
    assert features["liked_title_ngram_weights"] == [1 / 6] * 6
    assert features["recent_liked_videos"] == ["v4", "v2"]


def test_repeated_titles_repeat_their_ngrams(catalogue):
    history = UserHistory(catalogue, CONFIG, is_pseudo=False)
    history.add(4, 1, T0)
    history.add(4, 1, T0 + DAY_US)  # a second like of the same video is a second answer
    features = history.features(T0 + DAY_US)
    assert features["like_count"] == 2.0
    assert features["liked_title_ngrams"] == ["海"]
    assert features["liked_title_ngram_weights"] == [1.0]  # counted twice, one n-gram
    assert features["recent_liked_videos"] == ["v4", "v4"]


def test_video_without_title_genres_or_maker(catalogue):
    history = UserHistory(catalogue, CONFIG, is_pseudo=False)
    history.add(3, 1, T0)
    features = history.features(T0)
    assert features["like_count"] == 1.0
    assert features["liked_genres"] == [] and features["liked_makers"] == []
    assert features["liked_performers"] == [] and features["liked_performer_weights"] == []
    assert features["liked_title_ngrams"] == []
    assert features["recent_liked_videos"] == ["v3"]


def test_history_refuses_out_of_order_events_and_past_queries(catalogue):
    history = UserHistory(catalogue, CONFIG, is_pseudo=False)
    history.add(1, 1, T0 + DAY_US)
    with pytest.raises(ValueError, match="time order"):
        history.add(2, 1, T0)
    with pytest.raises(ValueError, match="before the last added event"):
        history.features(T0)
    with pytest.raises(ValueError, match="label"):
        history.add(2, 2, T0 + DAY_US)
    with pytest.raises(KeyError, match="not in the catalogue"):
        history.add(99, 1, T0 + DAY_US)


def test_weights_stay_finite_across_thousands_of_half_lives(catalogue):
    history = UserHistory(catalogue, CONFIG, is_pseudo=False)  # half-life: one day
    history.add(1, 1, T0)
    history.add(2, 1, T0 + 600 * DAY_US)  # the forward-scaled weights rescale on the way
    history.add(4, 1, T0 + 3000 * DAY_US)
    features = history.features(T0 + 3001 * DAY_US)
    assert features["recency_like_count"] == pytest.approx(0.5)
    assert features["liked_genres"] == ["アクション"]  # the older genres decayed to nothing
    assert math.fsum(features["liked_maker_weights"]) == pytest.approx(1.0)
    assert features["liked_performers"] == ["R"]  # P and Q (days 0 and 600) decayed away
    assert features["liked_performer_weights"] == [1.0]
    assert features["like_count"] == 3.0


def test_history_pickles(catalogue):
    history = UserHistory(catalogue, CONFIG, is_pseudo=False)
    history.add(1, 1, T0)
    history.add(4, 0, T0 + DAY_US)
    restored = pickle.loads(pickle.dumps(history))
    assert restored.features(T0 + 2 * DAY_US) == history.features(T0 + 2 * DAY_US)
    # Pickled after a query, the kept profiles travel with the weights they rank: events
    # added to both afterwards move both alike.
    copies = [
        pickle.loads(pickle.dumps(history, protocol=protocol))
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1)
    ]
    for each in (history, *copies):
        each.add(2, 1, T0 + 3 * DAY_US)
        each.add(1, 0, T0 + 3 * DAY_US)
    expected = history.features(T0 + 4 * DAY_US)
    assert expected["liked_performers"] == ["Q", "P"]  # Q's second like moved it first
    for each in copies:
        assert each.features(T0 + 4 * DAY_US) == expected


def test_a_whole_history_at_once_gives_the_same_features_to_the_last_bit(catalogue):
    import random

    rng = random.Random(3)
    positions = [rng.randrange(4) for _ in range(300)]
    labels = [rng.randrange(2) for _ in range(300)]
    # Hours apart, with ties and one jump of 600 half-lives, across which the weights rescale.
    times = sorted(T0 + rng.randrange(0, 40) * 3_600_000_000 for _ in range(300))
    times = times[:150] + [t + 600 * DAY_US for t in times[150:]]
    one_by_one = UserHistory(catalogue, CONFIG, is_pseudo=False)
    for position, label, time_us in zip(positions, labels, times, strict=True):
        one_by_one.add_at_position(position, label, time_us)
    at_once = UserHistory(catalogue, CONFIG, is_pseudo=False)
    at_once.extend_at_positions(positions[:100], labels[:100], times[:100])  # and then the rest
    at_once.extend_at_positions(positions[100:], labels[100:], times[100:])
    at = times[-1] + DAY_US
    assert at_once.features(at) == one_by_one.features(at)  # floats equal, not approximately
    assert [at_once.match(p) for p in range(4)] == [one_by_one.match(p) for p in range(4)]
    assert len(at_once) == 300


def test_profiles_kept_event_by_event_match_a_fresh_ranking_at_every_step():
    """The profiles a history keeps up to date one event at a time (the few largest names of
    each list, the last liked titles' n-gram counts) against the same events ranked afresh
    (a history given the events at once by `extend_at_positions`, whose next query sorts each
    list whole) after every event, and the title n-grams against a plain count of the last
    liked titles: with small caps, so names enter and leave the profiles and titles leave the
    n-gram counts, with equal weights (events at one time) ordered by name, and across a
    rescale of the weights."""
    import random
    from collections import Counter

    rng = random.Random(7)
    pool = "海夏祭り初恋花火雪月"
    videos = 40
    catalogue = catalogue_from_table(
        pa.table(
            {
                "id": list(range(1, videos + 1)),
                "external_id": [f"v{i}" for i in range(1, videos + 1)],
                "title": ["".join(rng.choices(pool, k=rng.randrange(0, 5))) for _ in range(videos)],
                "genres": [rng.sample("ABCDEFGH", rng.randrange(0, 3)) for _ in range(videos)],
                "maker": [rng.choice(["m1", "m2", "m3", "m4", None]) for _ in range(videos)],
                "performers": [
                    [f"p{k}" for k in rng.sample(range(12), rng.randrange(0, 4))]
                    for _ in range(videos)
                ],
            }
        )
    )
    config = replace(CONFIG, history_profile_size=3, history_titles=3, title_profile_size=4)
    positions = [rng.randrange(videos) for _ in range(400)]
    labels = [rng.randrange(2) for _ in range(400)]
    times = sorted(T0 + rng.randrange(0, 60) * 3_600_000_000 for _ in range(400))
    times = times[:200] + [t + 600 * DAY_US for t in times[200:]]  # the weights rescale
    kept = UserHistory(catalogue, config, is_pseudo=False)
    entered = set()
    for n, (position, label, time_us) in enumerate(zip(positions, labels, times, strict=True)):
        kept.add_at_position(position, label, time_us)
        fresh = UserHistory(catalogue, config, is_pseudo=False)
        fresh.extend_at_positions(positions[: n + 1], labels[: n + 1], times[: n + 1])
        features = kept.features(time_us)
        assert features == fresh.features(time_us), n  # floats equal, not approximately
        entered.update(features["liked_performers"])
        liked = [p for p, label in zip(positions[: n + 1], labels, strict=False) if label]
        counts = Counter(
            g
            for p in liked[-config.history_titles :]
            for g in char_ngrams(catalogue.title[p], 1, 2)
        )
        ranked = sorted(counts, key=lambda g: (-counts[g], g))[: config.title_profile_size]
        assert features["liked_title_ngrams"] == ranked, n
    assert len(entered) > 3 * 2  # the profile's names changed, beyond its first three
    assert kept._anchor_us > times[0]  # the weights were rescaled on the way


def test_a_whole_history_with_a_bad_event_adds_nothing(catalogue):
    history = UserHistory(catalogue, CONFIG, is_pseudo=False)
    history.add(1, 1, T0 + DAY_US)
    with pytest.raises(ValueError, match="time order"):
        history.extend_at_positions([0, 1], [1, 1], [T0 + 2 * DAY_US, T0])
    with pytest.raises(ValueError, match="time order"):  # before the events already added
        history.extend_at_positions([0], [1], [T0])
    with pytest.raises(ValueError, match="label"):
        history.extend_at_positions([0, 1], [1, 2], [T0 + 2 * DAY_US, T0 + 3 * DAY_US])
    with pytest.raises(ValueError, match="one of each per event"):
        history.extend_at_positions([0, 1], [1, 1], [T0 + 2 * DAY_US])
    with pytest.raises(IndexError, match="catalogue position"):
        history.extend_at_positions([0, 4], [1, 1], [T0 + 2 * DAY_US, T0 + 3 * DAY_US])
    assert len(history) == 1
    assert history.features(T0 + DAY_US)["like_count"] == 1.0
