"""The synthetic catalogue: genres, makers, performers, videos with latent vectors, and exposure.

Part of the synthetic generator (`swiperec.data.synthetic`). Video rows are in release order,
so video ids grow with release date as in a real catalogue, and "released by time t" is a prefix
of the rows: exposure draws are a `searchsorted` on cumulative popularity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from swiperec.data import vocabulary as vocab

_DAY_US = 86_400 * 1_000_000


@dataclass
class Catalogue:
    """Videos and the latent model behind them.

    `videos`: the column dict of `SyntheticDataset.videos`. `vectors` (N, d) and `quality` (N,)
    enter the like logit; `popularity` (N,) > 0 weighs exposure; `release_us` (N,) int64
    ascending. Genre, maker and performer vectors (rows, d) seed users' tastes.
    """

    videos: dict[str, object]
    vectors: np.ndarray
    quality: np.ndarray
    popularity: np.ndarray
    release_us: np.ndarray
    genre_vectors: np.ndarray
    genre_popularity: np.ndarray
    genre_members: list[np.ndarray]
    maker_vectors: np.ndarray
    maker_popularity: np.ndarray
    performer_vectors: np.ndarray
    _cumulative: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cumulative = _cumsum0(self.popularity)

    @property
    def size(self) -> int:
        return len(self.quality)

    def draw_exposures(
        self,
        t_us: np.ndarray,
        genre: np.ndarray,
        mix: tuple[float, float, float],
        new_window_us: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Video rows (0-based) shown at times `t_us` (E,), each released by its time.

        With probabilities `mix` a draw is popularity-weighted over everything released, over
        the releases of the last `new_window_us`, or over the released videos of `genre` (E,).
        """
        source = rng.choice(3, size=len(t_us), p=mix)
        u = rng.random(len(t_us))
        released = np.searchsorted(self.release_us, t_us, side="right")
        first = np.zeros_like(released)
        new = source == 1
        first[new] = np.searchsorted(self.release_us, t_us[new] - new_window_us, side="right")
        first[first >= released] = 0  # no recent releases: fall back to the whole catalogue
        video = _draw_weighted(self._cumulative, first, released, u)
        for k, members in enumerate(self.genre_members):
            chosen = np.flatnonzero((source == 2) & (genre == k))
            if len(members) == 0 or len(chosen) == 0:
                continue
            in_genre = np.searchsorted(self.release_us[members], t_us[chosen], side="right")
            ok = in_genre > 0
            cumulative = _cumsum0(self.popularity[members])
            video[chosen[ok]] = members[_draw_weighted(cumulative, 0, in_genre[ok], u[chosen[ok]])]
        return video


def make_catalogue(
    n: int, d: int, start_us: int, end_us: int, rng: np.random.Generator
) -> Catalogue:
    """Draw `n` videos with `d`-dimensional latent vectors, released in [start_us, end_us)."""
    g = len(vocab.GENRES)
    genre_popularity = _zipf(g, 1.0)
    genre_vectors = rng.normal(0.0, 1 / np.sqrt(d), size=(g, d))

    # Makers: long-tailed popularity, one or two specialty genres, a style of their own.
    m = max(5, round(n / 60))
    maker_popularity = _zipf(m, 0.9)[rng.permutation(m)]
    specialty = rng.choice(g, size=(m, 2), p=genre_popularity)
    one_specialty = rng.random(m) < 0.6
    specialty[one_specialty, 1] = specialty[one_specialty, 0]
    maker_vectors = 0.6 * genre_vectors[specialty].mean(axis=1)
    maker_vectors += rng.normal(0.0, 0.8 / np.sqrt(d), size=(m, d))
    maker_names = [vocab.maker_name(c) for c in _unique_codes(m, vocab.MAKER_NAME_CAPACITY, rng)]
    label_count = rng.integers(1, 4, size=m)
    label_suffix = np.argsort(rng.random((m, len(vocab.LABEL_SUFFIXES))), axis=1)[:, :3]
    maker_labels = [
        [name + vocab.LABEL_SUFFIXES[k] for k in suffixes]
        for name, suffixes in zip(maker_names, label_suffix.tolist(), strict=True)
    ]
    production = maker_popularity**0.6  # big makers release more, but less than they sell
    maker = rng.choice(m, size=n, p=production / production.sum())

    series, episode, series_maker = _draw_series(maker, m, rng)

    # Genres: the first mostly from the maker's specialty (always for a series, whose name comes
    # from that genre); 1-3 distinct genres per video.
    primary = np.where(
        (rng.random(n) < 0.8) | (series >= 0),
        specialty[maker, np.where(series >= 0, 0, rng.integers(0, 2, size=n))],
        rng.choice(g, size=n, p=genre_popularity),
    )
    genre = np.column_stack([primary, rng.choice(g, size=(n, 2), p=genre_popularity)])
    wanted = rng.choice([1, 2, 3], size=n, p=[0.5, 0.35, 0.15])
    genre, genre_count = _distinct_slots(genre, wanted)
    genre_mean = _slot_mean(genre_vectors, genre, genre_count)

    # Performers: each has a home genre and a star power; videos cast mostly from their genres.
    p = max(10, n // 8)
    home = rng.choice(g, size=p, p=genre_popularity)
    star_power = rng.lognormal(0.0, 1.0, size=p)
    performer_vectors = 0.6 * genre_vectors[home] + rng.normal(0.0, 0.8 / np.sqrt(d), (p, d))
    performer_names = [
        vocab.person_name(c) for c in _unique_codes(p, vocab.PERSON_NAME_CAPACITY, rng)
    ]
    slot_genre = np.take_along_axis(
        genre, (rng.random((n, 3)) * genre_count[:, None]).astype(np.int64), axis=1
    )
    from_home = rng.random((n, 3)) < 0.8
    u = rng.random((n, 3))
    cast = _draw_weighted(_cumsum0(star_power), 0, p, u)
    for k in range(g):
        members = np.flatnonzero(home == k)
        chosen = from_home & (slot_genre == k)
        if len(members):
            cast[chosen] = members[
                _draw_weighted(_cumsum0(star_power[members]), 0, len(members), u[chosen])
            ]
    cast, cast_count = _distinct_slots(cast, rng.choice([1, 2, 3], size=n, p=[0.45, 0.35, 0.2]))

    vectors = 0.7 * genre_mean + 0.35 * maker_vectors[maker]
    vectors += 0.35 * _slot_mean(performer_vectors, cast, cast_count)
    vectors += rng.normal(0.0, 0.35 / np.sqrt(d), size=(n, d))
    quality = rng.normal(size=n)
    popularity = maker_popularity[maker] * np.exp(0.6 * quality) * rng.lognormal(0.0, 0.6, n)

    # Releases grow over the years; the first video opens the catalogue so nothing is empty.
    span_days = max(1, (end_us - start_us) // _DAY_US)
    growth = 1.2
    fraction = np.log1p(rng.random(n) * np.expm1(growth)) / growth
    release_day = np.sort(np.minimum((fraction * span_days).astype(np.int64), span_days - 1))
    release_day[0] = 0
    start_day = np.datetime64(start_us // _DAY_US, "D")
    duration = np.clip(rng.lognormal(np.log(3600.0), 0.4, size=n), 1200, 10800).astype(np.int32)

    stems = [
        vocab.compose_series_stem(vocab.GENRE_WORDS[vocab.GENRES[specialty[k, 0]]], r)
        for k, r in zip(
            series_maker.tolist(), rng.random((len(series_maker), 3)).tolist(), strict=True
        )
    ]
    formats = [
        vocab.SERIES_EPISODE_FORMATS[k]
        for k in rng.integers(0, len(vocab.SERIES_EPISODE_FORMATS), len(series_maker)).tolist()
    ]

    titles, descriptions, genre_lists, cast_lists, labels, series_names = [], [], [], [], [], []
    secondary_words: dict[tuple[int, ...], tuple[str, ...]] = {}
    label_pick = (rng.random(n) * label_count[maker]).astype(np.int64)
    rows = zip(
        genre.tolist(), genre_count.tolist(), cast.tolist(), cast_count.tolist(),
        maker.tolist(), label_pick.tolist(), series.tolist(), episode.tolist(),
        rng.random((n, 6)).tolist(), rng.random((n, 13)).tolist(), strict=True,
    )  # fmt: skip
    for gs, gc, cs, cc, mk, lp, sr, ep, u_title, u_text in rows:
        gs, cs = gs[:gc], cs[:cc]
        primary_words = vocab.GENRE_WORDS[vocab.GENRES[gs[0]]]
        others = tuple(gs[1:])
        if others not in secondary_words:
            secondary_words[others] = (
                sum((vocab.GENRE_WORDS[vocab.GENRES[k]] for k in others), ())
                or vocab.GENERIC_TITLE_WORDS
            )
        if sr >= 0:
            titles.append(
                vocab.compose_series_title(stems[sr], formats[sr], ep, primary_words, u_title)
            )
            series_names.append(stems[sr])
        else:
            titles.append(vocab.compose_title(primary_words, secondary_words[others], u_title))
            series_names.append(None)
        descriptions.append(
            vocab.compose_description(primary_words, secondary_words[others], u_text)
        )
        genre_lists.append([vocab.GENRES[k] for k in gs])
        cast_lists.append([performer_names[k] for k in cs])
        labels.append(maker_labels[mk][lp])

    genre_used = np.arange(3)[None, :] < genre_count[:, None]
    videos = {
        "external_id": [f"v{i + 1:07d}" for i in range(n)],
        "title": _distinct_titles(titles),
        "description": descriptions,
        "genres": genre_lists,
        "maker": [maker_names[k] for k in maker.tolist()],
        "label": labels,
        "series": series_names,
        "performers": cast_lists,
        "release_date": start_day + release_day,
        "duration_sec": duration,
        "thumbnail_url": [None] * n,
    }
    return Catalogue(
        videos=videos,
        vectors=vectors,
        quality=quality,
        popularity=popularity,
        release_us=start_us + release_day * _DAY_US,
        genre_vectors=genre_vectors,
        genre_popularity=genre_popularity,
        genre_members=[np.flatnonzero(((genre == k) & genre_used).any(axis=1)) for k in range(g)],
        maker_vectors=maker_vectors,
        maker_popularity=maker_popularity / maker_popularity.sum(),
        performer_vectors=performer_vectors,
    )


def _zipf(count: int, exponent: float) -> np.ndarray:
    """Probabilities proportional to 1 / rank**exponent, most popular first."""
    weight = 1.0 / np.arange(1, count + 1) ** exponent
    return weight / weight.sum()


def _cumsum0(weight: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(weight)])


def _draw_weighted(cumulative, lo, hi, u: np.ndarray) -> np.ndarray:
    """Indices in [lo, hi) drawn with the weights whose running sum (with a leading 0) is
    `cumulative`; `u` uniform in [0, 1), `lo`/`hi` scalars or arrays shaped like `u`."""
    x = cumulative[lo] + u * (cumulative[hi] - cumulative[lo])
    return np.clip(np.searchsorted(cumulative, x, side="right") - 1, lo, np.asarray(hi) - 1)


def _unique_codes(count: int, capacity: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct name codes: random ones below `capacity`, then numbered ones."""
    drawn = rng.choice(capacity, size=min(count, capacity), replace=False)
    return np.concatenate([drawn, np.arange(capacity, capacity + max(0, count - capacity))])


def _distinct_slots(slots: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first `wanted` of 3 slots per row, drop repeats, move kept slots to the front.

    Returns (n, 3) slots (the trailing unused ones hold arbitrary values) and (n,) counts >= 1.
    """
    used = np.arange(3)[None, :] < wanted[:, None]
    used[:, 1] &= slots[:, 1] != slots[:, 0]
    used[:, 2] &= (slots[:, 2] != slots[:, 0]) & (slots[:, 2] != slots[:, 1])
    order = np.argsort(~used, axis=1, kind="stable")
    return np.take_along_axis(slots, order, axis=1), used.sum(axis=1)


def _slot_mean(vectors: np.ndarray, slots: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Mean of `vectors[slots[i, :count[i]]]` per row: (n, d)."""
    used = (np.arange(3)[None, :] < count[:, None])[:, :, None]
    return (vectors[slots] * used).sum(axis=1) / count[:, None]


def _draw_series(
    maker: np.ndarray, makers: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """~30% of videos join one of their maker's series.

    Returns per video the series index (-1 for none) and the 1-based episode number in release
    order, and per series its maker.
    """
    n = len(maker)
    per_maker = np.maximum(1, np.bincount(maker, minlength=makers) // 25)
    slot = (rng.random(n) * per_maker[maker]).astype(np.int64)
    member = np.flatnonzero(rng.random(n) < 0.3)
    keys, series_of_member = np.unique(maker[member] * n + slot[member], return_inverse=True)
    # Rows are in release order, so a stable sort by series numbers episodes chronologically.
    order = np.argsort(series_of_member, kind="stable")
    grouped = series_of_member[order]
    rank = np.empty(len(member), dtype=np.int64)
    rank[order] = np.arange(len(member)) - np.searchsorted(grouped, grouped, side="left")
    series = np.full(n, -1, dtype=np.int64)
    series[member] = series_of_member
    episode = np.zeros(n, dtype=np.int64)
    episode[member] = rank + 1
    return series, episode, keys // n


def _distinct_titles(titles: list[str]) -> list[str]:
    """Titles made distinct by numbering repeats: 「恋の放課後」, 「恋の放課後（2）」, ..."""
    last_number: dict[str, int] = {}
    distinct = []
    for title in titles:
        if title in last_number:
            k = last_number[title] + 1
            while f"{title}（{k}）" in last_number:
                k += 1
            last_number[title] = k
            title = f"{title}（{k}）"
        last_number[title] = 1
        distinct.append(title)
    return distinct
