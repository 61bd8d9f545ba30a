"""Reading a snapshot folder: its typed metadata and its tables.

    meta = read_metadata("gs://bucket/runs/42/snapshot")    # SnapshotMetadata; cutoff etc.
    tables = read_tables("gs://bucket/runs/42/snapshot")    # {"videos": pa.Table, ...}
    for group in read_table_groups(folder, "decisions"): ...  # a large table in parts

A folder without metadata.json is not a snapshot (or one whose writer did not finish): reading
it raises `IncompleteSnapshotError` with what to do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from swiperec.snapshot.format import (
    METADATA_FILE,
    TABLE_NAMES,
    IncompleteSnapshotError,
    SnapshotError,
    SnapshotMetadata,
    resolve,
)


def read_metadata(
    path: str | Path, *, filesystem: pafs.FileSystem | None = None, verify: bool = False
) -> SnapshotMetadata:
    """The metadata of the snapshot folder at `path`; `verify` also re-hashes its files."""
    fs, root, uri = resolve(path, filesystem)
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


def read_tables(folder: str | Path, names: tuple[str, ...] = TABLE_NAMES) -> dict[str, pa.Table]:
    """The snapshot's tables by name (all three by default; `names=("videos",)` for the
    catalogue alone, which is what a worker embedding videos needs)."""
    fs, root, _ = resolve(folder)
    return {name: pq.read_table(f"{root}/{name}.parquet", filesystem=fs) for name in names}


def read_table_groups(folder: str | Path, name: str) -> Iterator[pa.Table]:
    """The snapshot's table `name`, one Parquet row group at a time, in the file's order (what
    Beam's `ReadFromParquetBatched` yields, but always in that order)."""
    fs, root, _ = resolve(folder)
    with fs.open_input_file(f"{root}/{name}.parquet") as handle:
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            yield parquet.read_row_group(group)
