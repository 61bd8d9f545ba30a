"""The ingest snapshot: videos, reviews and decisions up to a cutoff, in one consistent read.

    take_snapshot(conn, "gs://bucket/runs/42/snapshot", cutoff=datetime(2026, 10, 1))

writes one folder (a local path, or any URI `pyarrow.fs.FileSystem.from_uri` knows):

    videos.parquet     every column of public.videos; rows by id
    reviews.parquet    every column of public.video_reviews; by created_at, reviewer_id, video_id
    decisions.parquet  id, user_id (canonical uuid text), video_id, decision, created_at;
                       by created_at, id
    metadata.json      written last: cutoff, row counts, time ranges, file and content hashes

A snapshot at cutoff T holds decisions and reviews with `created_at <= T` and the videos known by
T: `created_at <= T`, or `release_date <= T` (a catalogue imported today with old release dates
counts), or referenced by one of those decisions or reviews (a backdated CSV import can swipe on a
video that arrived later: the swipe says it was known). So no row points at a video outside the
snapshot; the writer checks, and refuses the snapshot if one would. All tables are read in one
REPEATABLE READ, READ ONLY transaction: rows committed meanwhile are in none of the files. Rows
that arrive later with a backdated `created_at` are in a later snapshot with the same cutoff,
whose content hash then differs.

Timestamps are `timestamp[us, tz=UTC]`, dates `date32`, lists `list<string>`. The big table
(decisions) is read by binary COPY and decoded with numpy, the others by COPY of JSON lines
parsed by pyarrow; both stream in batches of `batch_rows`, one Parquet row group per batch, so
memory is bounded by the batch, not the table.

Content hash (format v1): per column, sha256 streams over its values in file row order: validity
(one byte per row); fixed-width values little-endian, nulls as 0 (timestamps int64 µs, dates
int32 days); strings as int64 byte lengths and UTF-8 bytes; lists as int32 lengths, then their
elements the same way. `content_hash` is one sha256 over the row counts and the sorted
`table.column:stream<TAB>hexdigest` lines: values and order only, never Parquet or batch sizes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg2.extensions
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from swiperec.errors import SwiperecError
from swiperec.version import __version__

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
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


@dataclass(frozen=True)
class _Table:
    name: str
    source: str
    schema: pa.Schema
    where: str  # over the source's columns (alias v); %(cutoff)s is the cutoff
    order_by: str


_RELEASED = "release_date <= (%(cutoff)s at time zone 'UTC')::date"
_VIDEO_KNOWN = (
    f"created_at <= %(cutoff)s or {_RELEASED}"
    " or exists (select from public.user_video_decisions d"
    "            where d.video_id = v.id and d.created_at <= %(cutoff)s)"
    " or exists (select from public.video_reviews r"
    "            where r.video_id = v.id and r.created_at <= %(cutoff)s)"
)
TABLES = (  # videos first: the others are checked against its ids
    _Table("videos", "public.videos", VIDEOS_SCHEMA, _VIDEO_KNOWN, "id"),
    # The "C" collation sorts text by bytes: the same order on every server, whatever its locale.
    _Table("reviews", "public.video_reviews", REVIEWS_SCHEMA, "created_at <= %(cutoff)s",
           'created_at, reviewer_id collate "C", video_id'),
    _Table("decisions", "public.user_video_decisions", DECISIONS_SCHEMA,
           "created_at <= %(cutoff)s", "created_at, id"),
)  # fmt: skip
_WHOLE_TABLES = ("videos", "reviews")  # snapshot every column; a new column must be added here


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


# ---------------------------------------------------------------------------------------------


def take_snapshot(
    conn,
    out_dir: str | Path,
    *,
    cutoff: datetime | None = None,
    overwrite: bool = False,
    batch_rows: int = 100_000,
    filesystem: pafs.FileSystem | None = None,
    progress: Callable[[str], None] | None = None,
) -> SnapshotMetadata:
    """Write videos, reviews and decisions as of `cutoff` into `out_dir`; returns the metadata.

    `cutoff`: default the transaction's `now()`; naive means UTC; later than now is refused.
    `out_dir`: a local path or a URI (give `gs://...` as str: `Path` folds the `//`); a complete
    snapshot there is replaced only with `overwrite`. `filesystem`: used instead of the one the
    URI names. `progress(table)` is called as each table starts. `conn` must not be inside a
    transaction; its session settings are left as they were.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    fs, root, uri = _resolve(out_dir, filesystem)
    _check_target(fs, root, uri, overwrite)
    staging = _prepare_staging(fs, root)
    try:
        with _read_only_transaction(conn), conn.cursor() as cur:
            cur.execute("select now(), current_setting('server_version')")
            taken_at, server_version = cur.fetchone()
            taken_at = taken_at.astimezone(UTC)
            cutoff = taken_at if cutoff is None else _as_utc(cutoff)
            if cutoff > taken_at:
                raise SnapshotError(
                    f"cutoff {cutoff.isoformat()} is in the future (database time "
                    f"{taken_at.isoformat()}): a snapshot can only hold what has happened"
                )
            _check_columns(cur)
            params = {"cutoff": cutoff}
            cur.execute(
                f"select count(*) from public.videos v where ({_VIDEO_KNOWN})"
                f" and not coalesce(created_at <= %(cutoff)s or {_RELEASED}, false)",
                params,
            )
            by_reference = cur.fetchone()[0]
            content, written = _ContentHash(), {}
            for table in TABLES:
                if progress:
                    progress(table.name)
                known = written["videos"].ids if written else None
                written[table.name] = _write_table(
                    cur, fs, staging, table, params, batch_rows, content, known
                )
        metadata = SnapshotMetadata(
            uri=uri,
            cutoff=cutoff,
            taken_at=taken_at,
            server_version=server_version,
            row_counts={name: w.rows for name, w in written.items()},
            time_ranges={name: w.span for name, w in written.items() if name != "videos"},
            files={name: w.file for name, w in written.items()},
            content_hash=content.hexdigest(),
            videos_known_by_reference=by_reference,
        )
        with fs.open_output_stream(f"{staging}/{METADATA_FILE}") as out:
            out.write(metadata.to_json().encode())
        _publish(fs, staging, root)
    except BaseException:
        if staging != root:
            with suppress(OSError):
                fs.delete_dir(staging)
        raise
    return metadata


def read_snapshot_metadata(
    path: str | Path, *, filesystem: pafs.FileSystem | None = None, verify: bool = False
) -> SnapshotMetadata:
    """The metadata of the snapshot folder at `path`; `verify` also re-hashes its files."""
    fs, root, uri = _resolve(path, filesystem)
    try:
        with fs.open_input_stream(f"{root}/{METADATA_FILE}") as handle:
            metadata = SnapshotMetadata.from_json(uri, handle.read().decode())
    except FileNotFoundError:
        raise IncompleteSnapshotError(
            f"{uri} has no {METADATA_FILE}: it is not a snapshot, or a snapshot that did not "
            f"finish; take it again (swiperec snapshot --out {uri} --overwrite)"
        ) from None
    for entry in metadata.files.values() if verify else ():
        digest = hashlib.sha256()
        with fs.open_input_stream(f"{root}/{entry['file']}") as handle:
            while chunk := handle.read(8 << 20):
                digest.update(chunk)
        if digest.hexdigest() != entry["sha256"]:
            raise SnapshotError(f"{uri}: {entry['file']} differs from its sha256 in metadata")
    return metadata


# ---------------------------------------------------------------------------------------------
# The target folder


def _resolve(out_dir, filesystem) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path on it, URI to show) for a local path or a URI."""
    text = str(out_dir).rstrip("/")
    if not isinstance(out_dir, str) and text.split("/")[0].endswith(":"):
        raise ValueError(f"{text!r}: give a URI as str; a Path folds its '//'")
    if filesystem is not None:
        return filesystem, text, text
    if "://" in text:
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path.rstrip("/"), text
    local = str(Path(text).expanduser().resolve())
    return pafs.LocalFileSystem(), local, local


def _check_target(fs, root: str, uri: str, overwrite: bool) -> None:
    kind = fs.get_file_info(root).type
    if kind == pafs.FileType.File:
        raise SnapshotError(f"{uri} is a file; a snapshot is a folder")
    if kind != pafs.FileType.Directory or overwrite:
        return
    names = {entry.base_name for entry in fs.get_file_info(pafs.FileSelector(root))}
    if METADATA_FILE in names:
        raise SnapshotExistsError(
            f"{uri} already holds a snapshot; choose another folder, or overwrite "
            "(--overwrite) to replace it"
        )
    # Parquet files without metadata.json: a run that died on an object store; redo it.
    foreign = names - {f"{t.name}.parquet" for t in TABLES}
    if foreign:
        raise SnapshotError(
            f"{uri} holds other files ({', '.join(sorted(foreign)[:3])}); choose an empty or "
            "new folder, or overwrite (--overwrite) to replace its contents"
        )


def _prepare_staging(fs, root: str) -> str:
    """Local: a sibling folder, renamed into place at the end. Object stores cannot rename a
    folder: there the folder itself is emptied, and metadata.json is written last."""
    if isinstance(fs, pafs.LocalFileSystem):
        staging = f"{root}.partial-{secrets.token_hex(4)}"
        fs.create_dir(staging)
        return staging
    if fs.get_file_info(root).type == pafs.FileType.Directory:
        # metadata.json goes first, so an interrupted overwrite never looks complete.
        if fs.get_file_info(f"{root}/{METADATA_FILE}").type == pafs.FileType.File:
            fs.delete_file(f"{root}/{METADATA_FILE}")
        fs.delete_dir_contents(root)
    fs.create_dir(root)
    return root


def _publish(fs, staging: str, root: str) -> None:
    if staging == root:
        return
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        fs.move(staging, root)
        return
    replaced = f"{root}.replaced-{secrets.token_hex(4)}"
    fs.move(root, replaced)
    fs.move(staging, root)
    fs.delete_dir(replaced)


# ---------------------------------------------------------------------------------------------
# Reading from the database


@contextmanager
def _read_only_transaction(conn):
    """One REPEATABLE READ, READ ONLY transaction, rolled back at the end. Set per transaction
    (not with `set_session`), so the connection's session settings never change."""
    with conn.cursor() as cur:
        if conn.autocommit:
            cur.execute("begin isolation level repeatable read, read only")
        elif conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            raise SnapshotError(
                "the connection is inside a transaction; commit or roll back first, so the "
                "snapshot gets a transaction (and a consistent view) of its own"
            )
        else:  # psycopg2 has just sent BEGIN: the level may still be set before any query
            cur.execute("set transaction isolation level repeatable read, read only")
    try:
        yield
    finally:
        if conn.autocommit:
            with conn.cursor() as cur:
                cur.execute("rollback")
        else:
            conn.rollback()


def _check_columns(cur) -> None:
    """A column a later migration adds must be added to the schema here, not left out."""
    for table in (t for t in TABLES if t.name in _WHOLE_TABLES):
        cur.execute(
            "select array_agg(column_name::text) from information_schema.columns"
            " where table_schema = 'public' and table_name = %s",
            (table.source.split(".")[1],),
        )
        unknown = set(cur.fetchone()[0] or []) - set(table.schema.names)
        if unknown:
            raise SnapshotError(
                f"{table.source} has columns the snapshot does not know: "
                f"{', '.join(sorted(unknown))}; add them to swiperec/data/snapshot.py"
            )


@dataclass
class _Written:
    rows: int = 0
    span: list[datetime] | None = None  # first and last created_at
    file: dict | None = None
    ids: pa.Array | None = None  # videos: the ids in the snapshot


def _write_table(cur, fs, folder, table, params, batch_rows, content, video_ids) -> _Written:
    """Stream one table from the database into `<folder>/<name>.parquet`."""
    name = f"{table.name}.parquet"
    stream = _HashingStream(fs.open_output_stream(f"{folder}/{name}"))
    writer = pq.ParquetWriter(stream, table.schema)
    written, ids = _Written(), []

    def on_batch(batch: pa.Table) -> None:
        if video_ids is not None:
            missing = pc.filter(
                batch["video_id"], pc.invert(pc.is_in(batch["video_id"], video_ids))
            )
            if len(missing):  # cannot happen while the foreign keys to public.videos exist
                raise SnapshotError(
                    f"{table.source} refers to videos outside the snapshot (ids "
                    f"{missing[:5].to_pylist()}): refused rather than written with dangling rows"
                )
        writer.write_table(batch)
        content.update(table.name, batch)
        written.rows += batch.num_rows
        if table.name == "videos":
            ids.extend(batch["id"].chunks)
        elif batch.num_rows:
            low, high = (s.as_py() for s in pc.min_max(batch["created_at"]).values())
            span = written.span or [low, high]
            written.span = [min(span[0], low), max(span[1], high)]

    where = cur.mogrify(table.where, params).decode()
    if table.name == "decisions":
        # The decision as a bool keeps every row fixed-width (63 bytes); NULL (a decision
        # other than like/nope) breaks that layout, so it cannot pass unnoticed.
        columns = "id, user_id, video_id, case decision when 'like' then true"
        columns += " when 'nope' then false end, created_at"
        options, decoder = "format binary", _DecisionsDecoder(on_batch)
    else:
        columns = "json_build_object(" + ", ".join(f"'{f.name}', {_wire(f)}" for f in table.schema)
        columns += ")"
        # CSV quoted and delimited by control characters, which JSON always escapes: each line
        # arrives as the JSON text itself, neither quoted nor escaped.
        options = r"format csv, delimiter e'\x02', quote e'\x01'"
        decoder = _JsonDecoder(table.schema, on_batch)
    sink = _CopySink(decoder, batch_rows)
    select = f"select {columns} from {table.source} v where {where} order by {table.order_by}"
    cur.copy_expert(f"copy ({select}) to stdout ({options})", sink)
    sink.finish()
    writer.close()
    stream.close()
    written.file = {"file": name, "sha256": stream.digest.hexdigest(), "bytes": stream.size}
    if table.name == "videos":
        written.ids = pa.chunked_array(ids, pa.int64()).combine_chunks()
    return written


def _wire(field: pa.Field) -> str:
    """The SQL for one JSON field: timestamps as int64 µs, dates as int32 days since 1970."""
    if pa.types.is_timestamp(field.type):  # exact: extract() is numeric since PostgreSQL 14
        return f"(extract(epoch from {field.name}) * 1000000)::int8"
    if pa.types.is_date32(field.type):
        return f"{field.name} - date '1970-01-01'"
    return field.name


def _wire_type(arrow_type: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(arrow_type):
        return pa.int64()
    return pa.int32() if pa.types.is_date32(arrow_type) else arrow_type


class _CopySink:
    """File-like target of COPY TO: psycopg2 writes one row per call; every `batch_rows` rows
    (or 32 MiB) they go to the decoder. A decoder error is kept and raised after COPY ends, so
    the connection is never left inside a COPY. `write` runs per row: it does little."""

    def __init__(self, decoder, batch_rows: int):
        self.decoder, self.batch_rows = decoder, batch_rows
        self.parts, self.size, self.error = [], 0, None

    def write(self, data) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size >= 32 << 20 or len(self.parts) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        parts, self.parts, self.size = self.parts, [], 0
        if parts and self.error is None:
            try:
                self.decoder(parts)
            except Exception as err:
                self.error = err

    def finish(self) -> None:
        self.flush()
        if self.error is not None:
            raise self.error


class _JsonDecoder:
    """JSON lines as `_wire` writes them -> a table of `schema`."""

    def __init__(self, schema: pa.Schema, on_batch):
        self.schema, self.on_batch = schema, on_batch
        self.wire = pa.schema([f.with_type(_wire_type(f.type)) for f in schema])

    def __call__(self, rows: list[bytes]) -> None:
        parsed = pajson.read_json(
            pa.BufferReader(b"".join(rows)),
            # A block must hold the longest row: a line may not straddle two blocks.
            read_options=pajson.ReadOptions(block_size=max(1 << 20, 2 * max(map(len, rows)))),
            parse_options=pajson.ParseOptions(
                explicit_schema=self.wire, unexpected_field_behavior="error"
            ),
        )
        columns = [parsed[f.name].cast(f.type) for f in self.schema]
        self.on_batch(pa.Table.from_arrays(columns, schema=self.schema))


_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_DECISION_ROW = np.dtype(
    [("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("user_len", ">i4"),
     ("user_id", "u1", (16,)), ("video_len", ">i4"), ("video_id", ">i8"),
     ("like_len", ">i4"), ("like", "u1"), ("time_len", ">i4"), ("created_at", ">i8")]
)  # fmt: skip
_DECISION_LENGTHS = {"fields": 5, "id_len": 8, "user_len": 16, "video_len": 8, "like_len": 1,
                     "time_len": 8}  # fmt: skip
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, PostgreSQL's epoch, in Unix microseconds
_HEX = np.array([f"{i:02x}".encode() for i in range(256)]).view(np.uint16)


class _DecisionsDecoder:
    """Binary COPY rows (id, user_id, video_id, like, created_at) -> DECISIONS_SCHEMA."""

    def __init__(self, on_batch):
        self.on_batch, self.started = on_batch, False

    def __call__(self, rows: list[bytes]) -> None:
        body = memoryview(b"".join(rows))
        if not self.started:
            if bytes(body[:19]) != _BINARY_HEADER:
                raise SnapshotError("unexpected binary COPY header from the server")
            body, self.started = body[19:], True
        if len(body) % _DECISION_ROW.itemsize == 2 and bytes(body[-2:]) == b"\xff\xff":
            body = body[:-2]  # the trailer
        bad = len(body) % _DECISION_ROW.itemsize != 0
        decoded = np.frombuffer(body[: len(body) - len(body) % _DECISION_ROW.itemsize],
                                dtype=_DECISION_ROW)  # fmt: skip
        for field, length in _DECISION_LENGTHS.items():
            bad = bad or bool((decoded[field] != length).any())
        stamps = decoded["created_at"].astype(np.int64)
        infinite = np.iinfo(np.int64)  # how PostgreSQL sends +-infinity
        if bad or ((stamps == infinite.max) | (stamps == infinite.min)).any():
            raise SnapshotError(
                "a decision is NULL where it may not be, neither like nor nope, or at an "
                "infinite time; fix it in public.user_video_decisions"
            )
        columns = [
            pa.array(decoded["id"].astype(np.int64)),
            _uuid_text(decoded["user_id"]),
            pa.array(decoded["video_id"].astype(np.int64)),
            pc.if_else(pa.array(decoded["like"].astype(bool)), "like", "nope"),
            pa.array(stamps + _PG_EPOCH_US).cast(UTC_US),
        ]
        self.on_batch(pa.Table.from_arrays(columns, schema=DECISIONS_SCHEMA))


def _uuid_text(raw: np.ndarray) -> pa.Array:
    """[n, 16] uint8 uuid bytes -> canonical lower-case `8-4-4-4-12` strings."""
    n = len(raw)
    hexed = _HEX[raw].view(np.uint8).reshape(n, 32)
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    for start, stop, at in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        text[:, at : at + stop - start] = hexed[:, start:stop]
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))


# ---------------------------------------------------------------------------------------------
# Hashing


class _HashingStream:
    """The Parquet writer's output: passes bytes to `raw`, hashing and counting them."""

    closed = False

    def __init__(self, raw):
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def close(self) -> None:
        self.raw.close()
        self.closed = True


class _ContentHash:
    """The content hash of the module docstring, fed batch by batch."""

    def __init__(self):
        self.streams, self.rows = {}, {}  # "table.column:part" -> sha256; table -> rows

    def update(self, table: str, batch: pa.Table) -> None:
        self.rows[table] = self.rows.get(table, 0) + batch.num_rows
        for name, column in zip(batch.column_names, batch.columns, strict=True):
            for chunk in column.chunks:
                self._feed(f"{table}.{name}", chunk)

    def hexdigest(self) -> str:
        total = hashlib.sha256(f"swiperec snapshot content v{FORMAT_VERSION}\n".encode())
        for table in sorted(self.rows):
            total.update(f"{table}:rows\t{self.rows[table]}\n".encode())
        for key in sorted(self.streams):
            total.update(f"{key}\t{self.streams[key].hexdigest()}\n".encode())
        return total.hexdigest()

    def _put(self, key: str, data) -> None:
        self.streams.setdefault(key, hashlib.sha256()).update(data)

    def _feed(self, key: str, array: pa.Array) -> None:
        if not len(array):  # an empty chunk must not create a stream: batching would show
            return
        self._put(f"{key}:valid", array.is_valid().to_numpy(zero_copy_only=False).tobytes())
        kind = array.type
        if pa.types.is_list(kind):
            lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy()
            self._put(f"{key}:len", lengths.astype("<i4").tobytes())
            self._feed(f"{key}[]", array.flatten())
        elif pa.types.is_string(kind):
            array = pc.fill_null(array, "")
            offsets = np.frombuffer(array.buffers()[1], np.int32, len(array) + 1, array.offset * 4)
            self._put(f"{key}:len", np.diff(offsets).astype("<i8").tobytes())
            if offsets[-1] > offsets[0]:
                self._put(f"{key}:utf8", memoryview(array.buffers()[2])[offsets[0] : offsets[-1]])
        else:
            if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
                array = array.cast(pa.int64() if pa.types.is_timestamp(kind) else pa.int32())
            values = pc.fill_null(array, 0).to_numpy(zero_copy_only=False)
            self._put(f"{key}:values", values.astype(values.dtype.newbyteorder("<")).tobytes())


def _as_utc(moment: datetime) -> datetime:
    """Aware datetimes converted to UTC; naive ones read as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
