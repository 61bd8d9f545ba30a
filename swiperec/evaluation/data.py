"""What the evaluator ranks and scores, assembled once: the catalogue, the test period, history.

    data = load_evaluation_data("artifacts/model", "artifacts/examples", "artifacts/transform",
                                "artifacts/snapshot")

- The catalogue: every video of the snapshot, in `video_id` order (row i of every [N] array),
  with its genres and maker (for diversity), its like and nope counts before the test period
  (popularity, like rate; real users and pseudo-users alike) and whether it was released after
  training data ended ("new": the model never saw it liked).
- The test period's examples (the transform's `test` split): each example's user embedding as
  of the example, the video's row, the label and where a negative came from (nope or sampled).
- Per test user: the embedding as of their first test example (nothing from the test period is
  in it), the videos they liked in the test period (relevant), the videos they decided before it
  (excluded from every ranking: a recommender never re-shows a swiped video), and how many
  decisions they had made before it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from swiperec.features.config import stored_feature_config
from swiperec.features.events import PSEUDO_USER_PREFIX, load_snapshot
from swiperec.features.user_history import UserHistory
from swiperec.features.video_evidence import VideoSwipeCounts

FEW_DECISIONS = 20  # users with fewer decisions before the test period are "few decisions"


@dataclass
class EvaluationData:
    """Arrays described in the module docstring. N videos, E test examples, U test users."""

    video_ids: np.ndarray  # [N] int64, ascending
    external_ids: np.ndarray  # [N] str
    video_embeddings: np.ndarray  # [N, D] float32
    # the ranking stage (swiperec.model.layers.VideoRanking); a model without it ranks by the
    # cosine alone: bias 0, scale 1
    video_rank_bias: np.ndarray  # [N] float32
    video_rank_scale: np.ndarray  # [N] float32
    ranked: bool  # the model has the ranking stage (else it serves by cosine, no exploration)
    # the ranking stage's weights of its pair features (`RANKING_FEATURE_NAMES`), None when the
    # model has none; then `example_match` is [E, 8], `user_histories` holds each test user's
    # history at the test period's start (for the match of any video in their served list) and
    # `video_evidence` every video's swipe evidence then
    match_weights: np.ndarray | None
    # the same as serving weighs them in served lists (`served_ranking_weights`: plus the
    # exposure prior); the like/nope pair scores use `match_weights`
    served_weights: np.ndarray | None
    # what serving adds to a new release's like logit in served lists (exploration:
    # `served_new_release_bonus`)
    new_release_bonus: float
    video_evidence: np.ndarray | None  # [N, 2] float64: `VIDEO_EVIDENCE_NAMES` at test start
    genres: list  # [N] frozenset of genre names
    makers: list  # [N] frozenset holding the maker (empty when unknown)
    like_counts: np.ndarray  # [N] int64: likes before the test period
    nope_counts: np.ndarray  # [N] int64: nopes before the test period
    is_new_video: np.ndarray  # [N] bool: released at or after the validation start
    released_us: np.ndarray  # [N] int64: release time, UTC µs (the catalogue's own)
    # test examples
    example_user: np.ndarray  # [E, D] float32
    example_video_row: np.ndarray  # [E] int64
    example_label: np.ndarray  # [E] int8
    example_source: np.ndarray  # [E] str: "" (like), "nope", "sampled"
    example_user_key: np.ndarray  # [E] str
    # test users (those with at least one test example)
    user_keys: np.ndarray  # [U] str
    user_embeddings: np.ndarray  # [U, D] float32: as of the user's first test example
    relevant: list  # [U] int64 arrays: rows of videos liked in the test period
    excluded: list  # [U] int64 arrays: rows of videos decided before the test period
    decisions_before: np.ndarray  # [U] int64
    example_match: np.ndarray | None  # [E, 8] float32
    user_histories: list | None  # [U] UserHistory
    is_pseudo: np.ndarray  # [U] bool
    # history before the test period, for the baselines: (user row, video row) of each like,
    # user rows indexing `history_user_keys` (test users first, in `user_keys` order)
    history_user_keys: np.ndarray
    history_like_user: np.ndarray
    history_like_video: np.ndarray
    test_start: str
    validation_start: str
    snapshot_content_hash: str | None

    def rows_of(self, video_ids) -> np.ndarray:
        """Catalogue rows of `video_ids`; KeyError for an id not in the catalogue."""
        ids = np.asarray(video_ids, dtype=np.int64)
        rows = np.searchsorted(self.video_ids, ids)
        rows = np.minimum(rows, len(self.video_ids) - 1)
        if not np.array_equal(self.video_ids[rows], ids):
            raise KeyError("an example names a video that is not in the snapshot's catalogue")
        return rows


def iso_us(iso: str) -> int:
    return int(np.datetime64(iso.rstrip("Z"), "us").astype(np.int64))


def load_evaluation_data(
    model_dir: str, examples_dir: str, transform_dir: str, snapshot: str, period: str = "test"
):
    """Embed the test period with the model in `model_dir` (its `.keras` towers) over the
    examples and transform graph the transform step wrote, and read the history before it from
    `snapshot`, the snapshot the examples were made from. Reads these four and nothing else.
    `period="validation"` measures the validation period instead, as of its start (its
    examples, users and likes; `test_start` then holds the validation start, and new videos are
    those released from one period's length before it): for choosing serving settings without
    looking at the test period."""
    import tensorflow as tf
    import tensorflow_transform as tft

    from swiperec.features.transform import read_transform_metadata
    from swiperec.model.data import (
        Catalogue,
        card_ranking_weights,
        example_dataset,
        served_new_release_bonus,
        served_ranking_weights,
    )
    from swiperec.model.embed import embed_catalogue, embed_examples, rank_catalogue
    from swiperec.model.export import load_keras_tower
    from swiperec.model.train import read_model_card

    meta = read_transform_metadata(examples_dir)
    card = read_model_card(model_dir)  # a clear error for a model that did not finish
    match_weights = card_ranking_weights(card)
    served_weights = served_ranking_weights(card)
    config = stored_feature_config(meta["config"])
    test_start = meta["split_boundaries"]["test_start"]
    validation_start = meta["split_boundaries"]["validation_start"]
    test_start_us, validation_start_us = iso_us(test_start), iso_us(validation_start)
    if period not in ("test", "validation"):
        raise ValueError(f"period: 'test' or 'validation', got {period!r}")
    # New videos: released from one validation period's length before the test start on
    new_from_us = validation_start_us
    if period == "validation":  # the period measured, as of its start; new videos alike
        new_from_us = validation_start_us - (test_start_us - validation_start_us)
        test_start, test_start_us = validation_start, validation_start_us

    catalogue, events, snapshot_meta = load_snapshot(snapshot, config)
    made_from = {
        "the examples": meta["snapshot"]["content_hash"],
        "the transform graph": read_transform_metadata(transform_dir)["snapshot"]["content_hash"],
    }
    for what, content_hash in made_from.items():
        if content_hash != snapshot_meta.content_hash:
            raise ValueError(
                f"{what} were not made from the snapshot at {snapshot} (content hash "
                f"{content_hash} vs {snapshot_meta.content_hash}): give the snapshot, the "
                "transform graph and the examples of one transform run"
            )
    outputs = {g: tft.TFTransformOutput(os.path.join(transform_dir, g)) for g in ("user", "video")}
    table = Catalogue.load(examples_dir, outputs["video"].transformed_feature_spec(), {})
    user_tower = load_keras_tower(os.path.join(model_dir, "user_tower.keras"))
    video_tower = load_keras_tower(os.path.join(model_dir, "video_tower.keras"))
    ranker = os.path.join(model_dir, "video_ranker.keras")
    ranker = load_keras_tower(ranker) if tf.io.gfile.exists(ranker) else None

    # Video embeddings and ranking terms in catalogue (video_id) order.
    embedded = embed_catalogue(video_tower, table)
    order = np.searchsorted(table.video_ids, catalogue.video_id)
    if not np.array_equal(table.video_ids[order], catalogue.video_id):
        raise ValueError("the transformed catalogue and the snapshot's catalogue differ")
    video_embeddings = embedded[order]
    ranking = np.tile(np.float32([0.0, 1.0]), (len(order), 1))
    if ranker is not None:
        ranking = rank_catalogue(ranker, table)[order]

    before = events.time_us < test_start_us
    like_counts, nope_counts = (
        np.bincount(
            catalogue.index_of(events.video_id[before & (events.label == label)]),
            minlength=len(catalogue),
        ).astype(np.int64)
        for label in (1, 0)
    )

    spec = outputs["user"].transformed_feature_spec()
    examples = embed_examples(
        user_tower,
        example_dataset(examples_dir, period, spec, table, batch_size=4096),
    )
    example_rows = catalogue.index_of(examples.video_id)
    if match_weights is not None and examples.match is None:
        raise ValueError(
            "the model weighs match features but these examples lack some of them or the "
            "videos' swipe evidence (made by an older transform): re-run `swiperec transform`"
        )

    # Test users, in order of first appearance, each as of their first test example.
    times = examples.example_time_us
    order_in_time = np.lexsort((times, examples.user_key))
    keys_sorted = examples.user_key[order_in_time]
    first = np.concatenate([[True], keys_sorted[1:] != keys_sorted[:-1]])
    user_keys = keys_sorted[first]
    user_embeddings = examples.user[order_in_time[first]]
    user_index = {key: i for i, key in enumerate(user_keys.tolist())}

    relevant = [[] for _ in user_keys]
    for key, row, label in zip(examples.user_key.tolist(), example_rows.tolist(),
                               examples.label.tolist(), strict=True):  # fmt: skip
        if label == 1:
            relevant[user_index[key]].append(row)

    excluded = [np.empty(0, np.int64) for _ in user_keys]
    decisions_before = np.zeros(len(user_keys), np.int64)
    history_keys = list(user_keys.tolist())
    history_index = dict(user_index)
    like_user, like_video = [], []
    histories = None if match_weights is None else [None] * len(user_keys)
    for key, is_pseudo, rows in events.user_slices():
        early = rows.start + int(np.searchsorted(events.time_us[rows], test_start_us))
        decided = catalogue.index_of(events.video_id[rows.start : early])
        if key in user_index:
            u = user_index[key]
            excluded[u] = np.unique(decided)
            decisions_before[u] = len(decided)
            if histories is not None:
                histories[u] = UserHistory(catalogue, config, is_pseudo)
                histories[u].extend_at_positions(
                    decided.tolist(),
                    events.label[rows.start : early].tolist(),
                    events.time_us[rows.start : early].tolist(),
                )
        liked = decided[events.label[rows.start : early] == 1]
        if len(liked):
            if key not in history_index:
                history_index[key] = len(history_keys)
                history_keys.append(key)
            like_user.append(np.full(len(liked), history_index[key], np.int64))
            like_video.append(liked)
    # A relevant video the user had already decided can never be recommended: not relevant.
    relevant = [
        np.setdiff1d(np.unique(np.asarray(r, np.int64)), excluded[u])
        for u, r in enumerate(relevant)
    ]
    return EvaluationData(
        video_ids=catalogue.video_id,
        external_ids=catalogue.external_id,
        video_embeddings=video_embeddings,
        video_rank_bias=ranking[:, 0],
        video_rank_scale=ranking[:, 1],
        ranked=ranker is not None,
        match_weights=match_weights,
        served_weights=served_weights,
        new_release_bonus=served_new_release_bonus(card),
        video_evidence=None
        if match_weights is None
        else VideoSwipeCounts(catalogue, events).evidence(np.arange(len(catalogue)), test_start_us),
        genres=[frozenset(g) for g in catalogue.genres],
        makers=[frozenset([m]) if m else frozenset() for m in catalogue.maker],
        like_counts=like_counts,
        nope_counts=nope_counts,
        is_new_video=catalogue.released_us >= new_from_us,
        released_us=np.asarray(catalogue.released_us, np.int64),
        example_user=examples.user,
        example_video_row=example_rows,
        example_label=examples.label,
        example_source=examples.negative_source,
        example_user_key=examples.user_key,
        user_keys=user_keys,
        user_embeddings=user_embeddings,
        relevant=relevant,
        excluded=excluded,
        decisions_before=decisions_before,
        example_match=None if match_weights is None else examples.match,
        user_histories=histories,
        is_pseudo=np.array([k.startswith(PSEUDO_USER_PREFIX) for k in user_keys.tolist()]),
        history_user_keys=np.array(history_keys, dtype=object),
        history_like_user=np.concatenate(like_user) if like_user else np.empty(0, np.int64),
        history_like_video=np.concatenate(like_video) if like_video else np.empty(0, np.int64),
        test_start=test_start,
        validation_start=validation_start,
        snapshot_content_hash=meta["snapshot"].get("content_hash"),
    )
