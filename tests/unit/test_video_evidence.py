"""A video's swipe evidence as of a time: real users' votes (their latest swipes) from the
swipes strictly before it, nothing else."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from swiperec.features.config import FeatureConfig
from swiperec.features.events import events_from_tables, tables_from_synthetic
from swiperec.features.video_evidence import (
    RANKING_FEATURE_NAMES,
    VIDEO_EVIDENCE_NAMES,
    VideoSwipeCounts,
    evidence,
)
from tests.unit.test_examples import SMALL, T0, _tables

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"


def test_counts_are_real_users_votes_from_the_swipes_strictly_before_the_time_asked():
    decisions = [
        (A, 2, "like", T0),
        (B, 2, "nope", T0),  # the same instant as A's like
        (A, 2, "nope", T0 + 10),  # A changes their mind: the nope replaces the like
        (B, 3, "like", T0 + 5),
        *[(B, 4, "like", T0 + 20 + k) for k in range(5)],  # one user, one vote, however often
    ]
    reviews = [("r1", 2, 5, T0 - 100), ("r1", 3, 1, T0 - 100)]  # reviews are not swipes
    catalogue, events = events_from_tables(*_tables(decisions, reviews), FeatureConfig())
    counts = VideoSwipeCounts(catalogue, events)
    two, three, four = catalogue.index_of([2, 3, 4]).tolist()

    def at(position, t):
        likes, nopes = counts.counts_before([position], t)
        return int(likes[0]), int(nopes[0])

    assert at(two, T0) == (0, 0)  # nothing at or after the instant asked
    assert at(two, T0 + 1) == (1, 1)
    assert at(two, T0 + 10) == (1, 1)
    assert at(two, T0 + 11) == (0, 2)
    assert at(three, T0 + 100) == (1, 0)
    assert at(four, T0 + 20) == (0, 0)
    assert at(four, T0 + 100) == (1, 0)  # five likes by one user: one vote
    assert at(int(catalogue.index_of([5])[0]), T0 + 100) == (0, 0)  # never swiped
    # One time per position, vectorised, and the per-example call agree.
    likes, nopes = counts.counts_before([two, three, two], [T0 + 11, T0 + 6, T0])
    assert likes.tolist() == [0, 1, 0] and nopes.tolist() == [2, 0, 0]
    assert counts.evidence_at(two, T0 + 11) == pytest.approx((math.log(1 / 3), math.log(3)))
    np.testing.assert_allclose(counts.evidence([two], T0 + 11)[0], [math.log(1 / 3), math.log(3)])
    # A side input of the Beam pipeline: the same answers after pickling.
    again = pickle.loads(pickle.dumps(counts))
    assert again.evidence_at(four, T0 + 100) == counts.evidence_at(four, T0 + 100)
    queries = [two, three, four, two], [T0 + 11, T0 + 6, T0 + 100, T0 + 1]
    for ours, theirs in zip(again.counts_before(*queries), counts.counts_before(*queries),
                            strict=True):  # fmt: skip
        assert ours.tolist() == theirs.tolist()
    np.testing.assert_array_equal(again.evidence(*queries), counts.evidence(*queries))


def test_a_catalogue_nobody_swiped_has_no_votes_at_any_time():
    counts = VideoSwipeCounts.from_changes(3, tuple(np.zeros(0, np.int64) for _ in range(4)))
    likes, nopes = counts.counts_before([0, 1, 2, 2], [T0, T0 + 1, 0, np.iinfo(np.int64).max])
    assert likes.tolist() == nopes.tolist() == [0, 0, 0, 0]
    assert counts.evidence_at(1, T0) == (0.0, 0.0)


def test_counts_match_a_brute_force_count_on_generated_data():
    catalogue, events = events_from_tables(*tables_from_synthetic(generate_small()),
                                           FeatureConfig())  # fmt: skip
    counts = VideoSwipeCounts(catalogue, events)
    real = ~events.is_pseudo
    rng = np.random.default_rng(0)
    positions = rng.integers(0, len(catalogue), 300)
    # swipes' own instants (a swipe never counts at its own time) and instants between,
    # before and after them all
    span = events.time_us.min() - 10, events.time_us.max() + 10
    times = np.concatenate([rng.choice(events.time_us[real], 200), rng.integers(*span, 100)])
    likes, nopes = counts.counts_before(positions, times)
    for p, t, likes_p, nopes_p in zip(positions, times, likes, nopes, strict=True):
        on = np.flatnonzero(
            real & (events.video_id == catalogue.video_id[p]) & (events.time_us < t)
        )
        latest = {}  # user -> label of their latest swipe on the video before t
        for i in on[np.argsort(events.time_us[on], kind="stable")]:
            latest[events.user_key[i]] = int(events.label[i])
        assert (likes_p, nopes_p) == (sum(latest.values()), len(latest) - sum(latest.values()))
    assert (likes + nopes).sum() > 0
    # the per-example call gives the same evidence
    for p, t, both in zip(positions, times, counts.evidence(positions, times), strict=True):
        assert counts.evidence_at(int(p), int(t)) == pytest.approx(tuple(both), abs=1e-12)


def generate_small():
    from swiperec.data.synthetic import generate

    return generate(SMALL)


def test_evidence_is_the_smoothed_like_log_odds_and_the_log_swipe_count():
    np.testing.assert_allclose(evidence([0, 9, 0], [0, 0, 3]),
                               [[0.0, 0.0], [math.log(10), math.log(10)],
                                [math.log(1 / 4), math.log(4)]])  # fmt: skip
    assert RANKING_FEATURE_NAMES[-2:] == VIDEO_EVIDENCE_NAMES
