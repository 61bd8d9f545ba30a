"""A user's like/nope history and the raw user features it answers as of any later time.

Written once and shared by training (the example builder walks each user's events in time
order), the batch refresh of user embeddings and the real-time cold start: the same code makes
the features a model was trained on and the features it is served with.

Recency weighting is exponential: an event `d` days before the query time weighs
`0.5 ** (d / recency_half_life_days)`. Weights are stored "forward-scaled", as
`2 ** ((t_event - anchor) / half_life)`, so an `add` touches only the counters of its own
video, and a query multiplies by one factor; the anchor moves forward (rescaling everything
once) before the scaled values could overflow.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from itertools import chain

from swiperec.features.config import FeatureConfig, char_ngrams
from swiperec.features.events import Catalogue

DAY_US = 86_400 * 1_000_000
# Rescale once forward-scaled weights pass 2**256 (~1e77): far from float64's 1e308 limit.
_RESCALE_HALF_LIVES = 256.0

# The raw user features, in the order `features` returns them: a contract with the TFT
# preprocessing_fn (swiperec/features/preprocessing.py).
USER_FEATURE_NAMES = (
    "user_source",
    "like_count",
    "nope_count",
    "like_ratio",
    "recency_like_count",
    "recency_nope_count",
    "recency_like_ratio",
    "days_since_last_decision",
    "tenure_days",
    "has_history",
    "liked_genres",
    "liked_genre_weights",
    "noped_genres",
    "noped_genre_weights",
    "liked_makers",
    "liked_maker_weights",
    "noped_makers",
    "noped_maker_weights",
    "liked_performers",
    "liked_performer_weights",
    "noped_performers",
    "noped_performer_weights",
    "liked_title_ngrams",
    "liked_title_ngram_weights",
    "recent_liked_videos",
)

# How well one video matches the history, as of a time (`UserHistory.match`): the shares of
# the user's recency-weighted likes and nopes that went to this video's maker, genres and
# performers. Pair features, neither the user's nor the video's: the ranking stage weighs them
# (`TrainConfig.match_features`), and serving computes the same from the user's decisions
# (enhanced_two_tower_recommendations, the newest migration that defines it). In this order
# everywhere.
MATCH_FEATURE_NAMES = (
    "match_liked_maker",
    "match_noped_maker",
    "match_liked_genres",
    "match_noped_genres",
    "match_liked_performers",
    "match_noped_performers",
)


class UserHistory:
    """A user's like/nope history, updated one decision at a time, answering the raw user
    features as of a time.

    Events must be added in time order (equal times allowed). `features(at_us)` uses only the
    events added so far, so a caller that wants "strictly before t" adds the events at t after
    asking. Picklable; holds a reference to the catalogue it reads genres, makers, performers
    and titles from.
    """

    def __init__(self, catalogue: Catalogue, config: FeatureConfig, is_pseudo: bool):
        self._catalogue = catalogue
        self._config = config
        self._source = "pseudo" if is_pseudo else "real"
        self._half_life_us = config.recency_half_life_days * DAY_US
        self._counts = [0, 0]  # nopes, likes
        self._scaled = [0.0, 0.0]  # forward-scaled recency weights of nopes, likes
        self._genres: tuple[dict[str, float], dict[str, float]] = ({}, {})  # noped, liked
        self._makers: tuple[dict[str, float], dict[str, float]] = ({}, {})
        self._performers: tuple[dict[str, float], dict[str, float]] = ({}, {})
        # (names, shares) per dict, in the order noped genres, liked genres, noped makers,
        # liked makers, noped performers, liked performers; None when the dict changed since:
        # a nope leaves the liked lists alone.
        self._shares: list[tuple[list[str], list[float]] | None] = [None] * 6
        self._totals: list[float | None] = [None] * 6  # the same dicts' weight sums
        # The same dicts' `history_profile_size` largest names, kept up to date one added
        # event at a time (None: found again by sorting the whole dict, when next asked).
        self._largest: list[_Largest | None] = [None] * 6
        # Most recent first; each entry is one liked title's n-gram list.
        self._title_ngrams: deque[list[str]] = deque(maxlen=config.history_titles)
        self._title_counts: Counter[str] = Counter()  # the n-grams of `_title_ngrams`
        self._liked_videos: deque[str] = deque(maxlen=config.history_videos)
        self._title_profile: tuple[list[str], list[float]] | None = ([], [])  # None: stale
        self._first_us: int | None = None
        self._last_us: int | None = None
        self._anchor_us = 0

    def __len__(self) -> int:
        """Number of events added."""
        return self._counts[0] + self._counts[1]

    def add(self, video_id: int, label: int, time_us: int) -> None:
        """Record a decision: `label` 1 like / 0 nope on `video_id` at `time_us` (UTC µs).

        Raises KeyError for a video not in the catalogue, ValueError for a bad label or a time
        before the last added event.
        """
        position = int(self._catalogue.index_of([video_id])[0])
        self.add_at_position(position, label, time_us)

    def add_at_position(self, position: int, label: int, time_us: int) -> None:
        """`add` for a video given by its catalogue row position (saves the id lookup)."""
        if label not in (0, 1):
            raise ValueError(f"label must be 1 (like) or 0 (nope), got {label!r}")
        time_us = int(time_us)
        if self._last_us is None:
            self._first_us = self._anchor_us = time_us
        elif time_us < self._last_us:
            raise ValueError(
                f"events must be added in time order: {time_us} µs is before the last "
                f"event at {self._last_us} µs"
            )
        self._last_us = time_us
        exponent = (time_us - self._anchor_us) / self._half_life_us
        if exponent > _RESCALE_HALF_LIVES:
            self._rescale(time_us)
            exponent = 0.0
        weight = math.exp2(exponent)

        label = int(label)
        shares, totals, largest = self._shares, self._totals, self._largest
        shares[label] = shares[2 + label] = shares[4 + label] = None
        totals[label] = totals[2 + label] = totals[4 + label] = None
        self._counts[label] += 1
        self._scaled[label] += weight
        genres, top = self._genres[label], largest[label]
        for genre in self._catalogue.genres[position]:
            genres[genre] = genres.get(genre, 0.0) + weight
            if top is not None:
                top.grew(genre)
        maker = self._catalogue.maker[position]
        if maker:  # '' is a NULL maker: no maker to like or dislike
            makers, top = self._makers[label], largest[2 + label]
            makers[maker] = makers.get(maker, 0.0) + weight
            if top is not None:
                top.grew(maker)
        performers, top = self._performers[label], largest[4 + label]
        for performer in self._catalogue.performers[position]:
            performers[performer] = performers.get(performer, 0.0) + weight
            if top is not None:
                top.grew(performer)
        if label == 1:
            config = self._config
            self._title_profile = None
            if config.history_titles:
                titles, counts = self._title_ngrams, self._title_counts
                if len(titles) == titles.maxlen:  # the oldest title leaves the profile
                    for ngram in titles[-1]:
                        if counts[ngram] == 1:
                            del counts[ngram]
                        else:
                            counts[ngram] -= 1
                ngrams = char_ngrams(
                    self._catalogue.title[position], config.ngram_min, config.ngram_max
                )
                titles.appendleft(ngrams)
                counts.update(ngrams)
            self._liked_videos.appendleft(self._catalogue.external_id[position])

    def extend_at_positions(self, positions, labels, times_us) -> None:
        """`add_at_position` of each event in turn (sequences of ints, in time order), with
        the same arithmetic in the same order, so the same features to the last bit; faster
        for a whole history (the batch refresh's users): the loop keeps its lookups local,
        and only the liked titles the profile keeps are split into n-grams. Nothing is added
        when an event is bad: a label or time as `add` refuses it (ValueError), a position
        outside the catalogue (IndexError), or sequences of different lengths."""
        if not len(positions) == len(labels) == len(times_us):
            raise ValueError(
                f"{len(positions)} positions, {len(labels)} labels and {len(times_us)} times: "
                "one of each per event"
            )
        if not len(positions):
            return
        if min(positions) < 0 or max(positions) >= len(self._catalogue.title):
            raise IndexError(f"a catalogue position outside 0..{len(self._catalogue.title) - 1}")
        for label in set(labels):
            if label not in (0, 1):
                raise ValueError(f"label must be 1 (like) or 0 (nope), got {label!r}")
        times_us = [int(t) for t in times_us]
        previous = times_us[0] if self._last_us is None else self._last_us
        for time_us in times_us:
            if time_us < previous:
                raise ValueError(
                    f"events must be added in time order: {time_us} µs is before the last "
                    f"event at {previous} µs"
                )
            previous = time_us
        if self._last_us is None:
            self._first_us = self._anchor_us = times_us[0]
        catalogue = self._catalogue
        genres_of, makers_of, performers_of = (
            catalogue.genres,
            catalogue.maker,
            catalogue.performers,
        )
        genre_weights, maker_weights, performer_weights = (
            self._genres,
            self._makers,
            self._performers,
        )
        counts, half_life, exp2 = self._counts, self._half_life_us, math.exp2
        anchor, scaled = self._anchor_us, self._scaled
        liked = []
        for position, label, time_us in zip(positions, labels, times_us, strict=True):
            exponent = (time_us - anchor) / half_life
            if exponent > _RESCALE_HALF_LIVES:
                self._rescale(time_us)
                anchor, scaled, exponent = self._anchor_us, self._scaled, 0.0
            weight = exp2(exponent)
            label = int(label)
            counts[label] += 1
            scaled[label] += weight
            genres = genre_weights[label]
            for genre in genres_of[position]:
                genres[genre] = genres.get(genre, 0.0) + weight
            maker = makers_of[position]
            if maker:  # '' is a NULL maker
                makers = maker_weights[label]
                makers[maker] = makers.get(maker, 0.0) + weight
            performers = performer_weights[label]
            for performer in performers_of[position]:
                performers[performer] = performers.get(performer, 0.0) + weight
            if label == 1:
                liked.append(position)
        self._last_us = times_us[-1]
        self._shares, self._totals, self._largest = [None] * 6, [None] * 6, [None] * 6
        if liked:
            config = self._config
            self._title_profile = None
            if config.history_titles:  # the deque keeps the last `history_titles` alone
                for position in liked[-config.history_titles :]:
                    self._title_ngrams.appendleft(
                        char_ngrams(catalogue.title[position], config.ngram_min, config.ngram_max)
                    )
                self._title_counts = Counter(chain.from_iterable(self._title_ngrams))
            for position in liked[-config.history_videos :] if config.history_videos else ():
                self._liked_videos.appendleft(catalogue.external_id[position])

    def match(self, position: int) -> list[float]:
        """The `MATCH_FEATURE_NAMES` of the video at catalogue `position` against the events
        added so far: for likes and for nopes, the share of the recency weight that went to
        the video's maker, and the mean share of its genres and of its performers (0 for a
        video without any, or a user without likes / nopes). The shares are those of the
        `features` lists (of every name, before the `history_profile_size` cut), so the same
        as of any query time."""
        catalogue = self._catalogue
        maker = catalogue.maker[position]
        makers = [maker] if maker else []
        genres, performers = catalogue.genres[position], catalogue.performers[position]
        dicts = (*self._genres, *self._makers, *self._performers)  # the `_shares` order
        totals = self._totals
        matched = []
        for k, names in (
            (3, makers),
            (2, makers),
            (1, genres),
            (0, genres),
            (5, performers),
            (4, performers),
        ):  # MATCH_FEATURE_NAMES: liked, then noped, per kind
            weights = dicts[k]
            if not names or not weights:
                matched.append(0.0)
                continue
            if totals[k] is None:
                totals[k] = sum(weights.values())
            matched.append(sum(weights.get(name, 0.0) for name in names) / totals[k] / len(names))
        return matched

    def _rescale(self, time_us: int) -> None:
        """Move the anchor to `time_us`, multiplying every stored weight by the same factor."""
        factor = math.exp2(-(time_us - self._anchor_us) / self._half_life_us)
        self._anchor_us = time_us
        # Rounding may tie weights that differed, and an underflow drops names: rank afresh.
        self._shares, self._totals, self._largest = [None] * 6, [None] * 6, [None] * 6
        self._scaled = [value * factor for value in self._scaled]
        for weights in (*self._genres, *self._makers, *self._performers):
            for key, value in list(weights.items()):
                # A weight that underflows to 0 has no share left; dropping it keeps every
                # total positive even after thousands of half-lives.
                if value * factor > 0.0:
                    weights[key] = value * factor
                else:
                    del weights[key]

    def features(self, at_us: int) -> dict:
        """The raw user features as of `at_us` (UTC µs), from the events added so far.

        Returns every name in `USER_FEATURE_NAMES`: `user_source` "real"/"pseudo"; float
        counts, smoothed ratios `(likes + 1) / (likes + nopes + 2)`, recency-decayed counts
        and their smoothed ratio; `days_since_last_decision`, `tenure_days` (days, 0 with no
        history) and `has_history` (0/1); liked/noped genres, makers and performers with their
        recency-weighted shares of all the user's likes / nopes, sorted by weight descending,
        then name, the `history_profile_size` largest of each (the weights sum to 1 when a
        list holds every name); `liked_title_ngrams` / `liked_title_ngram_weights`: the
        `title_profile_size` most frequent char n-grams of the last `history_titles` liked
        titles (by count, then n-gram) and their shares of those counts;
        `recent_liked_videos`: external ids of the last `history_videos` likes, most recent
        first. Lists may be empty. Raises ValueError if `at_us` is before the last added
        event (that would leak it).
        """
        at_us = int(at_us)
        nopes, likes = self._counts
        if self._last_us is None:
            recency_nopes = recency_likes = days_since_last = tenure = 0.0
        else:
            if at_us < self._last_us:
                raise ValueError(
                    f"features asked at {at_us} µs, before the last added event at "
                    f"{self._last_us} µs: the history would include its future"
                )
            decay = math.exp2(-(at_us - self._anchor_us) / self._half_life_us)
            recency_nopes = self._scaled[0] * decay
            recency_likes = self._scaled[1] * decay
            days_since_last = (at_us - self._last_us) / DAY_US
            tenure = (at_us - self._first_us) / DAY_US
        size = self._config.history_profile_size
        for k, weights in enumerate((*self._genres, *self._makers, *self._performers)):
            if self._shares[k] is None:
                if self._largest[k] is None:
                    self._largest[k] = _Largest(weights, size)
                self._shares[k] = _shares(weights, self._largest[k].names)
        if self._title_profile is None:
            self._title_profile = _title_profile(
                self._title_counts, self._config.title_profile_size
            )
        shares = [(list(names), list(values)) for names, values in self._shares]
        (noped_genres, noped_genre_weights), (liked_genres, liked_genre_weights) = shares[:2]
        (noped_makers, noped_maker_weights), (liked_makers, liked_maker_weights) = shares[2:4]
        (noped_performers, noped_performer_weights), (liked_performers, liked_performer_weights) = (
            shares[4:]
        )
        return {
            "user_source": self._source,
            "like_count": float(likes),
            "nope_count": float(nopes),
            "like_ratio": (likes + 1.0) / (likes + nopes + 2.0),
            "recency_like_count": recency_likes,
            "recency_nope_count": recency_nopes,
            "recency_like_ratio": (recency_likes + 1.0) / (recency_likes + recency_nopes + 2.0),
            "days_since_last_decision": days_since_last,
            "tenure_days": tenure,
            "has_history": 1.0 if self._last_us is not None else 0.0,
            "liked_genres": liked_genres,
            "liked_genre_weights": liked_genre_weights,
            "noped_genres": noped_genres,
            "noped_genre_weights": noped_genre_weights,
            "liked_makers": liked_makers,
            "liked_maker_weights": liked_maker_weights,
            "noped_makers": noped_makers,
            "noped_maker_weights": noped_maker_weights,
            "liked_performers": liked_performers,
            "liked_performer_weights": liked_performer_weights,
            "noped_performers": noped_performers,
            "noped_performer_weights": noped_performer_weights,
            "liked_title_ngrams": list(self._title_profile[0]),
            "liked_title_ngram_weights": list(self._title_profile[1]),
            "recent_liked_videos": list(self._liked_videos),
        }


def _title_profile(counts: Counter[str], size: int) -> tuple[list[str], list[float]]:
    """The `size` most frequent n-grams of `counts` (the liked titles' n-grams), by count, then
    n-gram, with their shares of those n-grams' counts.

    A fixed-size profile, not the titles' n-grams themselves: 20 titles make ~800 n-grams,
    and carrying those on every training example costs gigabytes at the catalogue's size.
    """
    if size and len(counts) > size:
        # Only n-grams as frequent as the size-th largest count can be among the top.
        floor = sorted(counts.values(), reverse=True)[size - 1]
        top = sorted([ngram for ngram, count in counts.items() if count >= floor])
    else:
        top = sorted(counts)
    # By n-gram, then stably by count descending: the order `_shares` sorts names in.
    top.sort(key=counts.__getitem__, reverse=True)
    del top[size:]
    total = sum(counts[ngram] for ngram in top)
    return top, [counts[ngram] / total for ngram in top]


def _shares(weights: dict[str, float], names) -> tuple[list[str], list[float]]:
    """`names` (keys of `weights`) sorted by weight (descending, then name), and their shares
    of the whole dict's total.

    The shares need no decay factor: every stored weight carries the same one, so it cancels.
    """
    if not weights:
        return [], []
    total = sum(weights.values())
    # By name, then stably by weight descending (`reverse` keeps ties in name order): two
    # sorts with C-level keys, no (weight, name) tuple per entry.
    names = sorted(names)
    names.sort(key=weights.__getitem__, reverse=True)
    return names, [weights[name] / total for name in names]


class _Largest:
    """The `size` (0: all) names of a weight dict ranked first by weight (descending, then
    name), kept as the dict's weights grow: one added event moves a few names, so the dict is
    sorted once, not once per query (a long history's performers number in the hundreds).

    Exact while weights only grow: a name outside the set can only enter it, by beating the
    set's lowest-ranked name when its own weight grows. So the owner must call `grew` after
    every increase (and for every new name), and must discard this object (the next query
    builds a new one, sorting the dict whole) when the dict changes any other way: a
    rescale, whose rounding may tie weights and whose underflow drops names, or events added
    without `grew`, as `UserHistory.extend_at_positions` adds them.
    """

    def __init__(self, weights: dict[str, float], size: int):
        self._weights, self.size = weights, size
        ranked = sorted(weights)
        ranked.sort(key=weights.__getitem__, reverse=True)
        self.names = set(ranked[:size] if size else ranked)
        self._lowest: str | None = None  # the set's lowest-ranked name; None: not known

    def grew(self, name: str) -> None:
        """`name`'s weight has grown, or it has just been added to the dict."""
        names = self.names
        if name in names:
            if name == self._lowest:
                self._lowest = None
            return
        if not self.size or len(names) < self.size:  # the set holds every name
            names.add(name)
            self._lowest = None
            return
        weights = self._weights
        lowest = self._lowest
        if lowest is None:
            low = min(map(weights.__getitem__, names))
            lowest = self._lowest = max(n for n in names if weights[n] == low)
        weight, low = weights[name], weights[lowest]
        if weight > low or (weight == low and name < lowest):
            names.remove(lowest)
            names.add(name)
            self._lowest = None
