"""Deterministic synthetic catalogue, swipes and reviews with a known ground truth.

No real data ships with swiperec; the demo, the tests and the benchmarks run on this. Videos,
users and reviewers share one latent model (genre, maker and performer vectors), likes are drawn
from `P(like) = sigmoid(a * <taste, video> + bias + b * quality + c)`, and exposure is
popularity-biased and time-ordered, so a time-based split and a popularity baseline mean
something. `GroundTruth` answers the oracle probability of any (user, video) pair: the ceiling
a trained model can be compared with. Pure numpy: no TensorFlow, no database.

The timeline option (`SyntheticConfig.with_timeline()`, `--timeline` on the command line) makes
a data set for migrating training from pseudo-users to real users: app users sign up few at
first and many later, while reviews cover the whole span; reviewers' tastes are shifted from
app users', they like more of what they review, and their ratings do not map to likes by the
naive threshold (stricter thresholds, per-reviewer harshness). See the fields `user_growth` and
`reviewer_*` of `SyntheticConfig`.

The quality-weighted option (`SyntheticConfig.with_quality_weighted()`, `--quality-weighted`)
makes a data set where a video's general appeal (its quality) weighs more than how well it
matches a person's taste: a like-rate baseline that knows no one gets much closer to the
oracle there, so a model that beats it on both data sets has learnt taste, not only appeal.
See the fields `taste_weight` and `quality_weight` of `SyntheticConfig`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from swiperec.data.synthetic_catalogue import Catalogue, make_catalogue
from swiperec.data.synthetic_truth import GroundTruth, sigmoid, uuid_strings

__all__ = [
    "QUALITY_WEIGHTED",
    "TIMELINE",
    "GroundTruth",
    "SyntheticConfig",
    "SyntheticDataset",
    "generate",
    "uuid_strings",
    "write_csv",
]

_DAY_US = 86_400 * 1_000_000
_APP_LIFETIME_DAYS = 548  # the app launched ~18 months before the data set's "now"
_NEW_RELEASE_DAYS = 60  # "new releases" shelf: videos released in the 60 days before a swipe
_TARGET_LIKE_RATE = 0.38  # c is solved so real users like ~38% of what they are shown
_TASTE_WEIGHT = 3.2  # a: oracle AUC ~0.8 on observed swipes: clear signal, realistic noise
_QUALITY_WEIGHT = 0.45  # b: quality (std 1) matters, but less than taste
_BIAS_STD = 0.6  # some users like almost everything, some almost nothing
_RATING_THRESHOLDS = (-2.0, -0.8, 0.0, 1.4)  # rating >= 4 exactly when the latent score > 0
# Mix of exposure sources: (popular overall, new releases, the person's favourite genres).
_USER_EXPOSURE_MIX = (0.5, 0.2, 0.3)
_REVIEWER_EXPOSURE_MIX = (0.45, 0.15, 0.4)  # reviewers pick what they watch a little more
_OVERSAMPLE = 1.25  # draws per wanted event, so dropping repeated pairs still leaves enough
_JOIN_GROWTH = 1.5  # reviewers' first activity (and app users' by default) grows this way

# The timeline option's values of the `SyntheticConfig` fields (`with_timeline`, `--timeline`).
TIMELINE = {
    "user_growth": 4.0,
    "reviewer_taste_shift": 0.5,
    "reviewer_bias_shift": 1.5,
    "reviewer_strictness": 0.3,
    "reviewer_strictness_std": 0.5,
}
# The quality-weighted option's values (`with_quality_weighted`, `--quality-weighted`): on the
# observed swipes the quality term's std is ~1.2 and the taste term's ~0.6 (default: 0.45 and
# 1.25). Measured on the demo's data set (8,000 videos, seed 42), AUC of likes vs nopes in the
# last tenth of swipes: the oracle's 0.81 as by default, each video's earlier like rate 0.72
# (0.59 by default), popularity 0.64 (0.54).
QUALITY_WEIGHTED = {
    "taste_weight": 1.6,
    "quality_weight": 1.2,
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes, seed and time span of a synthetic data set; dates are `YYYY-MM-DD` (UTC).

    How app users arrive and how reviewers differ from them (the defaults are the standard data
    set; `with_timeline()` sets the values of `TIMELINE`):

    - `user_growth`: app users' sign-ups over the app's ~18 months have density proportional to
      `exp(user_growth * x)`, x the fraction of the app's life gone by: 0 is uniform, the
      default 1.5 about 3x more sign-ups in the last quarter than in the first, 4.0 ~20x.
      Reviewers' first reviews always grow by 1.5 over the whole span `start`-`end`.
    - `reviewer_taste_shift`: reviewers' tastes are moved, all by the same vector, along one
      random direction of latent space (drawn from the seed), by this many times the RMS length
      of a taste vector: their likes then inform about app users' but are biased. 0: the same
      taste distribution as app users.
    - `reviewer_bias_shift`: added to every reviewer's like logit (they review what they chose
      to watch, so they like more of it); the offset `c` stays solved on app users' swipes.
    - `reviewer_strictness`: logits by which reviewers' rating thresholds sit above the naive
      ones: a reviewer would like a video (swipe like) when the latent score `logit + noise` is
      above 0 but rates it 4 or more only above `reviewer_strictness` (plus their own offset).
      Positive: harsh, a 3 can hide a like; negative: generous, a 4 can hide a nope.
    - `reviewer_strictness_std`: each reviewer's own threshold offset is drawn from
      N(0, reviewer_strictness_std) (some harsh, some generous); kept in the ground truth as
      `reviewer_rating_offset`.

    How much taste and a video's general appeal weigh (`with_quality_weighted()` sets the
    values of `QUALITY_WEIGHTED`):

    - `taste_weight`: `a` of the logit, the weight of `<taste, video>`. The default 3.2 makes
      taste the main signal (oracle AUC ~0.8 on observed swipes).
    - `quality_weight`: `b`, the weight of the video's quality (standard normal, and popular
      videos are exposed more). The default 0.45 makes it matter less than taste.
    `c` is solved for the same like rate (~38 % of what app users are shown) whatever they are.
    """

    videos: int = 32_304
    users: int = 2_000
    pseudo_users: int = 5_000
    decisions_per_user: float = 150.0
    reviews_per_pseudo_user: float = 20.0
    seed: int = 42
    start: str = "2019-01-01"
    end: str = "2026-11-01"
    latent_dim: int = 16
    user_growth: float = _JOIN_GROWTH
    reviewer_taste_shift: float = 0.0
    reviewer_bias_shift: float = 0.0
    reviewer_strictness: float = 0.0
    reviewer_strictness_std: float = 0.0
    taste_weight: float = _TASTE_WEIGHT
    quality_weight: float = _QUALITY_WEIGHT

    def with_timeline(self) -> SyntheticConfig:
        """This config with the timeline option's values (`TIMELINE`)."""
        return replace(self, **TIMELINE)

    def with_quality_weighted(self) -> SyntheticConfig:
        """This config with the quality-weighted option's values (`QUALITY_WEIGHTED`)."""
        return replace(self, **QUALITY_WEIGHTED)

    def __post_init__(self) -> None:
        problems = []
        for name, low, high in (
            ("user_growth", 0.0, 20.0),
            ("reviewer_taste_shift", 0.0, 10.0),
            ("reviewer_bias_shift", -10.0, 10.0),
            ("reviewer_strictness", -10.0, 10.0),
            ("reviewer_strictness_std", 0.0, 5.0),
            ("taste_weight", 0.0, 20.0),
            ("quality_weight", 0.0, 20.0),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not low <= value <= high
            ):
                problems.append(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
        if self.videos < 10:
            problems.append(f"videos must be at least 10, got {self.videos}")
        if self.users < 0 or self.pseudo_users < 0:
            problems.append("users and pseudo_users must not be negative")
        elif self.users == 0 and self.pseudo_users == 0:
            problems.append("at least one of users and pseudo_users must be positive")
        if not self.decisions_per_user >= 1 or not self.reviews_per_pseudo_user >= 1:
            problems.append("decisions_per_user and reviews_per_pseudo_user must be at least 1")
        if self.latent_dim < 2:
            problems.append(f"latent_dim must be at least 2, got {self.latent_dim}")
        try:
            start, end = _parse_date(self.start), _parse_date(self.end)
            if not start < end:
                problems.append(f"start ({self.start}) must be before end ({self.end})")
        except ValueError as error:
            problems.append(str(error))
        if problems:
            raise ValueError("invalid SyntheticConfig: " + "; ".join(problems))


def _parse_date(text: str) -> np.datetime64:
    try:
        value = np.datetime64(text)
    except (ValueError, TypeError):
        value = None
    if value is None or value.dtype != np.dtype("datetime64[D]"):
        raise ValueError(f"dates must look like YYYY-MM-DD, got {text!r}")
    return value


@dataclass
class SyntheticDataset:
    """A generated data set: the contracts of DESIGN section 3 plus the ground truth.

    `videos`: column -> values, row i is video id i + 1: external_id, title, description (str
    lists), genres and performers (lists of 1-3 str), maker, label (str), series (str or None),
    thumbnail_url (None), release_date (datetime64[D] array), duration_sec (int32 array, s).
    `user_ids`: (U, 16) uint8 raw UUID v4 bytes; `reviewer_ids`: P reviewer ids.
    `decisions`: user_index int32, video_id int64, like bool, created_at datetime64[us] (UTC),
    p_like float32, sorted by created_at. `reviews`: reviewer_index int32, video_id int64,
    rating int8 (1-5), created_at datetime64[us], p_like float32, sorted by created_at.
    """

    config: SyntheticConfig
    videos: dict[str, object]
    user_ids: np.ndarray
    reviewer_ids: list[str]
    decisions: dict[str, np.ndarray]
    reviews: dict[str, np.ndarray]
    ground_truth: GroundTruth


def generate(
    config: SyntheticConfig, progress: Callable[[str], None] | None = None
) -> SyntheticDataset:
    """Generate the data set `config` describes; the same config gives the same output.

    `progress(stage)` is called as each stage starts (for the CLI).
    """
    say = progress or (lambda stage: None)
    # The seventh stream serves only the reviewer_* options, so without them the data set is the
    # same as before they existed.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(7)]
    rng_catalogue, rng_users, rng_reviewers, rng_ids, rng_decisions, rng_reviews = streams[:6]
    rng_reviewer_habits = streams[6]
    start_us = int(_parse_date(config.start).astype("datetime64[us]").astype(np.int64))
    end_us = int(_parse_date(config.end).astype("datetime64[us]").astype(np.int64))

    say("catalogue")
    catalogue = make_catalogue(config.videos, config.latent_dim, start_us, end_us, rng_catalogue)

    say("people")
    user_taste, user_bias, user_genres = _make_people(config.users, catalogue, rng_users)
    reviewer_taste, reviewer_bias, reviewer_genres = _make_people(
        config.pseudo_users, catalogue, rng_reviewers
    )
    reviewer_taste, reviewer_rating_offset = _reviewer_habits(
        config, reviewer_taste, rng_reviewer_habits
    )
    user_ids = rng_ids.integers(0, 256, size=(config.users, 16), dtype=np.uint8)
    user_ids[:, 6] = (user_ids[:, 6] & 0x0F) | 0x40  # version 4
    user_ids[:, 8] = (user_ids[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    reviewer_ids = [f"r{i + 1:06d}" for i in range(config.pseudo_users)]
    truth = GroundTruth(
        video_external_ids=np.array(catalogue.videos["external_id"], dtype=str),
        video_vectors=catalogue.vectors,
        video_quality=catalogue.quality,
        user_ids=user_ids,
        user_taste=user_taste,
        user_bias=user_bias,
        reviewer_ids=np.array(reviewer_ids, dtype=str),
        reviewer_taste=reviewer_taste,
        reviewer_bias=reviewer_bias,
        a=config.taste_weight,
        b=config.quality_weight,
        c=0.0,
        rating_thresholds=np.array(_RATING_THRESHOLDS) + config.reviewer_strictness,
        reviewer_rating_offset=reviewer_rating_offset,
    )

    say("decisions")
    app_start_us = max(start_us, end_us - _APP_LIFETIME_DAYS * _DAY_US)
    user_events = _draw_events(
        _counts(config.users, config.decisions_per_user, config.videos, rng_decisions),
        _windows(config.users, app_start_us, end_us, 60.0, 1.2, rng_decisions, config.user_growth),
        user_genres,
        catalogue,
        _USER_EXPOSURE_MIX,
        rng_decisions,
    )
    reviewer_events = _draw_events(
        _counts(config.pseudo_users, config.reviews_per_pseudo_user, config.videos, rng_reviews),
        _windows(config.pseudo_users, start_us, end_us, 365.0, 1.0, rng_reviews),
        reviewer_genres,
        catalogue,
        _REVIEWER_EXPOSURE_MIX,
        rng_reviews,
    )
    if config.users:
        truth = replace(truth, c=_solve_offset(truth.logit_users(*user_events[:2])))
    else:
        truth = replace(truth, c=_solve_offset(truth.logit_reviewers(*reviewer_events[:2])))
    if config.reviewer_bias_shift:  # after c, so that c never absorbs it
        truth = replace(truth, reviewer_bias=truth.reviewer_bias + config.reviewer_bias_shift)
    person, video_id, t_us = user_events
    p_like = truth.p_like_users(person, video_id)
    decisions = {
        "user_index": person.astype(np.int32),
        "video_id": video_id,
        "like": rng_decisions.random(len(person)) < p_like,
        "created_at": t_us.astype("datetime64[us]"),
        "p_like": p_like,
    }

    say("reviews")
    person, video_id, t_us = reviewer_events
    logit = truth.logit_reviewers(person, video_id)
    # Latent ordinal score: P(score > 0) = sigmoid(logit) = p_like; with the default thresholds
    # and no reviewer offsets rating >= 4 is exactly a like.
    score = logit + rng_reviews.logistic(size=len(logit))
    thresholds = truth.rating_thresholds[None, :] + truth.reviewer_rating_offset[person][:, None]
    rating = 1 + (score[:, None] > thresholds).sum(axis=1)
    reviews = {
        "reviewer_index": person.astype(np.int32),
        "video_id": video_id,
        "rating": rating.astype(np.int8),
        "created_at": t_us.astype("datetime64[us]"),
        "p_like": sigmoid(logit).astype(np.float32),
    }
    say("done")
    return SyntheticDataset(
        config, catalogue.videos, user_ids, reviewer_ids, decisions, reviews, truth
    )


def _reviewer_habits(
    config: SyntheticConfig, taste: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Reviewers' tastes moved by `reviewer_taste_shift` and their rating threshold offsets."""
    count, d = taste.shape
    if config.reviewer_taste_shift and count:
        direction = rng.normal(size=d)
        direction /= np.linalg.norm(direction)
        rms = np.sqrt(np.mean(np.sum(taste**2, axis=1)))
        taste = taste + config.reviewer_taste_shift * rms * direction[None, :]
    offset = np.zeros(count)
    if config.reviewer_strictness_std:
        offset = rng.normal(0.0, config.reviewer_strictness_std, size=count)
    return taste, offset


def _solve_offset(logits_without_c: np.ndarray) -> float:
    """The c that makes the mean like probability over these exposures `_TARGET_LIKE_RATE`."""
    sample = logits_without_c[:: max(1, len(logits_without_c) // 200_000)]
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sigmoid(sample + mid).mean() < _TARGET_LIKE_RATE else (lo, mid)
    return round((lo + hi) / 2, 6)


def _make_people(
    count: int, catalogue: Catalogue, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Tastes (count, d), biases (count,) and favourite genres of users or reviewers.

    The favourite genres are returned as (count, 3) genre indices and (count, 3) cumulative
    weights, for drawing which genre a person browses.
    """
    n_genres, d = catalogue.genre_vectors.shape
    favourite = rng.choice(n_genres, size=(count, 3), p=catalogue.genre_popularity)
    weight = rng.dirichlet(np.ones(3), size=count) * (
        np.arange(3)[None, :] < rng.choice([1, 2, 3], size=count, p=[0.35, 0.4, 0.25])[:, None]
    )
    weight /= weight.sum(axis=1, keepdims=True)
    taste = np.einsum("pk,pkd->pd", weight, catalogue.genre_vectors[favourite])
    # A third of people follow a maker, a quarter a performer.
    fan_of_maker = (rng.random(count) < 0.33)[:, None]
    maker = rng.choice(len(catalogue.maker_popularity), size=count, p=catalogue.maker_popularity)
    taste += 0.5 * fan_of_maker * catalogue.maker_vectors[maker]
    fan_of_performer = (rng.random(count) < 0.25)[:, None]
    performer = rng.integers(0, len(catalogue.performer_vectors), size=count)
    taste += 0.5 * fan_of_performer * catalogue.performer_vectors[performer]
    taste += rng.normal(0.0, 0.4 / np.sqrt(d), size=(count, d))
    bias = rng.normal(0.0, _BIAS_STD, size=count)
    return taste, bias, (favourite, np.cumsum(weight, axis=1))


def _counts(people: int, mean: float, videos: int, rng: np.random.Generator) -> np.ndarray:
    """Events per person: lognormal (long-tailed) with the given mean, at least 1."""
    sigma = 1.0
    counts = np.rint(rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, size=people))
    return np.clip(counts, 1, max(1, videos // 2)).astype(np.int64)


def _windows(
    people: int,
    first_us: int,
    end_us: int,
    median_days: float,
    sigma: float,
    rng: np.random.Generator,
    growth: float = _JOIN_GROWTH,
) -> tuple[np.ndarray, np.ndarray]:
    """Active windows [join, leave) in µs: joins grow over time, spans are long-tailed.

    Joins have density proportional to `exp(growth * x)`, x in [0, 1) the fraction of the span.
    """
    u = rng.random(people)
    fraction = np.log1p(u * np.expm1(growth)) / growth if growth else u
    join = first_us + np.floor(fraction * (end_us - first_us)).astype(np.int64)
    join -= join % 1_000_000  # whole seconds, so event times rounded down stay inside
    span = rng.lognormal(np.log(median_days * _DAY_US), sigma, size=people)
    span = np.maximum(span, 3_600e6).astype(np.int64)  # at least an hour
    return join, np.minimum(join + span, end_us)


def _draw_events(
    counts: np.ndarray,
    windows: tuple[np.ndarray, np.ndarray],
    genres: tuple[np.ndarray, np.ndarray],
    catalogue: Catalogue,
    mix: tuple[float, float, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Who saw which video when: (person index, video id 1-based, time in µs), time-sorted.

    Each person sees up to `counts[p]` distinct videos, each released before the time it is
    seen, drawn from the popular catalogue, the new releases or a favourite genre.
    """
    join, leave = windows
    draws = np.ceil(counts * _OVERSAMPLE).astype(np.int64) + 2
    person = np.repeat(np.arange(len(counts)), draws)
    # Whole seconds: the rows read like real logs, and µs precision would add nothing.
    t_raw = join[person] + rng.random(len(person)) * (leave - join)[person]
    t_us = (t_raw // 1_000_000).astype(np.int64) * 1_000_000
    favourite, cumulative = genres
    slot = np.minimum((rng.random(len(person))[:, None] >= cumulative[person]).sum(axis=1), 2)
    genre = favourite[person, slot]
    video = catalogue.draw_exposures(t_us, genre, mix, _NEW_RELEASE_DAYS * _DAY_US, rng)

    # Each person decides a video once: keep one draw per pair, then a random subset of at
    # most counts[p] pairs per person.
    _, first = np.unique(person * catalogue.size + video, return_index=True)
    kept = first[np.lexsort((rng.random(len(first)), person[first]))]
    owner = person[kept]
    rank = np.arange(len(kept)) - np.searchsorted(owner, owner, side="left")
    kept = kept[rank < counts[owner]]
    kept = kept[np.lexsort((video[kept], person[kept], t_us[kept]))]
    return person[kept], video[kept].astype(np.int64) + 1, t_us[kept]


def write_csv(dataset: SyntheticDataset, out_dir: str | Path) -> dict[str, Path]:
    """Write the CSV import format (DESIGN section 3) and `ground_truth.npz` into `out_dir`.

    Returns the written paths keyed "videos", "decisions", "reviews", "ground_truth".
    Timestamps are ISO 8601 UTC with a `Z` suffix; lists are `|`-separated.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.csv" for name in ("videos", "decisions", "reviews")}
    videos = dataset.videos
    external_ids = videos["external_id"]
    _write_rows(
        paths["videos"],
        ["external_id", "title", "description", "genres", "maker", "performers", "release_date"],
        zip(
            external_ids,
            videos["title"],
            videos["description"],
            ("|".join(g) for g in videos["genres"]),
            videos["maker"],
            ("|".join(p) for p in videos["performers"]),
            np.datetime_as_string(videos["release_date"], unit="D").tolist(),
            strict=True,
        ),
    )
    user_keys = uuid_strings(dataset.user_ids)
    _write_rows(
        paths["decisions"],
        ["user_id", "video_external_id", "decision", "created_at"],
        _event_rows(dataset.decisions, "user_index", user_keys, external_ids, "like"),
    )
    _write_rows(
        paths["reviews"],
        ["reviewer_id", "video_external_id", "rating", "created_at"],
        _event_rows(
            dataset.reviews, "reviewer_index", dataset.reviewer_ids, external_ids, "rating"
        ),
    )
    paths["ground_truth"] = dataset.ground_truth.save(out / "ground_truth.npz")
    return paths


def _event_rows(
    events: dict[str, np.ndarray],
    person_column: str,
    person_keys: list[str],
    external_ids: list[str],
    answer_column: str,
) -> Iterator[tuple]:
    """CSV rows of decisions or reviews, converted 500k at a time to bound memory at 3M rows."""
    for s in range(0, len(events["video_id"]), 500_000):
        answer = events[answer_column][s : s + 500_000]
        yield from zip(
            (person_keys[i] for i in events[person_column][s : s + 500_000].tolist()),
            (external_ids[v - 1] for v in events["video_id"][s : s + 500_000].tolist()),
            np.where(answer, "like", "nope").tolist() if answer.dtype == bool else answer.tolist(),
            (t + "Z" for t in np.datetime_as_string(events["created_at"][s : s + 500_000], "s")),
            strict=True,
        )


def _write_rows(path: Path, header: list[str], rows: Iterable[tuple]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
