"""Raw features as the TFT graphs and the exported towers take them, in Arrow form.

Shared by the transform step (training), the batch embedding refresh and real-time embedding,
so all three build exactly the same raw inputs. Arrow record batches are TFT's efficient input
format (TFXIO): one list column per feature, a scalar feature being a list of one value.
"""

from __future__ import annotations

import itertools
import operator

import numpy as np

DAY_US = 86_400 * 1_000_000


def video_age_days(catalogue, position: int, at_us: int) -> float:
    """Days from the release of the video at `position` to `at_us` (UTC µs); 0 without a
    release date, never negative."""
    release = catalogue.release_date[position]
    if np.isnat(release):
        return 0.0
    release_us = release.astype("datetime64[us]").astype(np.int64)
    return max(0.0, (at_us - release_us) / DAY_US)


def video_ages_days(catalogue, positions, at_us) -> np.ndarray:
    """`video_age_days` of the videos at `positions` (int array), each as of its own `at_us`
    (an array of the same shape) or all as of one: float64, the same values one call at a
    time gives."""
    release = catalogue.release_date[np.asarray(positions, dtype=np.int64)]
    at_us = np.broadcast_to(np.asarray(at_us, dtype=np.int64), release.shape)
    missing = np.isnat(release)
    release_us = np.where(missing, at_us, release.astype("datetime64[us]").astype(np.int64))
    return np.maximum((at_us - release_us) / DAY_US, 0.0)


def video_raw_features(catalogue, position: int, at_us: int) -> dict:
    """The raw features of the video at `position` of the catalogue, as of `at_us` (UTC µs)."""
    duration = catalogue.duration_sec[position]
    return {
        "video_id": int(catalogue.video_id[position]),
        "title": catalogue.title[position],
        "description": catalogue.description[position],
        "genres": list(catalogue.genres[position]),
        "maker": catalogue.maker[position],
        "performers": list(catalogue.performers[position]),
        "duration_sec": 0.0 if np.isnan(duration) else float(duration),
        "age_days": video_age_days(catalogue, position, at_us),
    }


def arrow_schema(feature_spec: dict):
    """The Arrow schema for rows of `feature_spec` (a dict of tf.io feature specs)."""
    import pyarrow as pa
    import tensorflow as tf

    value_types = {tf.string: pa.large_binary(), tf.float32: pa.float32(), tf.int64: pa.int64()}
    return pa.schema(
        [
            pa.field(name, pa.large_list(value_types[spec.dtype]))
            for name, spec in feature_spec.items()
        ]
    )


def tensor_adapter_config(feature_spec: dict):
    """What TFT needs to read record batches of `arrow_schema(feature_spec)`."""
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

    schema = schema_utils.schema_from_feature_spec(feature_spec)
    return tensor_adapter.TensorAdapterConfig(
        arrow_schema(feature_spec),
        tensor_representation_util.InferTensorRepresentationsFromSchema(schema),
    )


def to_record_batch(rows: list[dict], schema):
    """Row dicts (str, float, int or lists of them) -> one record batch of `schema`.

    Column by column: every row's values in one flat array plus the rows' offsets into it,
    so Arrow converts each column in one call (str goes to binary as UTF-8). A column of
    scalars needs no flattening: its offsets are 0, 1, 2 and so on. A list equal to the row
    before's is converted once and repeated (Arrow's `take`): one user's consecutive examples
    often hold the same history lists (the examples at one time share them all, and a nope
    leaves the lists of liked genres, makers and performers as they were).

    ValueError when a row holds None (alone or in a list): the graphs have no missing value,
    and Arrow would pass it on as a null."""
    import pyarrow as pa

    columns = []
    scalar_offsets = pa.array(np.arange(len(rows) + 1, dtype=np.int64))
    for field in schema:
        name = field.name  # pyarrow makes a new str at every call
        values = [row[name] for row in rows]
        repeat = None
        types = set(map(type, values))
        if list not in types:
            flat, offsets = values, scalar_offsets
        else:
            lists = values if len(types) == 1 else [v if type(v) is list else [v] for v in values]
            new = [True, *map(operator.ne, lists[1:], lists)]
            if not all(new):
                repeat = pa.array(np.cumsum(new, dtype=np.int64) - 1)
                lists = list(itertools.compress(lists, new))
            counts = np.fromiter(map(len, lists), np.int64, len(lists))
            offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]))
            flat = list(itertools.chain.from_iterable(lists))
        flat = pa.array(flat, type=field.type.value_type)
        if flat.null_count:
            raise ValueError(f"raw feature {name!r}: a row holds None")
        column = pa.LargeListArray.from_arrays(offsets, flat)
        columns.append(column if repeat is None else column.take(repeat))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def catalogue_record_batches(
    catalogue, at_us: int, feature_spec: dict, rows_per_batch: int = 10_000, rows=None
):
    """The catalogue's rows (`rows`, a range of positions; all by default) as record batches
    of raw video features as of `at_us`."""
    schema = arrow_schema(feature_spec)
    rows = range(len(catalogue.video_id)) if rows is None else rows
    batches = []
    for start in range(rows.start, rows.stop, rows_per_batch):
        stop = min(rows.stop, start + rows_per_batch)
        features = [video_raw_features(catalogue, i, at_us) for i in range(start, stop)]
        batches.append(to_record_batch(features, schema))
    return batches
