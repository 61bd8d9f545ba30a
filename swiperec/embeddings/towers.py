"""Raw features -> the exported towers -> vectors: the one code path that the batch refresh
(`swiperec.embeddings.writer`) and real-time embedding (`swiperec.realtime`) share, so a vector
computed for the same data is the same whichever of them computed it.

    towers = load_towers(model_dir)
    ids, vectors = embed_users(towers, catalogue, config, users, as_of_us)
    ids, vectors = embed_videos(towers, catalogue, positions, as_of_us)
    ids, vectors, ranking = embed_videos_ranked(...)   plus each video's ranking terms

`users` are (user key, video ids, labels, times) per user, the user's decisions in time order
(ties by video id, as `swiperec.features.events` orders them); `catalogue` holds at least the
videos they name.
"""

from __future__ import annotations

import functools
import os
import threading

import numpy as np

KINDS = ("video", "user")


def load_towers(model_dir: str) -> dict:
    """{"video": tower, "user": tower}: the SavedModel signatures of a model folder."""
    from swiperec.model.export import load_serving_tower

    return {kind: load_serving_tower(os.path.join(model_dir, f"{kind}_tower")) for kind in KINDS}


def shared_towers(model_dir: str) -> dict:
    """`load_towers`, loaded once per process while the folder's SavedModels stay the same (a
    model trained again into the folder is loaded again): the batch refresh runs a Beam
    pipeline per kind, and on the in-process runner each would load the towers anew (~2 s).

    A SavedModel is known by its fingerprint (`fingerprint.pb`, which TensorFlow writes with
    it: checksums of its graph and its variables) and its graph file's size and mtime, so a
    model written into the folder again within the same second is not taken for the last."""
    import tensorflow as tf

    stamps = []
    for kind in KINDS:
        folder = os.path.join(model_dir, f"{kind}_tower")
        graph = tf.io.gfile.stat(os.path.join(folder, "saved_model.pb"))
        fingerprint = os.path.join(folder, "fingerprint.pb")
        checksums = b""
        if tf.io.gfile.exists(fingerprint):
            with tf.io.gfile.GFile(fingerprint, "rb") as handle:
                checksums = handle.read()
        stamps.append((graph.length, graph.mtime_nsec, checksums))
    with _loading:  # the in-process runner's threads: one loads, the others take its towers
        return _towers_as_of(model_dir, tuple(stamps))


_loading = threading.Lock()


@functools.lru_cache(maxsize=1)
def _towers_as_of(model_dir: str, stamps: tuple) -> dict:
    return load_towers(model_dir)


def forget_shared_towers() -> None:
    """Drop the towers `shared_towers` holds: the next call loads them."""
    _towers_as_of.cache_clear()


def user_rows(catalogue, config, users, as_of_us: int) -> tuple[list, list[dict]]:
    """(keys, raw feature rows) of `users` as of `as_of_us`: each user's `UserHistory` built
    from their decisions on catalogue videos at or before that time."""
    from swiperec.features.user_history import UserHistory

    keys, rows = [], []
    catalogue_ids = catalogue.video_id
    for key, videos, labels, times in users:
        history = UserHistory(catalogue, config, is_pseudo=False)
        videos, labels, times = np.asarray(videos), np.asarray(labels), np.asarray(times)
        if len(catalogue_ids) and len(videos):
            # Catalogue positions for the whole history at once; events on videos outside the
            # catalogue or after `as_of_us` are skipped.
            position = np.minimum(np.searchsorted(catalogue_ids, videos), len(catalogue_ids) - 1)
            keep = (catalogue_ids[position] == videos) & (times <= as_of_us)
            history.extend_at_positions(
                position[keep].tolist(), labels[keep].tolist(), times[keep].tolist()
            )
        rows.append(history.features(as_of_us))
        keys.append(key)
    return keys, rows


def video_rows(catalogue, positions, as_of_us: int) -> tuple[list, list[dict]]:
    """(video ids, raw feature rows) of the catalogue rows at `positions`, as of `as_of_us`."""
    from swiperec.features.raw_features import video_raw_features

    positions = list(positions)
    rows = [video_raw_features(catalogue, i, as_of_us) for i in positions]
    return [int(catalogue.video_id[i]) for i in positions], rows


def embed_rows(towers: dict, kind: str, rows: list[dict]) -> np.ndarray:
    """[len(rows), D] float32: `rows` (raw features of `kind`) through that tower, one call."""
    return embed_rows_ranked(towers, kind, rows)[0]


def embed_rows_ranked(towers: dict, kind: str, rows: list[dict]):
    """(vectors [n, D], ranking [n, 2] (rank_bias, rank_scale) or None) of `rows` through the
    tower of `kind`, one call. The ranking terms are a video's, from a model that has them;
    None for users and for models exported before them."""
    import tensorflow as tf

    from swiperec.features.preprocessing import user_feature_spec, video_row_spec
    from swiperec.model.export import serialize_raw

    spec = video_row_spec() if kind == "video" else user_feature_spec()
    if not rows:
        empty = np.empty((0, 2), np.float32) if kind == "video" else None
        return np.empty((0, 0), np.float32), empty
    out = towers[kind](examples=tf.constant(serialize_raw(rows, spec)))
    ranking = None
    if kind == "video" and "rank_scale" in out:
        ranking = np.stack([out["rank_bias"].numpy(), out["rank_scale"].numpy()], axis=1)
    return out["embedding"].numpy(), ranking


def embed_users(towers, catalogue, config, users, as_of_us: int) -> tuple[list, np.ndarray]:
    """(user keys, [N, D] vectors) of `users` as of `as_of_us` (see `user_rows`)."""
    keys, rows = user_rows(catalogue, config, users, as_of_us)
    return keys, embed_rows(towers, "user", rows)


def embed_videos(towers, catalogue, positions, as_of_us: int) -> tuple[list, np.ndarray]:
    """(video ids, [N, D] vectors) of the catalogue rows at `positions`, as of `as_of_us`."""
    ids, rows = video_rows(catalogue, positions, as_of_us)
    return ids, embed_rows(towers, "video", rows)


def embed_videos_ranked(towers, catalogue, positions, as_of_us: int):
    """(video ids, [N, D] vectors, [N, 2] ranking terms or None): `embed_videos` plus what the
    serving set stores beside each vector (`embed_rows_ranked`)."""
    ids, rows = video_rows(catalogue, positions, as_of_us)
    return (ids, *embed_rows_ranked(towers, "video", rows))
