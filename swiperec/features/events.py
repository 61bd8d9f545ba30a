"""A snapshot as one time-ordered list of like/nope events, for real users and pseudo-users.

Real users' swipes (`user_video_decisions`) and review ratings (`video_reviews`, read as
pseudo-users' likes and nopes) become the same kind of event, so user features and training
examples are computed by one code path. Pure numpy/pyarrow: the Beam pipeline calls this on the
snapshot's Parquet files, the tests on small hand-built tables.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from swiperec.features.config import FeatureConfig
from swiperec.snapshot import SnapshotMetadata, read_metadata, read_tables

PSEUDO_USER_PREFIX = "review:"  # user_key of a pseudo-user: the prefix + reviewer_id
_ALWAYS_RELEASED_US = np.iinfo(np.int64).min
_DAY_US = 86_400 * 1_000_000
_EVENT_SCHEMA = pa.schema(
    [("user_key", pa.string()), ("is_pseudo", pa.bool_()), ("video_id", pa.int64()),
     ("label", pa.int8()), ("time_us", pa.int64())]
)  # fmt: skip


@dataclass
class Catalogue:
    """The videos known at the snapshot's cutoff, one row per video, sorted by `video_id`.

    Arrays all have shape (N,): `video_id` int64 ascending; `external_id`, `title`,
    `description`, `maker` object arrays of str ('' for NULL); `genres`, `performers` object
    arrays of lists of str; `release_date` datetime64[D] (NaT for NULL); `duration_sec` float64
    (NaN for NULL); `released_us` int64, UTC µs from which the video counts as released: the
    release date at 00:00 UTC, else (NULL release date) the time it entered the catalogue
    (`created_at`), else the smallest int64 (always released).
    """

    video_id: np.ndarray
    external_id: np.ndarray
    title: np.ndarray
    description: np.ndarray
    genres: np.ndarray
    performers: np.ndarray
    maker: np.ndarray
    release_date: np.ndarray
    duration_sec: np.ndarray
    released_us: np.ndarray

    def __len__(self) -> int:
        return len(self.video_id)

    def index_of(self, video_ids) -> np.ndarray:
        """Row positions (int64, shaped like `video_ids`); KeyError names any unknown ids."""
        ids = np.asarray(video_ids, dtype=np.int64)
        position = np.searchsorted(self.video_id, ids)
        found = position < len(self.video_id)
        found[found] = self.video_id[position[found]] == ids[found]
        if not found.all():
            unknown = np.unique(ids[~found])
            raise KeyError(
                f"{len(unknown)} video id(s) not in the catalogue, e.g. {unknown[:5].tolist()}"
            )
        return position

    def contains(self, video_id: int) -> bool:
        """Whether `video_id` is in the catalogue."""
        position = int(np.searchsorted(self.video_id, video_id))
        return position < len(self.video_id) and self.video_id[position] == video_id


@dataclass
class Events:
    """Usable like/nope decisions, one row each, sorted by (user_key, time_us, video_id).

    Arrays of shape (E,): `user_key` object array of str (a real user's UUID string, or
    "review:" + reviewer_id for a pseudo-user), `is_pseudo` bool, `video_id` int64, `label` int8
    (1 like, 0 nope), `time_us` int64 (UTC µs since the epoch). `stats`: row counts of what was
    read, used, dropped (neutral ratings) and rejected, by reason.
    """

    user_key: np.ndarray
    is_pseudo: np.ndarray
    video_id: np.ndarray
    label: np.ndarray
    time_us: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.video_id)

    def user_slices(self):
        """Yield (user_key, is_pseudo, slice) per user, in user_key order: each user's rows."""
        keys = self.user_key
        if len(keys) == 0:
            return
        starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        ends = np.append(starts[1:], len(keys))
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            yield keys[start], bool(self.is_pseudo[start]), slice(start, end)


def load_snapshot(
    folder: str | os.PathLike, config: FeatureConfig | None = None
) -> tuple[Catalogue, Events, SnapshotMetadata]:
    """Read a snapshot folder (local or any URI pyarrow.fs knows, e.g. gs://): the catalogue,
    the events (see `events_from_tables`) and the snapshot's metadata."""
    metadata = read_metadata(folder)
    tables = read_tables(folder)
    catalogue, events = events_from_tables(
        tables["videos"], tables["decisions"], tables["reviews"], config or FeatureConfig()
    )
    return catalogue, events, metadata


def load_catalogue(folder: str | os.PathLike) -> Catalogue:
    """The catalogue of a snapshot folder alone (videos.parquet): what a worker that embeds
    videos or builds user features needs, read where it runs rather than shipped to it."""
    return catalogue_from_table(read_tables(folder, ("videos",))["videos"])


def events_from_tables(
    videos: pa.Table, decisions: pa.Table, reviews: pa.Table, config: FeatureConfig
) -> tuple[Catalogue, Events]:
    """The catalogue and the time-ordered events of tables shaped like the snapshot's files.

    `videos` needs id, external_id and title; its other columns (description, genres, maker,
    performers, release_date, duration_sec, created_at) are optional. `decisions` and
    `reviews` are parsed by `parse_events`.
    """
    catalogue = catalogue_from_table(videos)
    events = parse_events(catalogue, decisions, reviews, config)
    events.stats = {"videos": len(catalogue), **events.stats}
    return catalogue, events


def parse_events(
    catalogue: Catalogue, decisions: pa.Table | None, reviews: pa.Table | None,
    config: FeatureConfig,
) -> Events:  # fmt: skip
    """The snapshot's one event parser: decisions and reviews (whole tables, or one Parquet
    record batch of either as a Beam worker reads them; None for neither) -> `Events`.

    `decisions` has user_id (UUID string or 16 raw bytes), video_id, decision ('like'/'nope')
    and created_at; `reviews` has reviewer_id, video_id, rating (1-5) and created_at. Ratings
    >= like_rating are likes, <= nope_rating nopes; ratings in between are dropped. Every
    repeated swipe is kept: each is an answer given at its time. Rows that cannot be used
    (NULLs, a video not in `catalogue`, bad decision or rating) are rejected and counted in
    `Events.stats`, never silently lost.
    """
    stats: dict[str, int] = {}
    parts = []
    if decisions is not None:
        decision = decisions.column("decision")
        real = pa.table(
            {
                "user_key": _uuid_strings(decisions.column("user_id")),
                "is_pseudo": pa.array(np.zeros(decisions.num_rows, dtype=bool)),
                "video_id": decisions.column("video_id").cast(pa.int64()),
                "label": pc.equal(decision, "like").cast(pa.int8()),
                "time_us": _time_us(decisions.column("created_at")),
            }
        )
        bad_decision = pc.invert(pc.is_in(decision, pa.array(["like", "nope"])))
        real = _keep_usable(real, bad_decision, "bad_decision", catalogue, "decisions", stats)
        stats["decisions_used"] = real.num_rows
        parts.append(real.cast(_EVENT_SCHEMA))
    if reviews is not None:
        rating = reviews.column("rating").cast(pa.int64())
        pseudo = pa.table(
            {
                "user_key": pc.binary_join_element_wise(
                    PSEUDO_USER_PREFIX, reviews.column("reviewer_id").cast(pa.string()), ""
                ),
                "is_pseudo": pa.array(np.ones(reviews.num_rows, dtype=bool)),
                "video_id": reviews.column("video_id").cast(pa.int64()),
                "label": pc.greater_equal(rating, config.like_rating).cast(pa.int8()),
                "time_us": _time_us(reviews.column("created_at")),
                "rating": rating,
            }
        )
        bad_rating = pc.invert(pc.and_(pc.greater_equal(rating, 1), pc.less_equal(rating, 5)))
        pseudo = _keep_usable(pseudo, bad_rating, "bad_rating", catalogue, "reviews", stats)
        # Ratings strictly between the thresholds say neither like nor nope: dropped, counted.
        rating = pseudo.column("rating")
        decisive = pc.or_(
            pc.greater_equal(rating, config.like_rating), pc.less_equal(rating, config.nope_rating)
        )
        stats["reviews_neutral_dropped"] = pseudo.num_rows - int(pc.sum(decisive).as_py() or 0)
        pseudo = pseudo.filter(decisive).drop_columns(["rating"])
        stats["reviews_used"] = pseudo.num_rows
        parts.append(pseudo.cast(_EVENT_SCHEMA))

    table = pa.concat_tables(parts) if parts else _EVENT_SCHEMA.empty_table()
    table = table.sort_by([("user_key", "ascending"), ("time_us", "ascending"),
                           ("video_id", "ascending")])  # fmt: skip
    return Events(
        user_key=table.column("user_key").to_numpy(zero_copy_only=False).astype(object),
        is_pseudo=table.column("is_pseudo").to_numpy(zero_copy_only=False),
        video_id=table.column("video_id").to_numpy(),
        label=table.column("label").to_numpy(),
        time_us=table.column("time_us").to_numpy(),
        stats=stats,
    )


def catalogue_from_table(videos: pa.Table) -> Catalogue:
    """The `Catalogue` of a table shaped like videos.parquet (see `events_from_tables`)."""
    for name in ("id", "external_id", "title"):
        if name not in videos.column_names:
            raise ValueError(f"the videos table has no {name!r} column: {videos.column_names}")
    video_id = videos.column("id").cast(pa.int64())
    if video_id.null_count:
        raise ValueError(f"{video_id.null_count} video row(s) have a NULL id")
    video_id = video_id.to_numpy()
    order = np.argsort(video_id, kind="stable")
    video_id = video_id[order]
    repeated = video_id[1:][video_id[1:] == video_id[:-1]]
    if len(repeated):
        raise ValueError(f"video ids repeat in the catalogue, e.g. {repeated[:5].tolist()}")
    n = len(video_id)

    def text(name: str) -> np.ndarray:
        if name not in videos.column_names:
            return np.full(n, "", dtype=object)
        column = pc.fill_null(videos.column(name).cast(pa.string()), "")
        return column.to_numpy(zero_copy_only=False).astype(object)[order]

    def lists(name: str) -> np.ndarray:
        values = np.empty(n, dtype=object)
        if name not in videos.column_names:
            values[:] = [[] for _ in range(n)]
            return values
        rows = videos.column(name).to_pylist()
        values[:] = [[v for v in row if v] if row else [] for row in rows]
        return values[order]

    if "release_date" in videos.column_names:
        release_date = videos.column("release_date").cast(pa.date32())
        release_date = release_date.to_numpy(zero_copy_only=False)[order]
    else:
        release_date = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    if "duration_sec" in videos.column_names:
        duration = videos.column("duration_sec").cast(pa.float64()).fill_null(np.nan)
        duration = duration.to_numpy()[order]
    else:
        duration = np.full(n, np.nan)
    released_us = np.full(n, _ALWAYS_RELEASED_US, dtype=np.int64)
    if "created_at" in videos.column_names:
        created = _time_us(videos.column("created_at")).fill_null(_ALWAYS_RELEASED_US)
        released_us = created.to_numpy()[order]
    dated = ~np.isnat(release_date)
    released_us[dated] = release_date[dated].astype(np.int64) * _DAY_US
    return Catalogue(
        video_id=video_id,
        external_id=text("external_id"),
        title=text("title"),
        description=text("description"),
        genres=lists("genres"),
        performers=lists("performers"),
        maker=text("maker"),
        release_date=release_date,
        duration_sec=duration,
        released_us=released_us,
    )


def _uuid_strings(column: pa.ChunkedArray) -> pa.Array:
    """User ids as canonical UUID strings, whether stored as text or as 16 raw bytes."""
    if isinstance(column.type, pa.ExtensionType):
        column = column.cast(column.type.storage_type)
    if pa.types.is_fixed_size_binary(column.type) or pa.types.is_binary(column.type):
        return pa.array(
            [None if b is None else str(uuid.UUID(bytes=b)) for b in column.to_pylist()],
            pa.string(),
        )
    return column.cast(pa.string())


def _time_us(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps as int64 UTC µs; naive timestamps are read as UTC, finer units truncated."""
    if not pa.types.is_timestamp(column.type):
        raise ValueError(f"expected a timestamp column, got {column.type}")
    return pc.cast(column, pa.timestamp("us", tz="UTC"), safe=False).cast(pa.int64())


def _keep_usable(
    table: pa.Table,
    invalid: pa.ChunkedArray,
    invalid_reason: str,
    catalogue: Catalogue,
    kind: str,
    stats: dict[str, int],
) -> pa.Table:
    """Rows of `table` that can be used; each other row is counted under its first reason."""
    stats[f"{kind}_read"] = table.num_rows
    video_id = table.column("video_id").fill_null(-1).to_numpy()
    position = np.minimum(np.searchsorted(catalogue.video_id, video_id), len(catalogue) - 1)
    known = (
        catalogue.video_id[position] == video_id
        if len(catalogue)
        else np.zeros(len(video_id), bool)
    )
    reasons = {
        "null_user": table.column("user_key").is_null().to_numpy(zero_copy_only=False),
        "null_time": table.column("time_us").is_null().to_numpy(zero_copy_only=False),
        invalid_reason: invalid.fill_null(True).to_numpy(zero_copy_only=False),
        "unknown_video": ~known,
    }
    usable = np.ones(table.num_rows, dtype=bool)
    for reason, rejected in reasons.items():
        stats[f"{kind}_rejected_{reason}"] = int((usable & rejected).sum())
        usable &= ~rejected
    return table.filter(pa.array(usable))


def tables_from_synthetic(dataset) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(videos, decisions, reviews) tables shaped like a snapshot's files, from a
    `swiperec.data.synthetic.SyntheticDataset`: test and benchmark input without a database."""
    from swiperec.data.synthetic import uuid_strings

    v = dataset.videos
    n = len(v["external_id"])
    release = np.asarray(v["release_date"], dtype="datetime64[D]")
    videos = pa.table(
        {
            "id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
            "external_id": pa.array(v["external_id"], pa.string()),
            "title": pa.array(v["title"], pa.string()),
            "description": pa.array(v["description"], pa.string()),
            "genres": pa.array(v["genres"], pa.list_(pa.string())),
            "maker": pa.array(v["maker"], pa.string()),
            "label": pa.array(v["label"], pa.string()),
            "series": pa.array(v["series"], pa.string()),
            "performers": pa.array(v["performers"], pa.list_(pa.string())),
            "release_date": pa.array(release, pa.date32()),
            "duration_sec": pa.array(np.asarray(v["duration_sec"], dtype=np.int32)),
            "thumbnail_url": pa.array(v["thumbnail_url"], pa.string()),
            # As the loader does: a synthetic video enters the catalogue on its release day.
            "created_at": pa.array(release.astype("datetime64[us]"), pa.timestamp("us", "UTC")),
        }
    )
    d = dataset.decisions
    user_keys = np.array(uuid_strings(dataset.user_ids), dtype=object)
    decisions = pa.table(
        {
            "id": pa.array(np.arange(1, len(d["video_id"]) + 1, dtype=np.int64)),
            "user_id": pa.array(user_keys[d["user_index"]], pa.string()),
            "video_id": pa.array(d["video_id"], pa.int64()),
            "decision": pa.array(np.where(d["like"], "like", "nope").astype(object), pa.string()),
            "created_at": pa.array(d["created_at"], pa.timestamp("us", "UTC")),
        }
    )
    r = dataset.reviews
    reviewer_ids = np.asarray(dataset.reviewer_ids, dtype=object)
    reviews = pa.table(
        {
            "reviewer_id": pa.array(reviewer_ids[r["reviewer_index"]], pa.string()),
            "video_id": pa.array(r["video_id"], pa.int64()),
            "rating": pa.array(r["rating"].astype(np.int16)),
            "created_at": pa.array(r["created_at"], pa.timestamp("us", "UTC")),
        }
    )
    return videos, decisions, reviews
