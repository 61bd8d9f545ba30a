"""The synthetic data's ground truth: the oracle like probability of any (person, video) pair.

`P(like | person, video) = sigmoid(a * <taste, video_vector> + bias + b * quality + c)`, for
real users (UUIDs) and review pseudo-users (reviewer ids) alike. An evaluator holding only ids
asks `p_like(user_keys, video_external_ids)`; that probability is the ceiling a model's ranking
can reach on this data. Reviewers' ratings come from the same logit: `rating_probabilities`
gives each rating's probability, and `mean_p_like_users` app users' mean like probability of
videos (e.g. of the videos a reviewer rated 3).
"""

from __future__ import annotations

import uuid
from dataclasses import MISSING, dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np

_CHUNK = 500_000  # rows per gather, so 3M pairs never hold (3M, d) float64 arrays at once


def uuid_strings(user_ids: np.ndarray) -> list[str]:
    """Canonical lower-case UUID strings of (U, 16) uint8 raw UUID bytes."""
    raw = np.ascontiguousarray(user_ids, dtype=np.uint8).reshape(-1, 16)
    return [str(uuid.UUID(bytes=row.tobytes())) for row in raw]


@dataclass(eq=False)
class GroundTruth:
    """Latent parameters of a synthetic data set.

    Videos: `video_external_ids` (N,) str, row i is video id i + 1; `video_vectors` (N, d);
    `video_quality` (N,). Real users: `user_ids` (U, 16) uint8 UUID bytes, `user_taste` (U, d),
    `user_bias` (U,). Pseudo-users: `reviewer_ids` (P,) str, `reviewer_taste` (P, d),
    `reviewer_bias` (P,). Scalars `a`, `b`, `c` of the logit; `rating_thresholds` (4,) plus the
    reviewer's `reviewer_rating_offset` (P,) cut the latent review score `logit + Logistic(0, 1)`
    into ratings 1-5. A reviewer likes a video (as an app user would swipe) when the score is
    above 0; in the standard data set the third threshold is 0 and the offsets are 0, so that
    is exactly a rating >= 4 (with the timeline option it is not).
    """

    video_external_ids: np.ndarray
    video_vectors: np.ndarray
    video_quality: np.ndarray
    user_ids: np.ndarray
    user_taste: np.ndarray
    user_bias: np.ndarray
    reviewer_ids: np.ndarray
    reviewer_taste: np.ndarray
    reviewer_bias: np.ndarray
    a: float
    b: float
    c: float
    rating_thresholds: np.ndarray
    # Added with the timeline option; ground truths saved before it load with zeros.
    reviewer_rating_offset: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.reviewer_rating_offset is None:
            self.reviewer_rating_offset = np.zeros(len(self.reviewer_ids))

    def logit_users(self, user_index: np.ndarray, video_id: np.ndarray) -> np.ndarray:
        """Like logits (float64) of element-wise pairs: user row index, 1-based video id."""
        return self._logits(self.user_taste, self.user_bias, user_index, video_id)

    def logit_reviewers(self, reviewer_index: np.ndarray, video_id: np.ndarray) -> np.ndarray:
        """Like logits (float64) of element-wise pairs: reviewer row index, 1-based video id."""
        return self._logits(self.reviewer_taste, self.reviewer_bias, reviewer_index, video_id)

    def p_like_users(self, user_index: np.ndarray, video_id: np.ndarray) -> np.ndarray:
        """P(like) (float32) of element-wise pairs: user row index, 1-based video id."""
        return sigmoid(self.logit_users(user_index, video_id)).astype(np.float32)

    def p_like_reviewers(self, reviewer_index: np.ndarray, video_id: np.ndarray) -> np.ndarray:
        """P(like) (float32) of element-wise pairs: reviewer row index, 1-based video id.

        The reviewer's like as an app user would swipe: P(latent score > 0). In the standard
        data set that is P(rating >= 4); in general see `rating_probabilities`.
        """
        return sigmoid(self.logit_reviewers(reviewer_index, video_id)).astype(np.float32)

    def rating_probabilities(self, reviewer_index: np.ndarray, video_id: np.ndarray) -> np.ndarray:
        """(n, 5) float64: P(rating = 1..5) of element-wise pairs: reviewer row index, 1-based
        video id (the rating model the generator draws from)."""
        logit = self.logit_reviewers(reviewer_index, video_id)
        offset = self.reviewer_rating_offset[np.asarray(reviewer_index, dtype=np.int64)]
        above = sigmoid(logit[:, None] - self.rating_thresholds[None, :] - offset[:, None])
        above = np.concatenate([np.ones((len(logit), 1)), above, np.zeros((len(logit), 1))], 1)
        return above[:, :-1] - above[:, 1:]

    def mean_p_like_users(self, video_id: np.ndarray) -> np.ndarray:
        """(n,) float64: the mean P(like) over all app users of each 1-based video id (NaN when
        there are no app users): how much app users like a video, e.g. one a reviewer rated."""
        rows = np.asarray(video_id, dtype=np.int64) - 1
        if len(rows) and not (rows.min() >= 0 and rows.max() < len(self.video_quality)):
            raise IndexError(f"video id outside 1..{len(self.video_quality)}")
        users = len(self.user_bias)
        if users == 0:
            return np.full(len(rows), np.nan)
        unique, inverse = np.unique(rows, return_inverse=True)
        means = np.empty(len(unique))
        step = max(1, 2_000_000 // users)
        for s in range(0, len(unique), step):
            v = unique[s : s + step]
            logit = (
                self.a * (self.video_vectors[v] @ self.user_taste.T)
                + self.user_bias[None, :]
                + (self.b * self.video_quality[v] + self.c)[:, None]
            )
            means[s : s + step] = sigmoid(logit).mean(axis=1)
        return means[inverse]

    def p_like(self, user_key: list[str], video_external_id: list[str]) -> np.ndarray:
        """P(like) (float32) of element-wise pairs given by ids, seen in the data or not.

        `user_key`: a user's UUID string or a reviewer id; raises KeyError on unknown ids.
        """
        if len(user_key) != len(video_external_id):
            raise ValueError(
                f"user_key and video_external_id differ in length "
                f"({len(user_key)} != {len(video_external_id)})"
            )
        try:
            video_id = np.array([self._video_row[v] for v in video_external_id], dtype=np.int64)
        except KeyError as error:
            raise KeyError(f"unknown video external id {error.args[0]!r}") from None
        is_user = np.zeros(len(user_key), dtype=bool)
        row = np.zeros(len(user_key), dtype=np.int64)
        for i, key in enumerate(user_key):
            found = self._user_row.get(key.lower())
            if found is not None:
                is_user[i], row[i] = True, found
            elif (found := self._reviewer_row.get(key)) is not None:
                row[i] = found
            else:
                raise KeyError(f"unknown user or reviewer id {key!r}")
        p = np.empty(len(user_key), dtype=np.float32)
        p[is_user] = self.p_like_users(row[is_user], video_id[is_user] + 1)
        p[~is_user] = self.p_like_reviewers(row[~is_user], video_id[~is_user] + 1)
        return p

    def video_rows(self, video_external_id) -> np.ndarray:
        """Rows (int64) of the ground truth's video arrays for external ids; KeyError if unknown."""
        try:
            return np.array([self._video_row[v] for v in video_external_id], dtype=np.int64)
        except KeyError as error:
            raise KeyError(f"unknown video external id {error.args[0]!r}") from None

    def person_logits(self, user_key: str, video_rows: np.ndarray) -> np.ndarray:
        """Like logits (float64) of one person (UUID string or reviewer id) against many videos
        (rows from `video_rows`): the oracle's ranking of a whole catalogue in one product."""
        if (row := self._user_row.get(user_key.lower())) is not None:
            taste, bias = self.user_taste[row], self.user_bias[row]
        elif (row := self._reviewer_row.get(user_key)) is not None:
            taste, bias = self.reviewer_taste[row], self.reviewer_bias[row]
        else:
            raise KeyError(f"unknown user or reviewer id {user_key!r}")
        rows = np.asarray(video_rows, dtype=np.int64)
        return (
            self.a * (self.video_vectors[rows] @ taste)
            + bias
            + self.b * self.video_quality[rows]
            + self.c
        )

    def save(self, path: str | Path) -> Path:
        """Write every field to one uncompressed `.npz`; returns the path written."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}
        arrays["video_external_ids"] = np.asarray(self.video_external_ids, dtype=str)
        arrays["reviewer_ids"] = np.asarray(self.reviewer_ids, dtype=str)
        np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> GroundTruth:
        """Read what `save` wrote; the result equals the saved ground truth exactly."""
        with np.load(path, allow_pickle=False) as stored:
            values = {
                f.name: stored[f.name]
                for f in fields(cls)
                if f.name in stored.files or f.default is MISSING
            }
        for scalar in ("a", "b", "c"):
            values[scalar] = float(values[scalar])
        return cls(**values)

    def equals(self, other: GroundTruth) -> bool:
        """True when every field is identical (arrays element-wise, same dtype and shape)."""
        return all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name))
            and np.asarray(getattr(self, f.name)).dtype == np.asarray(getattr(other, f.name)).dtype
            for f in fields(self)
        )

    @cached_property
    def _video_row(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.video_external_ids.tolist())}

    @cached_property
    def _user_row(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(uuid_strings(self.user_ids))}

    @cached_property
    def _reviewer_row(self) -> dict[str, int]:
        return {r: i for i, r in enumerate(self.reviewer_ids.tolist())}

    def _logits(
        self, taste: np.ndarray, bias: np.ndarray, index: np.ndarray, video_id: np.ndarray
    ) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        video_row = np.asarray(video_id, dtype=np.int64) - 1
        if index.shape != video_row.shape or index.ndim != 1:
            raise ValueError(
                f"expected two 1-d arrays of one length, got {index.shape} and {video_row.shape}"
            )
        if len(index) and not (index.min() >= 0 and index.max() < len(taste)):
            raise IndexError(f"person index outside 0..{len(taste) - 1}")
        if len(index) and not (video_row.min() >= 0 and video_row.max() < len(self.video_quality)):
            raise IndexError(f"video id outside 1..{len(self.video_quality)}")
        logits = np.empty(len(index), dtype=np.float64)
        for s in range(0, len(index), _CHUNK):
            i, v = index[s : s + _CHUNK], video_row[s : s + _CHUNK]
            match = np.einsum("nd,nd->n", taste[i], self.video_vectors[v])
            logits[s : s + _CHUNK] = (
                self.a * match + bias[i] + self.b * self.video_quality[v] + self.c
            )
        return logits


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float64, without overflow warnings for large |x|."""
    return np.exp(-np.logaddexp(0.0, -x))
