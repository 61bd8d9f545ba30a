"""The snapshot's file format, shared by the code that writes it, decodes it and hashes it.

The Arrow schema of each table's Parquet file (timestamps `timestamp[us, tz=UTC]`, dates
`date32`, lists `list<string>`), the format version that metadata.json and the content hash
carry, and `SnapshotError`, which every step of taking or reading a snapshot raises. It sits
apart from `swiperec.data.snapshot` so that the COPY decoders (`swiperec.data.copy_to_arrow`)
and the content hash (`swiperec.data.content_hash`) can use it without importing the writer.
"""

from __future__ import annotations

import pyarrow as pa

from swiperec.errors import SwiperecError

FORMAT_VERSION = 1
UTC_US = pa.timestamp("us", tz="UTC")


def _schema(*fields) -> pa.Schema:
    """Fields as (name, type) or (name, type, "null") for the nullable ones."""
    return pa.schema([pa.field(f[0], f[1], nullable=len(f) > 2) for f in fields])


# fmt: off
VIDEOS_SCHEMA = _schema(
    ("id", pa.int64()), ("external_id", pa.string()), ("title", pa.string()),
    ("description", pa.string(), "null"), ("genres", pa.list_(pa.string())),
    ("maker", pa.string(), "null"), ("label", pa.string(), "null"),
    ("series", pa.string(), "null"), ("performers", pa.list_(pa.string())),
    ("release_date", pa.date32(), "null"), ("duration_sec", pa.int32(), "null"),
    ("thumbnail_url", pa.string(), "null"), ("created_at", UTC_US),
)
REVIEWS_SCHEMA = _schema(
    ("reviewer_id", pa.string()), ("video_id", pa.int64()), ("rating", pa.int16()),
    ("created_at", UTC_US),
)
DECISIONS_SCHEMA = _schema(
    ("id", pa.int64()), ("user_id", pa.string()), ("video_id", pa.int64()),
    ("decision", pa.string()), ("created_at", UTC_US),
)
# fmt: on


class SnapshotError(SwiperecError):
    """A snapshot cannot be taken or read as asked; the message says what to do."""
