"""The synthetic generator's timeline option: app users who arrive over time, reviewers who differ
from them in taste and rating habits; and the standard data set left exactly as it was."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import replace

import numpy as np
import pytest

from swiperec.cli.common import UserError
from swiperec.cli.data_commands import add_generation_options, config_from_args
from swiperec.data.synthetic import (
    _APP_LIFETIME_DAYS,
    _DAY_US,
    _RATING_THRESHOLDS,
    TIMELINE,
    SyntheticConfig,
    generate,
)
from swiperec.data.synthetic_truth import GroundTruth, sigmoid

BASE = SyntheticConfig(
    videos=1_000, users=300, pseudo_users=300, decisions_per_user=20, reviews_per_pseudo_user=10
)
TINY = SyntheticConfig(
    videos=200, users=20, pseudo_users=40, decisions_per_user=10, reviews_per_pseudo_user=5
)
# The ground truth's fields before the timeline option existed (its new field is checked apart).
TRUTH_FIELDS = (
    "video_external_ids", "video_vectors", "video_quality", "user_ids", "user_taste",
    "user_bias", "reviewer_ids", "reviewer_taste", "reviewer_bias", "a", "b", "c",
    "rating_thresholds",
)  # fmt: skip


@pytest.fixture(scope="module")
def default():
    return generate(BASE)


@pytest.fixture(scope="module")
def timeline():
    return generate(BASE.with_timeline())


def _digest(ds) -> str:
    h = hashlib.sha256()
    for table in (ds.decisions, ds.reviews):
        for name in sorted(table):
            h.update(name.encode())
            h.update(np.ascontiguousarray(table[name]).tobytes())
    h.update(ds.user_ids.tobytes())
    for name in TRUTH_FIELDS:
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.asarray(getattr(ds.ground_truth, name))).tobytes())
    videos = ds.videos
    h.update(
        repr(
            [
                videos[k].tolist() if isinstance(videos[k], np.ndarray) else videos[k]
                for k in sorted(videos)
            ]
        ).encode()
    )
    return h.hexdigest()


def _app_quarter(config: SyntheticConfig, created_at: np.ndarray) -> np.ndarray:
    """Quarter 0-3 of the app's life (its last `_APP_LIFETIME_DAYS` days) of each time."""
    end = int(np.datetime64(config.end).astype("datetime64[us]").astype(np.int64))
    start = end - _APP_LIFETIME_DAYS * _DAY_US
    return np.minimum((created_at.astype(np.int64) - start) * 4 // (end - start), 3)


def _active_users_per_quarter(ds) -> list[int]:
    quarter = _app_quarter(ds.config, ds.decisions["created_at"])
    return [len(np.unique(ds.decisions["user_index"][quarter == q])) for q in range(4)]


def test_the_standard_data_set_is_unchanged():
    """Digests and numbers recorded before the timeline option was added."""
    ds = generate(TINY)
    assert _digest(ds) == "6cba8e16a2af787ecb266ae3456b7c31e089b390994b6ae6aae59b25bbadd6c0"
    assert len(ds.decisions["like"]) == 165 and int(ds.decisions["like"].sum()) == 54
    assert ds.reviews["rating"][:10].tolist() == [2, 1, 1, 2, 4, 1, 5, 5, 4, 1]
    assert ds.ground_truth.c == -1.933897
    assert np.array_equal(ds.ground_truth.rating_thresholds, _RATING_THRESHOLDS)
    assert np.array_equal(ds.ground_truth.reviewer_rating_offset, np.zeros(40))
    other = generate(
        replace(TINY, videos=500, users=50, pseudo_users=80, decisions_per_user=20,
                reviews_per_pseudo_user=8, seed=7)
    )  # fmt: skip
    assert _digest(other) == "a717e5632c74ea1c9c3c9b63a86a0752866a07a29efaa4ef910965f23f12d480"
    only_reviewers = generate(
        replace(TINY, videos=300, users=0, pseudo_users=60, decisions_per_user=20,
                reviews_per_pseudo_user=8, seed=3)
    )  # fmt: skip
    assert _digest(only_reviewers) == (
        "b2da9f8a7f9535b7bbb4a3e2cc2186886c24ae13d04aece486738c5f3cc30282"
    )


def test_with_timeline_sets_the_timeline_values():
    config = BASE.with_timeline()
    assert {name: getattr(config, name) for name in TIMELINE} == TIMELINE
    assert (config.videos, config.users, config.seed) == (BASE.videos, BASE.users, BASE.seed)
    assert SyntheticConfig().user_growth == 1.5 and SyntheticConfig().reviewer_strictness == 0


def test_app_users_arrive_over_time(default, timeline):
    active = _active_users_per_quarter(timeline)
    # Measured (seed 42): [12, 30, 78, 235], 19.6x; the standard data set [32, 65, 117, 167], 5.2x.
    assert active[3] >= 12 * active[0], active
    assert np.all(np.diff(active) > 0), active
    standard = _active_users_per_quarter(default)
    assert active[3] / active[0] > 3 * standard[3] / standard[0], (active, standard)
    # Few swipes early: the first quarter holds under 4 % of them (measured 2.6 %).
    quarter = _app_quarter(timeline.config, timeline.decisions["created_at"])
    assert (quarter == 0).mean() < 0.04
    # First swipes (sign-ups) grow too.
    first = np.full(BASE.users, np.iinfo(np.int64).max)
    np.minimum.at(
        first, timeline.decisions["user_index"], timeline.decisions["created_at"].astype(np.int64)
    )
    signups = np.bincount(_app_quarter(timeline.config, first), minlength=4)
    assert signups[3] > 10 * signups[0], signups


def test_reviews_cover_the_whole_span_from_the_start(default, timeline):
    reviews = timeline.reviews
    # The same reviews (who, what, when) as the standard data set; only the ratings differ.
    for column in ("reviewer_index", "video_id", "created_at"):
        assert np.array_equal(reviews[column], default.reviews[column]), column
    quarter = _app_quarter(timeline.config, reviews["created_at"])
    app_start = np.datetime64(timeline.config.end) - np.timedelta64(_APP_LIFETIME_DAYS, "D")
    before_app = reviews["created_at"] < app_start
    assert before_app.mean() > 0.4  # plenty of reviews before the app's first swipe (0.59)
    per_quarter = np.bincount(quarter[~before_app], minlength=4)
    swipes = np.bincount(
        _app_quarter(timeline.config, timeline.decisions["created_at"]), minlength=4
    )
    assert per_quarter[0] > swipes[0]  # reviews outnumber swipes early on ...
    assert per_quarter[3] < swipes[3]  # ... and swipes outnumber reviews at the end


def test_reviewers_taste_differs_from_app_users(default, timeline):
    """Per video, how much reviewers like it on average tracks app users' only loosely."""

    def correlation(ds) -> float:
        gt = ds.ground_truth
        base = (gt.b * gt.video_quality + gt.c)[:, None]
        users = sigmoid(gt.a * gt.video_vectors @ gt.user_taste.T + gt.user_bias + base)
        reviewers = sigmoid(gt.a * gt.video_vectors @ gt.reviewer_taste.T + gt.reviewer_bias + base)
        return float(np.corrcoef(users.mean(axis=1), reviewers.mean(axis=1))[0, 1])

    # Measured 0.997 and 0.840.
    assert correlation(default) > 0.97
    assert correlation(timeline) < 0.95
    gt = timeline.ground_truth
    shift = gt.reviewer_taste.mean(axis=0) - gt.user_taste.mean(axis=0)
    rms = np.sqrt(np.mean(np.sum(gt.user_taste**2, axis=1)))
    assert 0.3 < np.linalg.norm(shift) / rms < 0.8  # reviewer_taste_shift 0.5 plus sampling


def test_ratings_do_not_map_to_likes_by_the_naive_threshold(default, timeline):
    def like_rate_at(ds, rating: int) -> float:
        """Reviewers' true P(like) (as they would swipe) of the videos they rated `rating`."""
        return float(ds.reviews["p_like"][ds.reviews["rating"] == rating].mean())

    # Measured: rating 3 is 0.58 like (0.39 in the standard data set).
    assert like_rate_at(timeline, 3) > 0.5
    assert like_rate_at(default, 3) < 0.45
    assert all(like_rate_at(timeline, k) < like_rate_at(timeline, k + 1) for k in range(1, 5))
    ratings = np.bincount(timeline.reviews["rating"], minlength=6)[1:] / len(
        timeline.reviews["rating"]
    )
    assert ratings[3:].sum() > 0.55  # 4 and 5 are the majority (measured 0.58; standard 0.41)
    # Ratings are harsher than likes: P(rating >= 4) < P(like), and reviewers differ.
    gt = timeline.ground_truth
    assert gt.rating_thresholds[2] == pytest.approx(TIMELINE["reviewer_strictness"])
    assert 0.4 < gt.reviewer_rating_offset.std() < 0.6
    # App users' mean P(like) of the rated videos: known for every rating level.
    app = gt.mean_p_like_users(timeline.reviews["video_id"])
    assert np.all((app > 0) & (app < 1))
    per_rating = [app[timeline.reviews["rating"] == k].mean() for k in range(1, 6)]
    assert per_rating[4] > per_rating[0]


def test_the_ground_truth_reproduces_the_rating_mix(timeline):
    gt, reviews = timeline.ground_truth, timeline.reviews
    predicted = gt.rating_probabilities(reviews["reviewer_index"], reviews["video_id"])
    assert predicted.shape == (len(reviews["rating"]), 5)
    assert np.allclose(predicted.sum(axis=1), 1.0) and predicted.min() >= 0
    observed = np.bincount(reviews["rating"], minlength=6)[1:] / len(reviews["rating"])
    assert np.abs(predicted.mean(axis=0) - observed).max() < 0.02
    # Harsh thresholds: a high rating is less likely than a like.
    p_high = predicted[:, 3:].sum(axis=1)
    assert (p_high < reviews["p_like"] - 1e-6).mean() > 0.6


def test_standard_ratings_are_likes(default):
    gt, reviews = default.ground_truth, default.reviews
    predicted = gt.rating_probabilities(reviews["reviewer_index"], reviews["video_id"])
    assert np.allclose(predicted[:, 3:].sum(axis=1), reviews["p_like"], atol=1e-6)


def test_the_same_seed_gives_the_same_timeline_data(timeline):
    again = generate(BASE.with_timeline())
    for table in ("decisions", "reviews"):
        for name, column in getattr(timeline, table).items():
            assert np.array_equal(column, getattr(again, table)[name]), (table, name)
    assert again.ground_truth.equals(timeline.ground_truth)
    other = generate(replace(BASE.with_timeline(), seed=43))
    assert not np.array_equal(other.reviews["rating"], timeline.reviews["rating"])


def test_saved_ground_truth_keeps_the_offsets_and_old_files_load(timeline, tmp_path):
    gt = timeline.ground_truth
    loaded = GroundTruth.load(gt.save(tmp_path / "truth.npz"))
    assert loaded.equals(gt) and loaded.reviewer_rating_offset.std() > 0
    # A file saved before the field existed loads with zero offsets.
    with np.load(tmp_path / "truth.npz") as stored:
        arrays = {k: stored[k] for k in stored.files if k != "reviewer_rating_offset"}
    np.savez(tmp_path / "old.npz", **arrays)
    old = GroundTruth.load(tmp_path / "old.npz")
    assert np.array_equal(old.reviewer_rating_offset, np.zeros(len(gt.reviewer_ids)))
    assert np.array_equal(old.reviewer_taste, gt.reviewer_taste)


def test_only_reviewers_or_uniform_sign_ups():
    only_reviewers = generate(replace(TINY, users=0).with_timeline())
    assert len(only_reviewers.decisions["like"]) == 0 and len(only_reviewers.reviews["rating"]) > 0
    assert np.isnan(only_reviewers.ground_truth.mean_p_like_users(np.array([1, 2]))).all()
    # c is solved before the bias shift, so reviewers still like more than 38 %.
    assert only_reviewers.reviews["p_like"].mean() > 0.5
    uniform = generate(replace(BASE, user_growth=0.0))
    active = _active_users_per_quarter(uniform)
    assert max(active) < 2.5 * min(active), active


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"user_growth": -1.0}, r"user_growth must be a number from 0 to 20, got -1\.0"),
        ({"user_growth": 25}, "user_growth must be a number from 0 to 20"),
        ({"user_growth": float("nan")}, "user_growth must be a number"),
        ({"user_growth": "4"}, "user_growth must be a number"),
        ({"reviewer_taste_shift": -0.5}, "reviewer_taste_shift must be a number from 0 to 10"),
        ({"reviewer_bias_shift": float("inf")}, "reviewer_bias_shift must be a number"),
        ({"reviewer_strictness": 11.0}, "reviewer_strictness must be a number from -10 to 10"),
        ({"reviewer_strictness_std": -0.1}, "reviewer_strictness_std must be a number from 0"),
        ({"reviewer_strictness_std": True}, "reviewer_strictness_std must be a number"),
    ],
)
def test_bad_values_are_refused(changes, message):
    with pytest.raises(ValueError, match="invalid SyntheticConfig: " + message):
        SyntheticConfig(**changes)


def test_the_command_line_flag():
    parser = argparse.ArgumentParser()
    add_generation_options(parser)
    assert "--timeline" in parser.format_help()
    small = ["--videos", "200", "--users", "20", "--pseudo-users", "40"]
    plain = config_from_args(parser.parse_args(small))
    assert plain == replace(SyntheticConfig(), videos=200, users=20, pseudo_users=40)
    flagged = config_from_args(parser.parse_args([*small, "--timeline"]))
    assert flagged == plain.with_timeline()
    with pytest.raises(UserError, match="videos must be at least 10"):
        config_from_args(parser.parse_args(["--videos", "5", "--timeline"]))
