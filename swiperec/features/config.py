"""The feature-transform configuration and the character n-gram tokeniser shared with TFT.

`FeatureConfig` is stored as JSON in the transform's metadata (`to_dict` / `from_dict`), so a
trained model records exactly how its examples were made. `char_ngrams` is the pure-Python twin
of the TF graph's title tokenisation: user features built here and video features built by TFT
must agree token for token.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime

_INT_FIELDS = ("like_rating", "nope_rating", "history_titles", "title_profile_size",
               "history_profile_size", "user_vocab_size",
               "history_videos", "seed",
               "title_vocab_size", "ngram_min", "ngram_max")  # fmt: skip
_FLOAT_FIELDS = ("pseudo_user_weight", "real_user_weight", "negatives_per_positive",
                 "popularity_alpha", "recency_half_life_days")  # fmt: skip
_TIME_FIELDS = ("val_start", "test_start")
# The largest vocabulary TFT's Misra-Gries analyzer (approximate_vocabulary) counts: exact, and
# so deterministic, below it.
VOCABULARY_CAPACITY = 200_000


@dataclass(frozen=True)
class FeatureConfig:
    """How decisions become user features and training examples.

    Ratings are review stars (1-5); weights and ratios are unitless; the half-life is in days.
    `val_start` / `test_start` are UTC instants (naive datetimes are read as UTC); both None
    means the split is derived from the data (80th / 90th percentile of real-user event times,
    see `swiperec.features.examples.split_boundaries`). Give both or neither.
    """

    like_rating: int = 4  # pseudo-users: rating >= this is a like
    nope_rating: int = 2  # rating <= this is a nope; ratings between are dropped
    pseudo_user_weight: float = 1.0  # example weight of pseudo-user examples; 0 leaves them out
    # Example weight of real users' examples; 0 leaves them out as examples (their swipes still
    # make their own user features, the split boundaries and the negatives' popularity).
    real_user_weight: float = 1.0
    negatives_per_positive: float = 2.0
    popularity_alpha: float = 0.5  # sampled negatives ~ (train-period count + 1) ** alpha
    recency_half_life_days: float = 30.0
    history_titles: int = 20  # last N liked titles characterise the user
    title_profile_size: int = 32  # ... through their K most frequent character n-grams
    history_videos: int = 20  # last N liked video ids
    # Liked and noped genres, makers and performers: the K with the largest shares (0: all).
    # Without a cap every example carries every performer its user ever swiped (hundreds),
    # and the examples grow with the square of a user's history.
    history_profile_size: int = 32
    seed: int = 42
    title_vocab_size: int = 1000  # the most frequent character n-grams kept (TF-IDF of the text)
    # Cap of the user-side vocabularies (genres, makers, title n-grams, videos). Above the
    # number of distinct values, the Misra-Gries analysis is exact and so deterministic;
    # 200,000 is TFT's limit for it, and the catalogue size this is built for.
    user_vocab_size: int = 200_000
    ngram_min: int = 1
    ngram_max: int = 2
    val_start: datetime | None = None  # split boundaries (UTC); None = derived from the data:
    test_start: datetime | None = None  # the 80th / 90th percentile of event times

    def __post_init__(self) -> None:
        problems = []
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{name} must be an int, got {value!r}")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"{name} must be a number, got {value!r}")
            elif not math.isfinite(value):
                problems.append(f"{name} must be finite, got {value!r}")
        for name in _TIME_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, datetime):
                problems.append(f"{name} must be a datetime or None, got {value!r}")
        if problems:  # the range checks below assume the types are right
            raise ValueError("invalid FeatureConfig: " + "; ".join(problems))

        if not 1 <= self.nope_rating < self.like_rating <= 5:
            problems.append(
                "ratings must satisfy 1 <= nope_rating < like_rating <= 5, got "
                f"nope_rating={self.nope_rating}, like_rating={self.like_rating}"
            )
        for name in ("pseudo_user_weight", "real_user_weight", "negatives_per_positive",
                     "popularity_alpha"):  # fmt: skip
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.recency_half_life_days > 0:
            problems.append(
                f"recency_half_life_days must be positive, got {self.recency_half_life_days}"
            )
        for name in ("history_titles", "title_profile_size", "history_profile_size",
                     "history_videos", "seed"):  # fmt: skip
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("title_vocab_size", "user_vocab_size"):
            value = getattr(self, name)
            if value < 1:
                problems.append(f"{name} must be at least 1, got {value}")
            elif value > VOCABULARY_CAPACITY:
                problems.append(f"{name} is at most {VOCABULARY_CAPACITY}, got {value}")
        if not 1 <= self.ngram_min <= self.ngram_max:
            problems.append(
                "n-gram widths must satisfy 1 <= ngram_min <= ngram_max, got "
                f"ngram_min={self.ngram_min}, ngram_max={self.ngram_max}"
            )
        if (self.val_start is None) != (self.test_start is None):
            problems.append(
                "give both val_start and test_start, or neither (then both come from the data)"
            )
        elif self.val_start is not None:
            val_start, test_start = _as_utc(self.val_start), _as_utc(self.test_start)
            # Frozen: normalise to aware UTC through object.__setattr__, once, here.
            object.__setattr__(self, "val_start", val_start)
            object.__setattr__(self, "test_start", test_start)
            if not val_start < test_start:
                problems.append(
                    f"val_start ({val_start.isoformat()}) must be before "
                    f"test_start ({test_start.isoformat()})"
                )
        if problems:
            raise ValueError("invalid FeatureConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """A JSON-serialisable dict; datetimes become ISO 8601 strings with a UTC offset."""
        values = asdict(self)
        for name in _TIME_FIELDS:
            if values[name] is not None:
                values[name] = values[name].isoformat()
        return values

    @classmethod
    def from_dict(cls, values: dict) -> FeatureConfig:
        """The config `to_dict` wrote; missing keys take their defaults, unknown keys fail."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown FeatureConfig keys {unknown}; expected some of {sorted(known)}"
            )
        values = dict(values)
        for name in _TIME_FIELDS:
            if isinstance(values.get(name), str):
                try:
                    values[name] = datetime.fromisoformat(values[name])
                except ValueError as error:
                    raise ValueError(f"{name}: not an ISO 8601 time: {values[name]!r}") from error
        return cls(**values)


def stored_feature_config(values: dict) -> FeatureConfig:
    """The config an artifact (a transform's metadata, a model card) recorded: `from_dict`,
    except that a config written before `history_profile_size` existed made uncapped
    profiles, so the features its model is served with stay the ones it was trained on."""
    return FeatureConfig.from_dict({"history_profile_size": 0, **values})


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def datetime_to_us(value: datetime) -> int:
    """UTC microseconds since the Unix epoch of `value` (naive datetimes are read as UTC)."""
    delta = _as_utc(value) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def char_ngrams(text: str, ngram_min: int, ngram_max: int) -> list[str]:
    """Character n-grams of `text`, exactly as the TF graph makes them.

    Mirrors `tf.strings.ngrams(tf.strings.unicode_split(text, "UTF-8"),
    ngram_width=range(ngram_min, ngram_max + 1), separator="")`: the text is split into Unicode
    code points (whitespace and punctuation are characters like any other), then every n-gram
    of width `ngram_min` in order, then every n-gram of the next width, and so on. A text
    shorter than a width gives no n-grams of that width; empty text (or None) gives [].
    "初恋の", 1, 2 -> ["初", "恋", "の", "初恋", "恋の"].
    """
    if not text:
        return []
    grams: list[str] = []
    length = len(text)  # a Python str is a sequence of code points, as unicode_split gives
    for width in range(ngram_min, min(ngram_max, length) + 1):
        if width == 1:
            grams.extend(text)
        else:
            grams.extend(text[i : i + width] for i in range(length - width + 1))
    return grams
