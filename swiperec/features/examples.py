"""Training examples per user: likes vs nopes topped up to 1:2, a time split, no leakage.

The Beam pipeline groups events per user and calls `build_user_examples` once per user, with
the catalogue, the `NegativeSampler` and the `SplitBoundaries` as side inputs (all picklable,
all computed once from the snapshot). Every example carries the user's features as of its own
time, computed from that user's events strictly before it.

Sampled negatives: an unseen video (not decided by the user before the end of the example's
split, released by the example's time) drawn with probability proportional to
`(train-period events on it + 1) ** popularity_alpha`.
alpha = 0 is uniform (easy negatives); alpha = 1 follows popularity (hard negatives, which keep
the model from simply learning popularity); the default 0.5 sits between, as word2vec's 0.75
does. Popularity counts only events before the validation start, and a training negative may
be a video the user decides only later, so held-out periods do not leak into training through
the negatives.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from swiperec.features.config import FeatureConfig, datetime_to_us
from swiperec.features.events import Catalogue, Events
from swiperec.features.user_history import MATCH_FEATURE_NAMES, UserHistory

SPLITS = ("train", "validation", "test")
_MAX_DRAW_ROUNDS = 8  # rejection rounds before a draw gives up and returns fewer videos


@dataclass(frozen=True)
class SplitBoundaries:
    """Split instants in UTC µs: train t < val_start_us <= validation < test_start_us <= test."""

    val_start_us: int
    test_start_us: int

    def __post_init__(self) -> None:
        if not self.val_start_us <= self.test_start_us:
            raise ValueError(
                f"val_start_us ({self.val_start_us}) must not be after "
                f"test_start_us ({self.test_start_us})"
            )

    def split_index(self, times_us) -> np.ndarray:
        """Index into `SPLITS` (int64: 0 train, 1 validation, 2 test) of each time, shaped
        like `times_us`."""
        edges = np.array([self.val_start_us, self.test_start_us], dtype=np.int64)
        return np.searchsorted(edges, np.asarray(times_us, dtype=np.int64), side="right")

    def split_of(self, time_us: int) -> str:
        """ "train", "validation" or "test" for one time (UTC µs)."""
        return SPLITS[int(self.split_index(time_us))]


def split_boundaries(events: Events, config: FeatureConfig) -> SplitBoundaries:
    """The config's boundaries, else the 80th / 90th percentile of event times.

    The percentiles are taken over real users' events (all events if there are none): the
    held-out periods are for judging real users' swipes, and the boundaries must not move when
    the pseudo-user mixing weight changes. Each boundary is an event time (`method="lower"`).
    """
    real = ~np.asarray(events.is_pseudo, dtype=bool)
    return boundaries_from_times(events.time_us[real], events.time_us[~real], config)


def boundaries_from_times(real_times_us, pseudo_times_us, config: FeatureConfig) -> SplitBoundaries:
    """`split_boundaries` from the real users' and the pseudo-users' event times (UTC µs, any
    order): what the transform's workers collect from the snapshot."""
    if config.val_start is not None:
        return SplitBoundaries(datetime_to_us(config.val_start), datetime_to_us(config.test_start))
    times = np.asarray(real_times_us, dtype=np.int64)
    if len(times) == 0:
        times = np.asarray(pseudo_times_us, dtype=np.int64)
    if len(times) == 0:
        raise ValueError("no events to derive split boundaries from; set val_start and test_start")
    val_start, test_start = np.percentile(times, [80, 90], method="lower")
    return SplitBoundaries(int(val_start), int(test_start))


def train_event_counts(catalogue: Catalogue, video_ids, times_us, boundaries) -> np.ndarray:
    """(N,) int64 by catalogue position: the events before the validation start on each
    video, the negative sampler's popularity (sums over any partition of the events)."""
    train = np.asarray(times_us, dtype=np.int64) < boundaries.val_start_us
    positions = catalogue.index_of(np.asarray(video_ids, dtype=np.int64)[train])
    return np.bincount(positions, minlength=len(catalogue)).astype(np.int64)


class NegativeSampler:
    """Draws unseen videos for the 1:2 top-up; popularity from train-period events only (no leak).

    Holds (N,) arrays only (no events), so it is a cheap side input: videos sorted by release
    time and the running sum of their weights, so "released by t" is a prefix and a draw is a
    `searchsorted` of a uniform number into that prefix.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        events: Events,
        boundaries: SplitBoundaries,
        config: FeatureConfig,
    ):
        counts = train_event_counts(catalogue, events.video_id, events.time_us, boundaries)
        self._build(catalogue, counts, config)

    @classmethod
    def from_counts(
        cls, catalogue: Catalogue, counts: np.ndarray, config: FeatureConfig
    ) -> NegativeSampler:
        """The sampler of `train_event_counts` (summed over the snapshot's events)."""
        sampler = cls.__new__(cls)
        sampler._build(catalogue, np.asarray(counts, dtype=np.int64), config)
        return sampler

    def _build(self, catalogue: Catalogue, counts: np.ndarray, config: FeatureConfig) -> None:
        weights = (counts + 1.0) ** config.popularity_alpha
        self.train_event_counts = counts  # (N,) int64, by catalogue position
        self._video_id = catalogue.video_id
        self._probability = weights / weights.sum()
        order = np.argsort(catalogue.released_us, kind="stable")
        self._released_us = catalogue.released_us[order]
        self._video_by_release = catalogue.video_id[order]
        self._cumulative = np.concatenate([[0.0], np.cumsum(weights[order])])

    def probability(self, video_ids) -> np.ndarray:
        """Probability (float64, shaped like `video_ids`) of each video under the sampling
        distribution over the whole catalogue; TFRS's `candidate_sampling_probability`."""
        ids = np.asarray(video_ids, dtype=np.int64)
        position = np.searchsorted(self._video_id, ids)
        if np.any(position >= len(self._video_id)) or np.any(
            self._video_id[np.minimum(position, len(self._video_id) - 1)] != ids
        ):
            raise KeyError("video ids not in the catalogue the sampler was built from")
        return self._probability[position]

    def draw(self, rng: np.random.Generator, at_us: int, exclude: set[int], n: int) -> np.ndarray:
        """Up to `n` distinct video ids (int64) released at or before `at_us` and not in
        `exclude`, popularity-weighted. Fewer (possibly none) only when repeated rejection
        rounds cannot find enough, e.g. the user decided almost everything released."""
        released = int(np.searchsorted(self._released_us, at_us, side="right"))
        if n <= 0 or released == 0:
            return np.empty(0, dtype=np.int64)
        total = self._cumulative[released]
        chosen: list[int] = []
        taken: set[int] = set()
        for _ in range(_MAX_DRAW_ROUNDS):
            wanted = n - len(chosen)
            u = rng.random(2 * wanted + 4) * total  # oversample: most draws are accepted
            slot = np.searchsorted(self._cumulative, u, side="right") - 1
            for video in self._video_by_release[np.clip(slot, 0, released - 1)].tolist():
                if video not in exclude and video not in taken:
                    taken.add(video)
                    chosen.append(video)
                    if len(chosen) == n:
                        return np.array(chosen, dtype=np.int64)
        return np.array(chosen, dtype=np.int64)


def user_rng(seed: int, user_key: str) -> np.random.Generator:
    """The user's own random stream: independent of processing order and of PYTHONHASHSEED."""
    digest = hashlib.blake2b(user_key.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")])


def build_user_examples(
    user_key: str,
    is_pseudo: bool,
    video_ids,
    labels,
    times_us,
    catalogue: Catalogue,
    sampler: NegativeSampler,
    boundaries: SplitBoundaries,
    config: FeatureConfig,
    stats: dict[str, int] | None = None,
) -> list[dict]:
    """One user's training examples, from all of that user's events in the snapshot.

    `video_ids` (E,) int, `labels` (E,) 1 like / 0 nope, `times_us` (E,) UTC µs, in any order
    (sorted here by time, then video id). Each like is a positive. Per split, negatives number
    exactly round-half-up(negatives_per_positive × likes in the split): a seeded random subset
    of the split's nopes if there are more, else all of them plus sampled unseen videos, spread
    evenly over the split's likes, each taking its like's time and features (fewer only if the
    sampler runs out of unseen videos). A user with no likes in a split contributes nothing
    to it; pseudo-users contribute nothing when `pseudo_user_weight` is 0, real users nothing
    when `real_user_weight` is 0.

    Each example is a dict: the raw user features of `UserHistory.features(t)` from the
    user's events strictly before t (events at the same instant never see each other), the
    example's video's `MATCH_FEATURE_NAMES` against the same history, plus user_key,
    video_id, label (1/0), weight (real_user_weight, or pseudo_user_weight for pseudo-users),
    example_time_us, split, negative_source ("" / "nope" / "sampled") and
    sampling_probability. Examples at one time share their feature lists: treat as read-only.
    Counts (positives, negatives by source, unused nopes, sampling shortfall) are added to
    `stats` when given.
    """
    counts = {"positives": 0, "negatives_nope": 0, "negatives_sampled": 0, "nopes_unused": 0,
              "sampled_shortfall": 0, "pseudo_events_skipped": 0}  # fmt: skip
    video_ids = np.asarray(video_ids, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    times_us = np.asarray(times_us, dtype=np.int64)
    if not len(video_ids) == len(labels) == len(times_us):
        raise ValueError(
            f"video_ids, labels and times_us differ in length: "
            f"{len(video_ids)}, {len(labels)}, {len(times_us)}"
        )
    if np.any((labels != 0) & (labels != 1)):
        raise ValueError(f"labels must be 0 or 1, got {np.unique(labels).tolist()}")
    if is_pseudo and config.pseudo_user_weight == 0:
        counts["pseudo_events_skipped"] = len(video_ids)
        _merge(stats, counts)
        return []
    if not is_pseudo and config.real_user_weight == 0:
        counts["real_events_skipped"] = len(video_ids)
        _merge(stats, counts)
        return []
    order = np.lexsort((labels, video_ids, times_us))
    video_ids, labels, times_us = video_ids[order], labels[order], times_us[order]
    positions = catalogue.index_of(video_ids)
    split = boundaries.split_index(times_us)
    rng = user_rng(config.seed, user_key)

    # Which events become examples, and how many sampled negatives each like carries.
    kept = np.zeros(len(labels), dtype=bool)
    sampled_per_like = np.zeros(len(labels), dtype=np.int64)
    for s in range(len(SPLITS)):
        likes = np.flatnonzero((split == s) & (labels == 1))
        nopes = np.flatnonzero((split == s) & (labels == 0))
        if len(likes) == 0:
            counts["nopes_unused"] += len(nopes)
            continue
        target = math.floor(config.negatives_per_positive * len(likes) + 0.5)
        kept[likes] = True
        if len(nopes) >= target:
            chosen = np.sort(rng.choice(len(nopes), size=target, replace=False))
            kept[nopes[chosen]] = True
            counts["nopes_unused"] += len(nopes) - target
        else:
            kept[nopes] = True
            missing = target - len(nopes)
            # Like i of P gets floor((i+1)m/P) - floor(im/P): m spread as evenly as possible.
            edges = np.arange(len(likes) + 1) * missing // len(likes)
            sampled_per_like[likes] = np.diff(edges)

    # Walk time in order: ask the history at t, then add the events at t.
    history = UserHistory(catalogue, config, is_pseudo)
    # Unseen per split: decided before the split's end is excluded; what the user decides
    # after it is the future, and excluding it would leak held-out periods into training.
    split_ends = (boundaries.val_start_us, boundaries.test_start_us, np.iinfo(np.int64).max)
    decided = [set(video_ids[times_us < end].tolist()) for end in split_ends]
    weight = float(config.pseudo_user_weight if is_pseudo else config.real_user_weight)
    examples: list[dict] = []
    starts = np.flatnonzero(np.concatenate([[True], times_us[1:] != times_us[:-1]])).tolist()
    ends = [*starts[1:], len(times_us)]
    kept_list, labels_list = kept.tolist(), labels.tolist()
    for start, end in zip(starts, ends, strict=True):
        t = int(times_us[start])
        if any(kept_list[start:end]):
            features = history.features(t)
            split_name = SPLITS[int(split[start])]

            def example(video_id: int, position: int, label: int, source: str, t=t,
                        f=features, s=split_name):  # fmt: skip
                row = dict(f)
                row.update(zip(MATCH_FEATURE_NAMES, history.match(position), strict=True))
                row.update(user_key=user_key, video_id=video_id, label=label, weight=weight,
                           example_time_us=t, split=s, negative_source=source)  # fmt: skip
                return row

            for k in range(start, end):
                if not kept_list[k]:
                    continue
                if labels_list[k] == 1:
                    examples.append(example(int(video_ids[k]), int(positions[k]), 1, ""))
                    counts["positives"] += 1
                    wanted = int(sampled_per_like[k])
                    if wanted:
                        drawn = sampler.draw(rng, t, decided[int(split[start])], wanted).tolist()
                        for seen in decided:  # a user's sampled negatives are all distinct
                            seen.update(drawn)
                        examples.extend(
                            example(v, int(p), 0, "sampled")
                            for v, p in zip(drawn, catalogue.index_of(drawn).tolist(), strict=True)
                        )
                        counts["negatives_sampled"] += len(drawn)
                        counts["sampled_shortfall"] += wanted - len(drawn)
                else:
                    examples.append(example(int(video_ids[k]), int(positions[k]), 0, "nope"))
                    counts["negatives_nope"] += 1
        for k in range(start, end):
            history.add_at_position(int(positions[k]), labels_list[k], t)

    if examples:
        probability = sampler.probability([row["video_id"] for row in examples]).tolist()
        for row, p in zip(examples, probability, strict=True):
            row["sampling_probability"] = p
    _merge(stats, counts)
    return examples


def _merge(stats: dict[str, int] | None, counts: dict[str, int]) -> None:
    if stats is not None:
        for key, value in counts.items():
            stats[key] = stats.get(key, 0) + value
