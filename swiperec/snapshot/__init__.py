"""The snapshot: the training pipeline's input, videos, reviews and decisions up to a cutoff.

    meta = take_snapshot(conn, "gs://bucket/runs/42/snapshot", cutoff=cutoff)   # write.py
    meta = read_metadata("gs://bucket/runs/42/snapshot")                       # read.py
    tables = read_tables("gs://bucket/runs/42/snapshot")

`format.py` is the format (schemas, `SnapshotMetadata`, the folder resolver); `write.py`
takes a snapshot in one consistent read (or writes one from tables in memory: `write_tables`);
`read.py` reads one back; `content_hash.py` defines its content hash; `copy_to_arrow.py`
decodes COPY output into Arrow. The feature transform, the evaluator and the embedding writer
all read snapshots through `read.py`.
"""

from swiperec.snapshot.format import (
    IncompleteSnapshotError,
    SnapshotError,
    SnapshotExistsError,
    SnapshotMetadata,
)
from swiperec.snapshot.read import read_metadata, read_table_groups, read_tables
from swiperec.snapshot.write import TABLES, take_snapshot, write_tables

__all__ = [
    "TABLES",
    "IncompleteSnapshotError",
    "SnapshotError",
    "SnapshotExistsError",
    "SnapshotMetadata",
    "read_metadata",
    "read_table_groups",
    "read_tables",
    "take_snapshot",
    "write_tables",
]
