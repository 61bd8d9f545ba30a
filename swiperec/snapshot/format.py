"""The snapshot's format, shared by the code that writes it, reads it, decodes and hashes it.

A snapshot folder (a local path or any URI `pyarrow.fs` knows, e.g. gs://) holds
`videos.parquet`, `reviews.parquet`, `decisions.parquet` and, written last, `metadata.json`
(`SnapshotMetadata`). Here: the Arrow schema of each table's Parquet file (timestamps
`timestamp[us, tz=UTC]`, dates `date32`, lists `list<string>`), the format version that
metadata.json and the content hash carry, the typed metadata, the one resolver of folders to
filesystems, and `SnapshotError`, which every step of taking or reading a snapshot raises.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from swiperec.errors import SwiperecError
from swiperec.version import __version__

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
TABLE_NAMES = ("videos", "reviews", "decisions")
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


class SnapshotExistsError(SnapshotError):
    """The target folder already holds a complete snapshot and `overwrite` was not given."""


class IncompleteSnapshotError(SnapshotError):
    """A folder without metadata.json: not a snapshot, or one that did not finish."""


@dataclass(frozen=True)
class SnapshotMetadata:
    """A snapshot's metadata.json. `uri`: the folder (not stored); times are aware, UTC.

    `row_counts[table]`; `time_ranges[table]`: [first, last] created_at of decisions and reviews
    (None when empty); `files[table]`: {"file": name, "sha256": hex, "bytes": size};
    `videos_known_by_reference`: videos in only because a decision or review refers to them.
    """

    uri: str
    cutoff: datetime
    taken_at: datetime
    server_version: str
    row_counts: dict[str, int]
    time_ranges: dict[str, list[datetime] | None]
    files: dict[str, dict]
    content_hash: str
    videos_known_by_reference: int
    swiperec_version: str = __version__
    format_version: int = FORMAT_VERSION

    def path(self, table: str) -> str:
        """The path or URI of one table's Parquet file (`videos`, `reviews`, `decisions`)."""
        return f"{self.uri.rstrip('/')}/{self.files[table]['file']}"

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k != "uri"}
        return json.dumps(data, indent=2, default=datetime.isoformat) + "\n"

    @classmethod
    def from_json(cls, uri: str, text: str) -> SnapshotMetadata:
        data = json.loads(text)
        if data.get("format_version") != FORMAT_VERSION:
            raise SnapshotError(
                f"{uri}: snapshot format {data.get('format_version')!r}; this swiperec reads "
                f"format {FORMAT_VERSION}: take the snapshot again"
            )
        when = datetime.fromisoformat
        data["cutoff"], data["taken_at"] = when(data["cutoff"]), when(data["taken_at"])
        for table, span in data["time_ranges"].items():
            data["time_ranges"][table] = span and [when(span[0]), when(span[1])]
        return cls(uri=uri, **data)


def resolve(folder, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path on it, URI to show) of a snapshot folder: a local path or a URI."""
    text = str(folder).rstrip("/")
    if not isinstance(folder, str) and text.split("/")[0].endswith(":"):
        raise ValueError(f"{text!r}: give a URI as str; a Path folds its '//'")
    if filesystem is not None:
        return filesystem, text, text
    if "://" in text:
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path.rstrip("/"), text
    local = str(Path(text).expanduser().resolve())
    return pafs.LocalFileSystem(), local, local
