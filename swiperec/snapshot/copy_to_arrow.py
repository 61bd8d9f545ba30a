"""PostgreSQL COPY output -> Arrow tables, batch by batch, for the snapshot's tables.

`_CopySink` is the file-like target psycopg2's `copy_expert` writes into; it hands every
`batch_rows` rows to a decoder, which calls `on_batch` with one Arrow table per batch, so memory
is bounded by the batch, not the table. `_DecisionsDecoder` reads the binary COPY of the big
table (decisions) with numpy; `_JsonDecoder` reads COPY of JSON lines, each row built by the SQL
`_wire` writes, with pyarrow. The SQL query itself, and what is done with each batch, belong to
`swiperec.snapshot`.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from swiperec.snapshot.format import DECISIONS_SCHEMA, UTC_US, SnapshotError


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
