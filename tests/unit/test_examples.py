"""Snapshot events and per-user training examples: leakage, 1:2 ratio, sampling, determinism."""

from __future__ import annotations

import pickle
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from swiperec.data.synthetic import SyntheticConfig, generate
from swiperec.features.config import FeatureConfig, datetime_to_us
from swiperec.features.events import events_from_tables, load_snapshot, tables_from_synthetic
from swiperec.features.examples import (
    NegativeSampler,
    SplitBoundaries,
    build_user_examples,
    split_boundaries,
)
from swiperec.features.user_history import (
    DAY_US,
    MATCH_FEATURE_NAMES,
    USER_FEATURE_NAMES,
    UserHistory,
)
from swiperec.snapshot import write_tables

T0 = datetime_to_us(datetime(2026, 1, 1, tzinfo=UTC))
USER = "00000000-0000-4000-8000-000000000001"
SMALL = SyntheticConfig(
    videos=400, users=25, pseudo_users=25, decisions_per_user=40, reviews_per_pseudo_user=15
)


def _timestamps(times_us):
    return pa.array(np.asarray(times_us, dtype="datetime64[us]"), pa.timestamp("us", "UTC"))


def _tables(decisions=(), reviews=(), videos=10, late_video_day=None):
    """Videos 1..`videos` released 2025-01-01 (video `videos` on `late_video_day` after T0 if
    given); decisions (user, video, 'like'/'nope', time_us); reviews (reviewer, video, rating,
    time_us)."""
    release = np.full(videos, np.datetime64("2025-01-01"), dtype="datetime64[D]")
    if late_video_day is not None:
        release[-1] = np.datetime64(T0 // DAY_US + late_video_day, "D")
    video_table = pa.table(
        {
            "id": pa.array(np.arange(1, videos + 1, dtype=np.int64)),
            "external_id": [f"v{i}" for i in range(1, videos + 1)],
            "title": ["" if i == 1 else f"作品{i}" for i in range(1, videos + 1)],
            "genres": [[] if i == 1 else ["ドラマ"] for i in range(1, videos + 1)],
            "maker": [None if i == 1 else f"maker{i % 3}" for i in range(1, videos + 1)],
            "release_date": pa.array(release, pa.date32()),
        }
    )
    d = list(zip(*decisions, strict=True)) or [[], [], [], []]
    decision_table = pa.table(
        {
            "user_id": pa.array(d[0], pa.string()),
            "video_id": pa.array(d[1], pa.int64()),
            "decision": pa.array(d[2], pa.string()),
            "created_at": _timestamps(d[3]),
        }
    )
    r = list(zip(*reviews, strict=True)) or [[], [], [], []]
    review_table = pa.table(
        {
            "reviewer_id": pa.array(r[0], pa.string()),
            "video_id": pa.array(r[1], pa.int64()),
            "rating": pa.array(r[2], pa.int16()),
            "created_at": _timestamps(r[3]),
        }
    )
    return video_table, decision_table, review_table


def _build_all(catalogue, events, config, boundaries=None, users=None):
    """Examples per user_key, built user by user in `users` order (default: sorted)."""
    boundaries = boundaries or split_boundaries(events, config)
    sampler = NegativeSampler(catalogue, events, boundaries, config)
    slices = {key: (pseudo, s) for key, pseudo, s in events.user_slices()}
    return {
        key: build_user_examples(
            key,
            slices[key][0],
            events.video_id[slices[key][1]],
            events.label[slices[key][1]],
            events.time_us[slices[key][1]],
            catalogue,
            sampler,
            boundaries,
            config,
        )
        for key in (users or list(slices))
    }


@pytest.fixture(scope="module")
def synthetic():
    config = FeatureConfig(history_titles=5, history_videos=5)
    catalogue, events = events_from_tables(*tables_from_synthetic(generate(SMALL)), config)
    boundaries = split_boundaries(events, config)
    sampler = NegativeSampler(catalogue, events, boundaries, config)
    return catalogue, events, config, boundaries, sampler, _build_all(catalogue, events, config)


# -- events -----------------------------------------------------------------------------------


def test_events_merge_users_and_pseudo_users_and_count_what_is_dropped():
    config = FeatureConfig()
    tables = _tables(
        decisions=[
            (USER, 2, "like", T0 + 5),
            (USER, 2, "nope", T0 + 9),  # a repeated swipe: a second answer, kept
            (USER, 3, "maybe", T0 + 1),  # rejected: not a decision
            (USER, 99, "like", T0 + 2),  # rejected: unknown video
        ],
        reviews=[("r1", 4, 5, T0), ("r1", 5, 3, T0 + 1), ("r1", 6, 2, T0 + 2), ("r1", 7, 9, T0)],
    )
    catalogue, events = events_from_tables(*tables, config)
    assert events.user_key.tolist() == [USER, USER, "review:r1", "review:r1"]
    assert events.is_pseudo.tolist() == [False, False, True, True]
    assert events.video_id.tolist() == [2, 2, 4, 6]
    assert events.label.tolist() == [1, 0, 1, 0]  # rating 5 like, 2 nope, 3 dropped
    assert events.time_us.tolist() == [T0 + 5, T0 + 9, T0, T0 + 2]
    stats = events.stats
    assert stats["decisions_rejected_bad_decision"] == 1
    assert stats["decisions_rejected_unknown_video"] == 1
    assert stats["reviews_rejected_bad_rating"] == 1
    assert stats["reviews_neutral_dropped"] == 1
    assert (stats["decisions_used"], stats["reviews_used"]) == (2, 2)
    assert catalogue.title[0] == "" and catalogue.maker[0] == "" and catalogue.genres[0] == []
    with pytest.raises(KeyError):
        catalogue.index_of([1, 42])


def test_load_snapshot_reads_the_folder(tmp_path):
    videos, decisions, reviews = _tables(decisions=[(USER, 2, "like", T0)])
    written = write_tables(
        tmp_path / "s", {"videos": videos, "decisions": decisions, "reviews": reviews}
    )
    catalogue, events, metadata = load_snapshot(tmp_path / "s")
    assert len(catalogue) == 10 and events.video_id.tolist() == [2]
    assert metadata == written and metadata.row_counts["decisions"] == 1


# -- split ------------------------------------------------------------------------------------


def test_split_boundaries_from_config_or_real_user_percentiles():
    config = FeatureConfig(val_start=datetime(2026, 2, 1), test_start=datetime(2026, 3, 1))
    _, events = events_from_tables(*_tables(decisions=[(USER, 2, "like", T0)]), config)
    assert split_boundaries(events, config) == SplitBoundaries(
        datetime_to_us(datetime(2026, 2, 1)), datetime_to_us(datetime(2026, 3, 1))
    )
    # Ten real events on days 0..9 and a review far earlier: percentiles ignore the review.
    tables = _tables(
        decisions=[(USER, 2 + d % 5, "like", T0 + d * DAY_US) for d in range(10)],
        reviews=[("r1", 2, 5, T0 - 900 * DAY_US)],
    )
    _, events = events_from_tables(*tables, FeatureConfig())
    boundaries = split_boundaries(events, FeatureConfig())
    assert boundaries == SplitBoundaries(T0 + 7 * DAY_US, T0 + 8 * DAY_US)  # "lower" method


def test_split_assignment_at_the_boundaries():
    b = SplitBoundaries(T0 + 10, T0 + 20)
    times = [T0 + 9, T0 + 10, T0 + 19, T0 + 20, T0 + 21]
    assert [b.split_of(t) for t in times] == ["train", "validation", "validation", "test", "test"]
    config = FeatureConfig()
    catalogue, events = events_from_tables(
        *_tables(decisions=[(USER, 2 + i, "like", t) for i, t in enumerate(times)]), config
    )
    examples = _build_all(catalogue, events, config, boundaries=b)[USER]
    splits = ["train", "validation", "validation", "test", "test"]
    positives = [(e["example_time_us"], e["split"]) for e in examples if e["label"] == 1]
    assert positives == list(zip(times, splits, strict=True))


# -- leakage ----------------------------------------------------------------------------------


def test_no_feature_sees_an_event_at_or_after_its_example(synthetic):
    catalogue, events, config, _, _, examples = synthetic
    slices = {key: s for key, _, s in events.user_slices()}
    checked = 0
    for key, rows in examples.items():
        s = slices[key]
        video_ids, labels, times = events.video_id[s], events.label[s], events.time_us[s]
        expected = {}
        for row in rows:
            t = row["example_time_us"]
            if t not in expected:
                history = UserHistory(catalogue, config, bool(events.is_pseudo[s][0]))
                for v, label, time_us in zip(video_ids, labels, times, strict=True):
                    if time_us < t:
                        history.add(int(v), int(label), int(time_us))
                expected[t] = (history.features(t), history)
            features, history = expected[t]
            assert {name: row[name] for name in USER_FEATURE_NAMES} == features
            # The match of the example's own video, against the same history: a like's own
            # swipe is not in it.
            position = int(catalogue.index_of([row["video_id"]])[0])
            assert [row[name] for name in MATCH_FEATURE_NAMES] == history.match(position)
            checked += 1
    assert checked > 1_000


def test_events_at_the_same_instant_do_not_see_each_other():
    config = FeatureConfig()
    catalogue, events = events_from_tables(
        *_tables(
            decisions=[(USER, 2, "like", T0), (USER, 3, "like", T0), (USER, 4, "nope", T0 + 1)]
        ),
        config,
    )
    examples = _build_all(catalogue, events, config, SplitBoundaries(T0 + DAY_US, T0 + DAY_US))
    at_t0 = [e for e in examples[USER] if e["example_time_us"] == T0]
    assert {e["video_id"] for e in at_t0 if e["label"] == 1} == {2, 3}
    for e in at_t0:
        assert e["like_count"] == 0.0 and e["has_history"] == 0.0
    nope = next(e for e in examples[USER] if e["negative_source"] == "nope")
    assert nope["like_count"] == 2.0  # a microsecond later both likes are history


# -- label ratio and negatives ----------------------------------------------------------------


def test_one_positive_to_two_negatives_per_user_and_split(synthetic):
    *_, examples = synthetic
    positives = negatives = 0
    for rows in examples.values():
        per_split = Counter((e["split"], e["label"]) for e in rows)
        for split in ("train", "validation", "test"):
            p, n = per_split[(split, 1)], per_split[(split, 0)]
            assert n == 2 * p, (split, p, n)  # an integer ratio: exact, no rounding
            positives, negatives = positives + p, negatives + n
    assert positives > 300 and negatives == 2 * positives


def test_sampled_negatives_are_unseen_released_and_distinct(synthetic):
    catalogue, events, *_, examples = synthetic
    slices = {key: s for key, _, s in events.user_slices()}
    sampled_total = 0
    boundaries = synthetic[3]
    for key, rows in examples.items():
        times = events.time_us[slices[key]]
        videos = events.video_id[slices[key]]
        sampled = [e for e in rows if e["negative_source"] == "sampled"]
        ids = [e["video_id"] for e in sampled]
        for e in sampled:
            # Unseen: not decided before the end of the example's split (later is the future).
            end = {"train": boundaries.val_start_us, "validation": boundaries.test_start_us}.get(
                e["split"], np.iinfo(np.int64).max
            )
            assert e["video_id"] not in set(videos[times < end].tolist())
        assert len(set(ids)) == len(ids)
        for e in sampled:
            released = catalogue.released_us[catalogue.index_of([e["video_id"]])[0]]
            assert released <= e["example_time_us"]
            assert e["label"] == 0
        sampled_total += len(sampled)
    assert sampled_total > 50


def test_nopes_beyond_the_ratio_are_subsampled_and_missing_ones_sampled():
    config = FeatureConfig()
    # Train: 1 like, 5 nopes -> the like and 2 of the nopes. Test: 2 likes, 1 nope -> the nope
    # plus 3 sampled, spread over the likes as floor((i+1)*3/2) - floor(i*3/2) = 1, 2.
    decisions = [(USER, 2, "like", T0)] + [(USER, v, "nope", T0 + v) for v in (3, 4, 5, 6, 7)]
    decisions += [
        (USER, 8, "like", T0 + 10 * DAY_US),
        (USER, 9, "like", T0 + 11 * DAY_US),
        (USER, 10, "nope", T0 + 12 * DAY_US),
    ]
    catalogue, events = events_from_tables(*_tables(decisions, videos=20), config)
    boundaries = SplitBoundaries(T0 + 5 * DAY_US, T0 + 5 * DAY_US)
    stats = {}
    rows = _build_all(catalogue, events, config, boundaries)[USER]
    sampler = NegativeSampler(catalogue, events, boundaries, config)
    again = build_user_examples(
        USER,
        False,
        events.video_id,
        events.label,
        events.time_us,
        catalogue,
        sampler,
        boundaries,
        config,
        stats,
    )
    assert again == rows
    train = [e for e in rows if e["split"] == "train"]
    assert [e["negative_source"] for e in train].count("nope") == 2 and len(train) == 3
    test = [e for e in rows if e["split"] == "test"]
    sampled_times = [e["example_time_us"] for e in test if e["negative_source"] == "sampled"]
    assert sampled_times == [T0 + 10 * DAY_US] + [T0 + 11 * DAY_US] * 2
    assert stats["nopes_unused"] == 3 and stats["negatives_sampled"] == 3
    assert stats["sampled_shortfall"] == 0


def test_fractional_ratio_rounds_half_up():
    config = FeatureConfig(negatives_per_positive=1.5)
    catalogue, events = events_from_tables(*_tables([(USER, 2, "like", T0)]), config)
    rows = _build_all(catalogue, events, config, SplitBoundaries(T0 + 1, T0 + 1))[USER]
    assert [e["label"] for e in rows] == [1, 0, 0]  # round(1.5) = 2 negatives


def test_sampler_prefers_popular_videos_more_with_alpha_one():
    # Video 2 has 99 train-period events, videos 3..10 none; video 1 gets 500 events after the
    # validation start, which must not count (no leak from the held-out period).
    decisions = [(f"u{i}", 2, "like", T0 + i) for i in range(99)]
    decisions += [(f"w{i}", 1, "like", T0 + DAY_US + i) for i in range(500)]
    counts = {}
    for alpha in (0.0, 1.0):
        config = FeatureConfig(popularity_alpha=alpha)
        catalogue, events = events_from_tables(*_tables(decisions), config)
        sampler = NegativeSampler(
            catalogue, events, SplitBoundaries(T0 + DAY_US, T0 + DAY_US), config
        )
        p = sampler.probability(np.arange(1, 11))
        assert p.sum() == pytest.approx(1.0)
        if alpha == 1.0:  # weights (count + 1): 100 for video 2, 1 for the nine others
            assert p[1] == pytest.approx(100 / 109) and p[0] == pytest.approx(1 / 109)
        else:
            assert p == pytest.approx(np.full(10, 0.1))
        rng = np.random.default_rng(7)
        draws = [int(sampler.draw(rng, T0, set(), 1)[0]) for _ in range(2_000)]
        counts[alpha] = draws.count(2)
    # Expected 200 draws of video 2 at alpha 0 (sd ~13) and ~1,835 at alpha 1 (sd ~12).
    assert 150 < counts[0.0] < 250 and counts[1.0] > 1_750


def test_sampler_respects_release_dates_and_returns_fewer_when_exhausted():
    config = FeatureConfig()
    catalogue, events = events_from_tables(
        *_tables([(USER, 2, "like", T0)], late_video_day=30), config
    )
    sampler = NegativeSampler(catalogue, events, SplitBoundaries(T0 + 1, T0 + 1), config)
    rng = np.random.default_rng(0)
    early = sampler.draw(rng, T0, set(), 9)
    assert sorted(early.tolist()) == list(range(1, 10))  # video 10 is not out yet
    assert sampler.draw(rng, T0 + 30 * DAY_US, set(range(1, 10)), 3).tolist() == [10]
    assert sampler.draw(rng, T0, set(range(1, 10)), 3).tolist() == []
    assert sampler.draw(rng, T0 - 900 * DAY_US, set(), 3).tolist() == []  # nothing released


# -- determinism ------------------------------------------------------------------------------


def test_same_inputs_give_identical_examples_in_any_user_or_event_order(synthetic):
    catalogue, events, config, boundaries, sampler, examples = synthetic
    users = list(examples)
    assert _build_all(catalogue, events, config, users=users[::-1]) == examples
    key, pseudo, s = next(iter(events.user_slices()))
    shuffled = np.random.default_rng(3).permutation(s.stop - s.start) + s.start
    rows = build_user_examples(
        key,
        pseudo,
        events.video_id[shuffled],
        events.label[shuffled],
        events.time_us[shuffled],
        catalogue,
        sampler,
        boundaries,
        config,
    )
    assert rows == examples[key]


# -- robustness and example fields ------------------------------------------------------------


def test_example_fields(synthetic):
    *_, sampler, examples = synthetic
    row = next(e for rows in examples.values() for e in rows if e["negative_source"] == "sampled")
    example_fields = (
        "user_key",
        "video_id",
        "label",
        "weight",
        "example_time_us",
        "split",
        "negative_source",
        "sampling_probability",
    )
    assert set(row) == {*USER_FEATURE_NAMES, *MATCH_FEATURE_NAMES, *example_fields}
    assert row["sampling_probability"] == sampler.probability([row["video_id"]])[0]
    sources = Counter(e["negative_source"] for rows in examples.values() for e in rows)
    assert set(sources) == {"", "nope", "sampled"}


def test_video_without_title_genres_or_maker_and_a_lone_nope():
    config = FeatureConfig()
    other = "00000000-0000-4000-8000-000000000002"
    catalogue, events = events_from_tables(
        *_tables([(USER, 1, "like", T0), (USER, 2, "like", T0 + DAY_US), (other, 3, "nope", T0)]),
        config,
    )
    examples = _build_all(
        catalogue, events, config, SplitBoundaries(T0 + 9 * DAY_US, T0 + 9 * DAY_US)
    )
    assert examples[other] == []  # a single nope: nothing to contrast it with
    second_like = next(e for e in examples[USER] if e["example_time_us"] == T0 + DAY_US)
    assert second_like["like_count"] == 1.0 and second_like["liked_title_ngrams"] == []
    assert second_like["liked_genres"] == [] and second_like["recent_liked_videos"] == ["v1"]


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_pseudo_user_weight(weight):
    config = FeatureConfig(pseudo_user_weight=weight)
    tables = _tables([(USER, 2, "like", T0)], reviews=[("r1", 3, 5, T0), ("r1", 4, 1, T0 + 1)])
    catalogue, events = events_from_tables(*tables, config)
    examples = _build_all(catalogue, events, config, SplitBoundaries(T0 + DAY_US, T0 + DAY_US))
    assert {e["weight"] for e in examples[USER]} == {1.0}
    pseudo = examples["review:r1"]
    if weight == 0.0:
        assert pseudo == []
    else:
        assert len(pseudo) == 3 and {e["weight"] for e in pseudo} == {0.5}
        assert {e["user_source"] for e in pseudo} == {"pseudo"}


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_real_user_weight(weight):
    """Real users' examples take real_user_weight; 0 leaves them out (and counts their events),
    while pseudo-users' examples, the split and the negatives' popularity stay as they were."""
    decisions = [(USER, 2, "like", T0), (USER, 3, "nope", T0 + 1), (USER, 5, "like", T0 + 2)]
    tables = _tables(decisions, reviews=[("r1", 3, 5, T0), ("r1", 4, 1, T0 + 1)])
    config = FeatureConfig(real_user_weight=weight)
    catalogue, events = events_from_tables(*tables, config)
    boundaries = SplitBoundaries(T0 + DAY_US, T0 + DAY_US)
    examples = _build_all(catalogue, events, config, boundaries)
    default = _build_all(catalogue, events, FeatureConfig(), boundaries)
    assert examples["review:r1"] == default["review:r1"]
    if weight == 0.0:
        assert examples[USER] == []
        stats = {}
        sampler = NegativeSampler(catalogue, events, boundaries, config)
        assert np.array_equal(
            sampler.train_event_counts,
            NegativeSampler(catalogue, events, boundaries, FeatureConfig()).train_event_counts,
        )
        assert build_user_examples(USER, False, [2, 3, 5], [1, 0, 1], [T0, T0 + 1, T0 + 2],
                                   catalogue, sampler, boundaries, config, stats) == []  # fmt: skip
        assert stats["real_events_skipped"] == 3 and stats["positives"] == 0
    else:
        assert {e["weight"] for e in examples[USER]} == {0.5}
        strip = [{k: v for k, v in e.items() if k != "weight"} for e in examples[USER]]
        assert strip == [{k: v for k, v in e.items() if k != "weight"} for e in default[USER]]


def test_real_user_weight_default_and_validation():
    assert FeatureConfig().real_user_weight == 1.0
    assert FeatureConfig.from_dict({"real_user_weight": 0}).real_user_weight == 0
    for bad in (-0.5, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="real_user_weight"):
            FeatureConfig(real_user_weight=bad)


def test_a_user_who_decided_almost_everything_gets_fewer_sampled_negatives():
    config = FeatureConfig()
    catalogue, events = events_from_tables(*_tables([(USER, 2, "like", T0)], videos=2), config)
    boundaries = SplitBoundaries(T0 + 1, T0 + 1)
    sampler = NegativeSampler(catalogue, events, boundaries, config)
    stats = {}
    rows = build_user_examples(
        USER, False, [2], [1], [T0], catalogue, sampler, boundaries, config, stats
    )
    assert [(e["video_id"], e["negative_source"]) for e in rows] == [(2, ""), (1, "sampled")]
    assert stats["sampled_shortfall"] == 1  # only video 1 was left to sample


def test_side_inputs_pickle(synthetic):
    catalogue, events, config, boundaries, sampler, examples = synthetic
    catalogue, sampler, boundaries = pickle.loads(pickle.dumps((catalogue, sampler, boundaries)))
    key, pseudo, s = next(iter(events.user_slices()))
    rows = build_user_examples(
        key, pseudo, events.video_id[s], events.label[s], events.time_us[s],
        catalogue, sampler, boundaries, config,
    )  # fmt: skip
    assert rows == examples[key]
