"""Embeddings from trained towers, in bulk, for evaluation and benchmarks.

These take *transformed* features (the examples and catalogue the transform step wrote) and
the towers as Keras models; serving from raw features goes through the exported SavedModels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from swiperec.features.video_evidence import RANKING_FEATURE_NAMES
from swiperec.model.towers import USER_TOWER_INPUTS, VIDEO_TOWER_INPUTS


@dataclass
class ExampleEmbeddings:
    """One split's examples: `user` [N, D] float32 (the user as of each example), `video_id`
    [N] int64, `label` [N] int8 (1 like, 0 nope or sampled), `weight` [N] float32,
    `example_time_us` [N] int64, and `user_key`, `negative_source` [N] object (str; the source
    is "" for a like, "nope" or "sampled"); `match` [N, 8] float32, the examples'
    `RANKING_FEATURE_NAMES` (None for examples made without them)."""

    user: np.ndarray
    video_id: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    user_key: np.ndarray
    example_time_us: np.ndarray
    negative_source: np.ndarray
    match: np.ndarray | None = None


def embed_catalogue(video_tower, catalogue, batch_size: int = 4096) -> np.ndarray:
    """[N, D] float32 embeddings of the whole catalogue, row i = `catalogue.video_ids[i]`."""
    parts = [
        video_tower({k: b[k] for k in VIDEO_TOWER_INPUTS}, training=False).numpy()
        for b in catalogue.all_rows(batch_size)
    ]
    return np.concatenate(parts) if parts else np.empty((0, 0), np.float32)


def rank_catalogue(video_ranker, catalogue, batch_size: int = 4096) -> np.ndarray:
    """[N, 2] float32 ranking terms (bias, scale) of the whole catalogue, in catalogue order."""
    parts = [
        video_ranker({k: b[k] for k in VIDEO_TOWER_INPUTS}, training=False).numpy()
        for b in catalogue.all_rows(batch_size)
    ]
    return np.concatenate(parts) if parts else np.empty((0, 2), np.float32)


def embed_examples(user_tower, dataset: tf.data.Dataset) -> ExampleEmbeddings:
    """Run the user tower over a dataset of parsed (joined) example batches."""
    users, video_ids, labels, weights, keys, times, sources = [], [], [], [], [], [], []
    matches = []
    for batch in dataset:
        if "negative_source" not in batch:
            raise ValueError(
                "these examples do not record where their negatives came from (made by an "
                "older transform): re-run `swiperec transform`"
            )
        users.append(user_tower({k: batch[k] for k in USER_TOWER_INPUTS}, training=False).numpy())
        video_ids.append(batch["video_id"].numpy())
        labels.append(batch["label"].numpy().astype(np.int8))
        weights.append(batch["weight"].numpy())
        keys.append(batch["user_key"].numpy().astype(str).astype(object))
        times.append(batch["example_time_us"].numpy())
        sources.append(batch["negative_source"].numpy().astype(str).astype(object))
        if all(name in batch for name in RANKING_FEATURE_NAMES):
            matches.append(np.stack([batch[n].numpy() for n in RANKING_FEATURE_NAMES], -1))
    return ExampleEmbeddings(
        np.concatenate(users),
        np.concatenate(video_ids),
        np.concatenate(labels),
        np.concatenate(weights),
        np.concatenate(keys),
        np.concatenate(times),
        np.concatenate(sources),
        np.concatenate(matches).astype(np.float32) if matches else None,
    )
