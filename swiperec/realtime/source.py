"""What the towers need, read from the live database: users' decisions and the videos they name,
videos' rows. Shaped like a snapshot's tables, then read by the snapshot's own code
(`events_from_tables`, `catalogue_from_table`), so the raw features real-time embedding builds
are the ones the batch refresh builds from a snapshot of the same data.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from swiperec.features.config import FeatureConfig
from swiperec.features.events import Catalogue, catalogue_from_table, events_from_tables
from swiperec.snapshot.format import DECISIONS_SCHEMA, REVIEWS_SCHEMA, UTC_US

_VIDEO_COLUMNS = (
    ("id", pa.int64()), ("external_id", pa.string()), ("title", pa.string()),
    ("description", pa.string()), ("genres", pa.list_(pa.string())), ("maker", pa.string()),
    ("performers", pa.list_(pa.string())), ("release_date", pa.date32()),
    ("duration_sec", pa.int32()), ("created_at", UTC_US),
)  # fmt: skip
_VIDEOS = pa.schema(list(_VIDEO_COLUMNS))
_SELECT_VIDEOS = (
    "select " + ", ".join(name for name, _ in _VIDEO_COLUMNS) + " from public.videos"
    " where id = any(%s)"
)


@dataclass
class UserInputs:
    """Users' decisions, as `swiperec.embeddings.towers.embed_users` takes them.

    `users`: (user id, video ids, labels, times µs) per asked user, in the order asked (no
    decisions: empty arrays); `catalogue`: every video they decided; `state`: per user
    (decisions, highest decision id), which says whether two reads saw the same history."""

    catalogue: Catalogue
    users: list[tuple]
    state: dict[str, tuple[int, int]]


def parse_user_id(value) -> str:
    """A canonical UUID string; ValueError for anything else."""
    if not isinstance(value, str):
        raise ValueError(f"a user id is a UUID string, got {type(value).__name__}")
    return str(uuid.UUID(value))


def read_users(cur, user_ids: list[str]) -> UserInputs:
    """Every decision of `user_ids` and the videos they name, as of this statement."""
    cur.execute(
        "select id, user_id::text, video_id, decision, created_at"
        " from public.user_video_decisions where user_id = any(%s::uuid[])",
        (list(user_ids),),
    )
    rows = cur.fetchall()
    decisions = pa.table(
        {
            "id": pa.array([r[0] for r in rows], pa.int64()),
            "user_id": pa.array([r[1] for r in rows], pa.string()),
            "video_id": pa.array([r[2] for r in rows], pa.int64()),
            "decision": pa.array([r[3] for r in rows], pa.string()),
            "created_at": pa.array([r[4] for r in rows], UTC_US),
        },
        schema=DECISIONS_SCHEMA,
    )
    videos = read_videos_table(cur, sorted({r[2] for r in rows}))
    reviews = REVIEWS_SCHEMA.empty_table()
    # The feature config matters here only for reviews (none): each version's own config builds
    # the histories later.
    catalogue, events = events_from_tables(videos, decisions, reviews, FeatureConfig())
    by_user = {
        key: (key, events.video_id[s], events.label[s], events.time_us[s])
        for key, _, s in events.user_slices()
    }
    state: dict[str, tuple[int, int]] = {key: (0, 0) for key in user_ids}
    for decision_id, user, *_ in rows:
        count, highest = state[user]
        state[user] = (count + 1, max(highest, decision_id))
    empty = np.empty(0, np.int64)
    users = [by_user.get(key, (key, empty, empty.astype(np.int8), empty)) for key in user_ids]
    return UserInputs(catalogue, users, state)


def read_videos_table(cur, video_ids: list[int]) -> pa.Table:
    """The rows of `video_ids` (those that exist) as a table shaped like videos.parquet."""
    cur.execute(_SELECT_VIDEOS, ([int(v) for v in video_ids],))
    rows = cur.fetchall()
    columns = {
        name: pa.array([r[i] for r in rows], kind) for i, (name, kind) in enumerate(_VIDEO_COLUMNS)
    }
    return pa.table(columns, schema=_VIDEOS)


def read_videos(cur, video_ids: list[int]) -> Catalogue:
    """The catalogue of `video_ids` (those that exist), sorted by id."""
    return catalogue_from_table(read_videos_table(cur, video_ids))


def clock_us(cur) -> int:
    """The server's clock (UTC µs), read after the inputs: every decision they hold is at or
    before it, since it committed before they were read."""
    cur.execute("select (extract(epoch from clock_timestamp()) * 1000000)::int8")
    return int(cur.fetchone()[0])
