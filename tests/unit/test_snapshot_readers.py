"""The workers' reading of a snapshot: a Parquet record batch at a time, by the one parser, with
the side inputs built from partial results. Whatever the batches, each must give exactly what
the driver-side reading of the whole snapshot gives (the transform's and the embedding
writer's outputs rest on it; their integration tests compare the outputs themselves)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from swiperec.data.synthetic import SyntheticConfig, generate
from swiperec.embeddings.writer import DecisionsByShard, user_chunk, user_shard
from swiperec.features.config import FeatureConfig
from swiperec.features.events import (
    catalogue_from_table,
    events_from_tables,
    parse_events,
    tables_from_synthetic,
)
from swiperec.features.examples import (
    NegativeSampler,
    boundaries_from_times,
    split_boundaries,
    train_event_counts,
)
from swiperec.features.video_evidence import VideoSwipeCounts, vote_changes

DATA = SyntheticConfig(videos=300, users=40, pseudo_users=30, decisions_per_user=30,
                       reviews_per_pseudo_user=10, seed=3)  # fmt: skip


def _batches(table: pa.Table, rows: int) -> list[pa.Table]:
    return [table.slice(start, rows) for start in range(0, table.num_rows, rows)]


def _tables():
    videos, decisions, reviews = tables_from_synthetic(generate(DATA))
    # A few rows the parser must reject, wherever they fall.
    bad = decisions.slice(0, 3).set_column(
        2, "video_id", pa.array([10**9, 10**9 + 1, 10**9 + 2], pa.int64())
    )
    return videos, pa.concat_tables([decisions, bad]), reviews


def test_batch_by_batch_side_inputs_equal_the_whole_snapshots():
    config = FeatureConfig()
    videos, decisions, reviews = _tables()
    catalogue, whole = events_from_tables(videos, decisions, reviews, config)
    parts = [parse_events(catalogue, b, None, config) for b in _batches(decisions, 97)]
    parts += [parse_events(catalogue, None, b, config) for b in _batches(reviews, 61)]
    rejected = sum(p.stats.get("decisions_rejected_unknown_video", 0) for p in parts)
    assert rejected == whole.stats["decisions_rejected_unknown_video"] == 3
    assert sum(len(p) for p in parts) == len(whole)

    pseudo = [np.asarray(p.is_pseudo, bool) for p in parts]
    boundaries = boundaries_from_times(
        np.concatenate([p.time_us[~s] for p, s in zip(parts, pseudo, strict=True)]),
        np.concatenate([p.time_us[s] for p, s in zip(parts, pseudo, strict=True)]), config,
    )  # fmt: skip
    assert boundaries == split_boundaries(whole, config)

    counts = sum(train_event_counts(catalogue, p.video_id, p.time_us, boundaries) for p in parts)
    sampler = NegativeSampler.from_counts(catalogue, counts, config)
    reference = NegativeSampler(catalogue, whole, boundaries, config)
    np.testing.assert_array_equal(sampler.train_event_counts, reference.train_event_counts)
    rng = [np.random.default_rng(5), np.random.default_rng(5)]
    at = int(np.median(whole.time_us))
    assert (
        sampler.draw(rng[0], at, set(), 20).tolist()
        == reference.draw(rng[1], at, set(), 20).tolist()
    )

    # Swipe counts from each user's own vote changes, users and their events in any order.
    changes = []
    for _, is_pseudo, rows in reversed(list(whole.user_slices())):
        if not is_pseudo:
            backwards = np.arange(rows.start, rows.stop)[::-1]
            positions = catalogue.index_of(whole.video_id[backwards])
            users = np.zeros(len(positions), np.int64)
            times, labels = whole.time_us[backwards], whole.label[backwards]
            changes.append(vote_changes(positions, users, times, labels))
    joined = tuple(np.concatenate(c) for c in zip(*changes, strict=True))
    ours = VideoSwipeCounts.from_changes(len(catalogue), joined)
    theirs = VideoSwipeCounts(catalogue, whole)
    positions = np.arange(len(catalogue))
    for t in np.quantile(whole.time_us, [0.1, 0.5, 0.9, 1.0]).astype(np.int64):
        np.testing.assert_array_equal(ours.evidence(positions, t), theirs.evidence(positions, t))


def test_user_shards_give_every_real_user_their_events_once():
    config = FeatureConfig()
    videos, decisions, reviews = _tables()
    _, whole = events_from_tables(videos, decisions, reviews, config)
    shards = 7
    reader = DecisionsByShard("unused", config, shards)
    reader.catalogue = catalogue_from_table(videos)  # what setup() reads from the snapshot
    grouped: dict[int, list] = {s: [None] for s in range(shards)}  # every shard's placeholder
    for batch in _batches(decisions, 113):
        for shard, arrays in reader.process(batch):
            grouped[shard].append(arrays)
    chunks = [user_chunk((s, parts), shards) for s, parts in grouped.items()]
    assert [name for _, name, _ in chunks] == [f"users-{s:05d}-of-00007" for s in range(shards)]

    users = {key: rest for _, _, chunk in chunks for key, *rest in chunk}
    expected = {key: rows for key, pseudo, rows in whole.user_slices() if not pseudo}
    assert sum(len(chunk) for _, _, chunk in chunks) == len(users) == len(expected)
    for key, rows in expected.items():
        got_videos, got_labels, got_times = users[key]
        np.testing.assert_array_equal(got_videos, whole.video_id[rows])
        np.testing.assert_array_equal(got_labels, whole.label[rows])
        np.testing.assert_array_equal(got_times, whole.time_us[rows])
    # A shard no user hashes to is still a chunk (the set expects every shard), with no users.
    assert user_chunk((3, [None]), shards) == ("user", "users-00003-of-00007", [])
    # The hash is blake2b's, the same in every process and run (pinned: a change would move
    # users between the shards of a set being loaded by two versions of the writer).
    assert user_shard(["a", "b", "a"], 1000).tolist() == [928, 668, 928]
