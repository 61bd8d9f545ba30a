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
memory is bounded by the batch, not the table (the decoders: `swiperec.snapshot.copy_to_arrow`).

The content hash in metadata.json is defined in `swiperec.snapshot.content_hash`: values and
order only, never Parquet or batch sizes.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg2.extensions
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from swiperec.snapshot.content_hash import _ContentHash
from swiperec.snapshot.copy_to_arrow import _CopySink, _DecisionsDecoder, _JsonDecoder, _wire
from swiperec.snapshot.format import (
    DECISIONS_SCHEMA,
    METADATA_FILE,
    REVIEWS_SCHEMA,
    VIDEOS_SCHEMA,
    SnapshotError,
    SnapshotExistsError,
    SnapshotMetadata,
    resolve,
)


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
    with _staged(out_dir, filesystem, overwrite) as (fs, staging, uri):
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
    return metadata


def write_tables(
    out_dir: str | Path,
    tables: dict[str, pa.Table],
    *,
    cutoff: datetime | None = None,
    overwrite: bool = False,
) -> SnapshotMetadata:
    """A snapshot folder from tables already in memory (`videos`, `decisions`, `reviews`,
    shaped like the files `take_snapshot` writes): test and benchmark input without a database
    (e.g. `swiperec.features.events.tables_from_synthetic`). `cutoff` defaults to the last
    decision or review; the metadata and content hash are computed as for a database snapshot."""
    with _staged(out_dir, None, overwrite) as (fs, staging, uri):
        content, files, spans = _ContentHash(), {}, {}
        for name in (t.name for t in TABLES):
            table = tables[name]
            stream = _HashingStream(fs.open_output_stream(f"{staging}/{name}.parquet"))
            pq.write_table(table, stream)
            stream.close()
            content.update(name, table)
            files[name] = {"file": f"{name}.parquet", "sha256": stream.digest.hexdigest(),
                           "bytes": stream.size}  # fmt: skip
            if name != "videos":
                times = table["created_at"]
                spans[name] = (
                    [t.as_py() for t in pc.min_max(times).values()] if len(times) else None
                )
        last = max((span[1] for span in spans.values() if span), default=datetime.now(UTC))
        metadata = SnapshotMetadata(
            uri=uri, cutoff=_as_utc(cutoff) if cutoff else last, taken_at=datetime.now(UTC),
            server_version="", row_counts={n: tables[n].num_rows for n in files},
            time_ranges=spans, files=files, content_hash=content.hexdigest(),
            videos_known_by_reference=0,
        )  # fmt: skip
        with fs.open_output_stream(f"{staging}/{METADATA_FILE}") as out:
            out.write(metadata.to_json().encode())
    return metadata


# ---------------------------------------------------------------------------------------------
# The target folder


@contextmanager
def _staged(out_dir, filesystem, overwrite: bool):
    """(filesystem, staging folder, URI) to write a snapshot into; metadata.json goes last. On
    leaving, the staging folder becomes the snapshot; on an error it is removed, and a
    snapshot that was there before is left as it was (on an object store, it is incomplete)."""
    fs, root, uri = resolve(out_dir, filesystem)
    _check_target(fs, root, uri, overwrite)
    staging = _prepare_staging(fs, root)
    try:
        yield fs, staging, uri
        _publish(fs, staging, root)
    except BaseException:
        if staging != root:
            with suppress(OSError):
                fs.delete_dir(staging)
        raise


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
                f"{', '.join(sorted(unknown))}; add them to swiperec/snapshot/format.py"
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


def _as_utc(moment: datetime) -> datetime:
    """Aware datetimes converted to UTC; naive ones read as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
