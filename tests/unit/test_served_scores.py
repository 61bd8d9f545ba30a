"""The evaluator serves as serving does: retrieval by cosine, the new releases' exploration, then
the ranking stage (`swiperec.evaluation.evaluate.served_scores`), with the SQL function's own
constants and the model's exploration bonus."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from swiperec.evaluation.evaluate import NEW_RELEASE, served_scores
from swiperec.model.data import EARLIER_NEW_RELEASE_BONUS

MIGRATIONS = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
DAY_US = 86_400 * 1_000_000


def test_the_exploration_constants_are_the_sql_functions():
    # the newest migration that defines the serving function's constants
    text = [t for p in sorted(MIGRATIONS.glob("*.sql"))
            if "c_new_release_pool" in (t := p.read_text())][-1]  # fmt: skip
    found = {
        name: float(re.search(rf"c_new_release_{name}\s+constant \w+ := ([0-9.]+);", text)[1])
        for name in ("days", "pool", "candidates")
    }
    assert found == {k: float(v) for k, v in NEW_RELEASE.items()}
    # The bonus is the video set's, a setting of the model (the constant it replaced: gone), and
    # a set without one serves with the constant of the sets written before it.
    assert "c_new_release_bonus" not in text
    assert f"coalesce(s.new_release_bonus, {EARLIER_NEW_RELEASE_BONUS})" in text


def test_served_scores_rank_the_nearest_and_the_nearest_new_releases():
    # Five videos on a circle around the user (cosines 0.9 .. -0.3), video 1 decided already.
    cosines = np.array([0.95, 0.9, 0.6, 0.1, -0.3])
    angles = np.arccos(cosines)
    videos = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    start = np.datetime64("2026-10-01T00:00:00", "us").astype(np.int64)
    data = SimpleNamespace(
        video_embeddings=videos,
        user_embeddings=np.array([[1.0, 0.0]]),
        excluded=[np.array([0])],
        test_start="2026-10-01T00:00:00Z",
        # video 4 released 10 days before the start (new), video 5 a year before
        released_us=np.array(
            [start - 900 * DAY_US] * 3 + [start - 10 * DAY_US, start - 365 * DAY_US]
        ),
        video_rank_scale=np.array([2.0, 2.0, 2.0, 2.0, 2.0]),
        video_rank_bias=np.array([0.0, 0.0, 1.0, 0.0, 5.0]),
        ranked=True,
        served_weights=None,
        new_release_bonus=1.5,
    )
    scores = served_scores(data, 0, candidates=2)
    # Retrieved: the 2 nearest not decided (videos 2, 3) and the nearest new release (4);
    # video 1 is decided and video 5, whatever its bias, neither near nor new.
    assert np.isneginf(scores[[0, 4]]).all()
    np.testing.assert_allclose(scores[1:4], [1.8, 2.2, 0.2 + 1.5])
    # The bonus is the model's: without one the new release ranks by its terms alone.
    data.new_release_bonus = 0.0
    np.testing.assert_allclose(served_scores(data, 0, candidates=2)[3], 0.2)
    data.new_release_bonus = 1.5
    # A release date still to come is no new release.
    data.released_us[3] = start + 5 * DAY_US
    assert np.isneginf(served_scores(data, 0, candidates=2)[3])
    # A model without the ranking stage serves by cosine: no exploration, no bonus.
    data.released_us[3] = start - 10 * DAY_US
    data.ranked = False
    scores = served_scores(data, 0, candidates=2)
    assert np.isneginf(scores[[0, 3, 4]]).all()


def test_served_scores_add_the_weighted_match_of_each_candidate():
    # Three videos, all near; the user's history matches video 3's maker (liked) and video 2's
    # genres (noped). The weights reward liked makers and punish noped genres.
    start = np.datetime64("2026-10-01T00:00:00", "us").astype(np.int64)
    match = {0: [0.0] * 6, 1: [0, 0, 0, 0.5, 0, 0], 2: [0.8, 0, 0, 0, 0, 0]}
    data = SimpleNamespace(
        video_embeddings=np.array([[1.0, 0.0], [0.9, np.sqrt(0.19)], [0.8, 0.6]]),
        user_embeddings=np.array([[1.0, 0.0]]),
        excluded=[np.array([], np.int64)],
        test_start="2026-10-01T00:00:00Z",
        released_us=np.full(3, start - 900 * DAY_US),
        video_rank_scale=np.ones(3),
        video_rank_bias=np.zeros(3),
        ranked=True,
        served_weights=np.array([2.0, 0, 0, -4.0, 0, 0, 0.0, 0.0]),
        new_release_bonus=1.5,
        user_histories=[SimpleNamespace(match=lambda row: match[row])],
        # like log-odds and log swipes of each video at the test start
        video_evidence=np.array([[0.5, 3.0], [-1.0, 2.0], [0.0, 0.0]]),
    )
    scores = served_scores(data, 0, candidates=3)
    np.testing.assert_allclose(scores, [1.0, 0.9 - 2.0, 0.8 + 1.6])
    assert list(np.argsort(-scores)) == [2, 0, 1]
    # The videos' swipe evidence joins with its own weights: video 1's like log-odds lifts it.
    data.served_weights = np.array([2.0, 0, 0, -4.0, 0, 0, 3.0, 0.1])
    scores = served_scores(data, 0, candidates=3)
    np.testing.assert_allclose(scores, [1.0 + 1.5 + 0.3, 0.9 - 2.0 - 3.0 + 0.2, 0.8 + 1.6])
    assert list(np.argsort(-scores)) == [0, 2, 1]
    # Served lists weigh the swipes with the exposure prior (`served_ranking_weights`), not
    # the like/nope score's weights: with 4 more per log swipe, video 2 (2.0 against 0)
    # overtakes video 3.
    data.match_weights = data.served_weights.copy()
    data.served_weights[7] += 4.0
    scores = served_scores(data, 0, candidates=3)
    np.testing.assert_allclose(scores, [1.0 + 1.5 + 12.3, 0.9 - 2.0 - 3.0 + 8.2, 0.8 + 1.6])
    assert list(np.argsort(-scores)) == [0, 1, 2]
