"""The canonical content hash of a snapshot's Arrow tables: values and order, nothing else.

Content hash (format v1): per column, sha256 streams over its values in file row order: validity
(one byte per row); fixed-width values little-endian, nulls as 0 (timestamps int64 µs, dates
int32 days); strings as int64 byte lengths and UTF-8 bytes; lists as int32 lengths, then their
elements the same way. `content_hash` is one sha256 over the row counts and the sorted
`table.column:stream<TAB>hexdigest` lines: values and order only, never Parquet or batch sizes.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from swiperec.snapshot.format import FORMAT_VERSION


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
