"""PostgreSQL binary COPY, encoded column-wise with numpy.

Binary COPY is the fastest way into PostgreSQL (~20x text COPY for vectors). The format is a
header, then per row an int16 field count and per field an int32 byte length (-1 for NULL)
followed by the value in network byte order, then an int16 -1 trailer.

Columns are given as arrays; fixed-width types (ints, floats, uuid, date, timestamptz, bool,
vector) are encoded without a Python loop, and when every column is fixed-width and non-null the
rows are one numpy structured array. Text and text[] need one `str.encode` per value and are
scattered into place with numpy. Rows are encoded in chunks so memory stays bounded.

    copy_binary(cur, "user_video_decisions",
                [Column("user_id", "uuid", uuid_bytes), Column("video_id", "int8", ids), ...])
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)

_PG_EPOCH_DAYS = np.datetime64("2000-01-01", "D")
_PG_EPOCH_US = np.datetime64("2000-01-01T00:00:00", "us")
_TEXT_OID = 25

# Fixed-width value types: numpy big-endian dtype of the value (vector handled apart).
_FIXED = {
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float4": ">f4",
    "float8": ">f8",
    "bool": "u1",
    "date": ">i4",
    "timestamptz": ">i8",
    "timestamp": ">i8",
    "uuid": ("u1", (16,)),
}


@dataclass
class Column:
    """One column to COPY.

    values by type: ints/floats/bool: 1-d numeric array; `date`: datetime64 (days);
    `timestamptz`: datetime64 (any unit, UTC); `uuid`: [n, 16] uint8 raw bytes;
    `vector`: [n, dim] float; `text`: sequence of str, or a numpy `S<k>` array whose values are
    all exactly k bytes of UTF-8 (fixed-width, fast); `text[]`: sequence of lists of str.
    `nulls`: optional [n] bool mask (text and text[] may also hold None).
    """

    name: str
    pg_type: str
    values: object
    nulls: np.ndarray | None = None


def copy_binary(cur, table: str, columns: Sequence[Column], *, chunk_rows: int = 100_000) -> int:
    """COPY the columns into `table` in binary format; returns the number of rows sent."""
    n = _row_count(columns)
    names = ", ".join(f'"{c.name}"' for c in columns)
    stream = _ChunkReader(_encode_stream(columns, n, chunk_rows))
    cur.copy_expert(f"copy {table} ({names}) from stdin with (format binary)", stream)
    return n


def encode(columns: Sequence[Column]) -> bytes:
    """The whole binary COPY payload as bytes (for tests and small loads)."""
    n = _row_count(columns)
    return b"".join(_encode_stream(columns, n, max(n, 1)))


# --------------------------------------------------------------------------------------------


def _row_count(columns: Sequence[Column]) -> int:
    if not columns:
        raise ValueError("copy needs at least one column")
    counts = {len(c.values) for c in columns}
    if len(counts) != 1:
        raise ValueError(f"columns differ in length: {[(c.name, len(c.values)) for c in columns]}")
    return counts.pop()


def _encode_stream(columns: Sequence[Column], n: int, chunk_rows: int) -> Iterator[bytes]:
    yield HEADER
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        yield _encode_rows(columns, start, stop)
    yield TRAILER


def _encode_rows(columns: Sequence[Column], start: int, stop: int) -> bytes:
    n = stop - start
    fields = [_encode_field(c, start, stop) for c in columns]
    if all(isinstance(f, np.ndarray) and f.dtype.names for f in fields):
        return _join_fixed(fields, n)
    return _join_variable(fields, n)


def _join_fixed(fields: list[np.ndarray], n: int) -> bytes:
    """All columns fixed-width and non-null: one structured array, no per-row work."""
    dtype = [("count", ">i2")] + [(f"f{i}", f.dtype) for i, f in enumerate(fields)]
    rows = np.empty(n, dtype=dtype)
    rows["count"] = len(fields)
    for i, f in enumerate(fields):
        rows[f"f{i}"] = f
    return rows.tobytes()


def _join_variable(fields: list, n: int) -> bytes:
    """Scatter each column's per-row byte runs into one buffer, row after row."""
    parts = [_as_runs(f, n) for f in fields]  # (flat uint8 buffer, per-row lengths)
    row_len = 2 + sum(lengths for _, lengths in parts)
    row_start = np.zeros(n, dtype=np.int64)
    np.cumsum(row_len[:-1], out=row_start[1:])
    out = np.empty(int(row_len.sum()), dtype=np.uint8)
    count = np.frombuffer(struct.pack(">h", len(fields)), dtype=np.uint8)
    out[row_start[:, None] + np.arange(2)] = count
    offset = row_start + 2
    for buffer, lengths in parts:
        src_start = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1], out=src_start[1:])
        shift = np.repeat(offset - src_start, lengths)
        out[np.arange(buffer.size) + shift] = buffer
        offset = offset + lengths
    return out.tobytes()


def _as_runs(field, n: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(field, tuple):
        return field
    flat = field.view(np.uint8).reshape(-1)
    return flat, np.full(n, field.dtype.itemsize, dtype=np.int64)


def _encode_field(column: Column, start: int, stop: int):
    """A structured array (length + value) for fixed-width columns without nulls, otherwise
    a (flat bytes, per-row lengths) pair including each field's 4-byte length prefix."""
    pg_type = column.pg_type
    values = column.values[start:stop]
    nulls = None if column.nulls is None else np.asarray(column.nulls[start:stop], dtype=bool)
    if pg_type == "text" and isinstance(values, np.ndarray) and values.dtype.kind == "S":
        if (np.char.str_len(values) != values.dtype.itemsize).any():
            raise ValueError(f"{column.name}: S<k> text values must all be exactly k bytes")
        # Fixed-width UTF-8 bytes: no per-row work.
        fixed = np.empty(len(values), dtype=[("len", ">i4"), ("v", values.dtype)])
        fixed["len"], fixed["v"] = values.dtype.itemsize, values
    elif pg_type == "text":
        return _runs([None if v is None else v.encode("utf-8") for v in values])
    elif pg_type == "text[]":
        return _runs([None if v is None else _text_array(v) for v in values])
    elif pg_type == "vector":
        array = np.asarray(values, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError(f"{column.name}: vector values must be [n, dim], got {array.shape}")
        dim = array.shape[1]
        dtype = np.dtype([("len", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("v", ">f4", (dim,))])
        fixed = np.empty(len(array), dtype=dtype)
        fixed["len"], fixed["dim"], fixed["unused"], fixed["v"] = 4 + 4 * dim, dim, 0, array
    else:
        if pg_type not in _FIXED:
            raise ValueError(f"{column.name}: unsupported type {pg_type!r}")
        value_dtype = np.dtype(_FIXED[pg_type])
        fixed = np.empty(len(values), dtype=[("len", ">i4"), ("v", value_dtype)])
        fixed["len"] = value_dtype.itemsize
        fixed["v"] = _to_wire(pg_type, values, column.name, nulls)
    if nulls is None or not nulls.any():
        return fixed
    rows = fixed.view(np.uint8).reshape(len(fixed), -1).copy()
    rows[nulls, :4] = np.frombuffer(struct.pack(">i", -1), dtype=np.uint8)
    keep = np.ones(rows.shape, dtype=bool)
    keep[nulls, 4:] = False  # a NULL is its length prefix alone
    return rows[keep], np.where(nulls, 4, rows.shape[1]).astype(np.int64)


def _to_wire(pg_type: str, values, name: str, nulls: np.ndarray | None) -> np.ndarray:
    """Values as the integers or bytes PostgreSQL expects; refuses what would silently change
    (an integer out of the column's range, a NaT not marked as NULL)."""
    present = slice(None) if nulls is None else ~nulls
    if pg_type in ("date", "timestamptz", "timestamp"):
        unit = "D" if pg_type == "date" else "us"
        times = np.asarray(values).astype(f"datetime64[{unit}]")
        if np.isnat(times[present]).any():
            raise ValueError(f"{name}: NaT where no NULL is marked (pass nulls=np.isnat(...))")
        epoch = _PG_EPOCH_DAYS if pg_type == "date" else _PG_EPOCH_US
        return (times - epoch).astype(np.int64)
    if pg_type in ("int2", "int4", "int8"):
        ints = np.asarray(values)
        limits = np.iinfo(np.dtype(_FIXED[pg_type]))
        checked = ints[present]
        if checked.size and (checked.min() < limits.min or checked.max() > limits.max):
            raise ValueError(f"{name}: values outside the range of {pg_type}")
        return ints
    if pg_type == "uuid":
        array = np.asarray(values, dtype=np.uint8)
        if array.ndim != 2 or array.shape[1] != 16:
            raise ValueError(f"{name}: uuid values must be [n, 16] uint8, got {array.shape}")
        return array
    return np.asarray(values)


def _text_array(items) -> bytes:
    encoded = [s.encode("utf-8") for s in items]
    if not encoded:
        return struct.pack(">iii", 0, 0, _TEXT_OID)
    head = struct.pack(">iiiii", 1, 0, _TEXT_OID, len(encoded), 1)
    return head + b"".join(struct.pack(">i", len(e)) + e for e in encoded)


def _runs(encoded: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    pieces = []
    for value in encoded:
        if value is None:
            pieces.append(b"\xff\xff\xff\xff")
        else:
            pieces.append(struct.pack(">i", len(value)))
            pieces.append(value)
    flat = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    lengths = np.fromiter((4 if v is None else 4 + len(v) for v in encoded), np.int64, len(encoded))
    return flat, lengths


class _ChunkReader:
    """A file-like `read(size)` over an iterator of byte chunks, for `copy_expert`."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buffer = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        while len(self._buffer) == 0:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._buffer = memoryview(chunk)
        if size is None or size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out.tobytes()

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)
