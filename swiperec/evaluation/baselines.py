"""Baselines the evaluator compares the two-tower model against.

Items and users are integer rows (0..N-1, 0..U-1) chosen by the caller; the baselines never see
ids or features.

- `PopularityBaseline` scores every item by how often it was liked in training, the same vector
  for every user. It is the floor: a personalised model that cannot beat "show the most liked
  videos" has learnt nothing about the user.
- `LikeRateBaseline` scores every item by the share of its training swipes that were likes,
  shrunk toward the overall like rate (an item swiped twice is no 100 % item), again the same
  for every user. Popularity counts likes, so it ranks the most shown videos first and cannot
  tell a like from a nope among what was shown; the like rate knows which videos people like
  when they see them. Where a video's general appeal drives likes more than taste does, this
  non-personalised score is a strong competitor, and a model must beat it to be worth serving.
- `MatrixFactorizationBaseline` is implicit-feedback ALS (Hu, Koren & Volinsky 2008, via the
  `implicit` library), the classic collaborative-filtering baseline. It sees only the user-item
  matrix, so it cannot score a video or a user absent from training, which the two-tower model
  can from their features. Users without training interactions fall back to popularity
  (`known_users` says which they are, so the caller can also report them separately); items
  without training interactions get near-zero factors, hence scores near 0 (`known_items`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits


def _rows(values, size: int, name: str) -> np.ndarray:
    """`values` as a 1-D int64 array, checked to lie in [0, size)."""
    rows = np.asarray(values, dtype=np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= size):
        raise ValueError(f"{name} must lie in [0, {size}), got [{rows.min()}, {rows.max()}]")
    return rows


def _weights(weights, n: int) -> np.ndarray:
    """`weights` as a float64 array of length `n` (all ones when None)."""
    if weights is None:
        return np.ones(n, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(weights) != n:
        raise ValueError(f"weights has length {len(weights)}, expected {n}")
    return weights


class _ItemScores:
    """A baseline that gives every item one score, the same for every user (set by `fit`)."""

    def __init__(self) -> None:
        self._scores: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_scores())

    def item_scores(self) -> np.ndarray:
        """float32 [N]: the score of every item."""
        if self._scores is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        return self._scores

    def scores(self, user_rows) -> np.ndarray:
        """float32 [len(user_rows), N]: the item scores repeated for every user."""
        n_users = len(np.asarray(user_rows).reshape(-1))
        return np.tile(self.item_scores(), (n_users, 1))

    def pair_scores(self, user_rows, item_rows) -> np.ndarray:
        """float32 [M]: the score of item_rows[i] for user_rows[i] (the user does not matter)."""
        items = _rows(item_rows, self.n_items, "item_rows")
        if len(np.asarray(user_rows).reshape(-1)) != len(items):
            raise ValueError("user_rows and item_rows must have the same length")
        return self.item_scores()[items]


class PopularityBaseline(_ItemScores):
    """Each item's (weighted) count of training interactions, identical for every user."""

    def fit(self, item_rows, n_items: int, weights=None) -> PopularityBaseline:
        """Count the training interactions (likes, typically) of each of `n_items` items;
        `weights` (default 1 each) are summed instead of counting 1 per interaction."""
        rows = _rows(item_rows, n_items, "item_rows")
        counts = np.bincount(rows, weights=_weights(weights, len(rows)), minlength=n_items)
        self._scores = counts.astype(np.float32)
        return self


class LikeRateBaseline(_ItemScores):
    """Each item's like rate among its training swipes, shrunk toward the overall like rate:
    `(likes + k * rate) / (likes + nopes + k)`, k = `prior_strength` and `rate` the likes over
    all swipes of all items. Identical for every user; an item never swiped scores `rate`
    (so do many: ties), and with no swipes at all every item scores 0."""

    def __init__(self, prior_strength: float = 20.0) -> None:
        super().__init__()
        if not prior_strength > 0:
            raise ValueError(f"prior_strength must be positive, got {prior_strength}")
        self.prior_strength = prior_strength

    def fit(self, like_counts, nope_counts) -> LikeRateBaseline:
        """Fit from each item's training likes and nopes ([N] counts each, in item order)."""
        likes = np.asarray(like_counts, dtype=np.float64).reshape(-1)
        nopes = np.asarray(nope_counts, dtype=np.float64).reshape(-1)
        if len(likes) != len(nopes):
            raise ValueError("like_counts and nope_counts must have the same length")
        if likes.size and min(likes.min(), nopes.min()) < 0:
            raise ValueError("like_counts and nope_counts must not be negative")
        swipes = likes + nopes
        rate = likes.sum() / swipes.sum() if swipes.sum() else 0.0
        k = self.prior_strength
        self._scores = ((likes + k * rate) / (swipes + k)).astype(np.float32)
        return self


class MatrixFactorizationBaseline:
    """Implicit-feedback ALS on the user-item matrix of confidences 1 + alpha * weight.

    After `fit`, `user_factors` [U, f] and `item_factors` [N, f] are float32 numpy arrays and a
    user's scores are `user_factors[u] @ item_factors.T`. Users with no training interaction
    are scored by the popularity baseline fitted on the same interactions (counts, on another
    scale than the dot products: compare rankings within a user, or report them apart).
    The fit is deterministic for a fixed `seed`. `num_threads=0` lets implicit use every core.

    `regularization` is added to sums of confidences (up to 1 + alpha per like), so it must
    grow with alpha and with likes per user: with ~25 likes per user and alpha 10, the default
    0.05 overfits (no better than popularity on clustered synthetic data) while 20-100 gives
    about twice popularity's Recall@20. Tune it on validation data.
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 15,
        alpha: float = 10.0,
        seed: int = 42,
        num_threads: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.alpha = alpha
        self.seed = seed
        self.num_threads = num_threads
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.popularity = PopularityBaseline()
        self._known_users: np.ndarray | None = None
        self._known_items: np.ndarray | None = None

    def fit(
        self, user_rows, item_rows, n_users: int, n_items: int, weights=None
    ) -> MatrixFactorizationBaseline:
        """Fit ALS on interactions (user_rows[i], item_rows[i]) with `weights` (default 1);
        duplicate pairs have their weights summed before the confidence 1 + alpha * w."""
        from implicit.cpu.als import AlternatingLeastSquares

        users = _rows(user_rows, n_users, "user_rows")
        items = _rows(item_rows, n_items, "item_rows")
        if len(users) != len(items):
            raise ValueError("user_rows and item_rows must have the same length")
        w = _weights(weights, len(users))

        matrix = sp.csr_matrix((w, (users, items)), shape=(n_users, n_items), dtype=np.float64)
        matrix.sum_duplicates()  # weights of repeated pairs are summed, then turned into confidence
        matrix.data = 1.0 + self.alpha * matrix.data
        matrix = matrix.astype(np.float32)

        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=1.0,  # the confidence is already in the matrix
                iterations=self.iterations,
                num_threads=self.num_threads,
                random_state=self.seed,
            )
            model.fit(matrix, show_progress=False)

        self.user_factors = np.ascontiguousarray(_to_numpy(model.user_factors), dtype=np.float32)
        self.item_factors = np.ascontiguousarray(_to_numpy(model.item_factors), dtype=np.float32)
        self._known_users = np.bincount(users, minlength=n_users) > 0
        self._known_items = np.bincount(items, minlength=n_items) > 0
        self.popularity.fit(items, n_items, w)
        return self

    def _check_fitted(self) -> None:
        if self.user_factors is None:
            raise RuntimeError("MatrixFactorizationBaseline is not fitted; call fit() first")

    def known_users(self, user_rows) -> np.ndarray:
        """bool [len(user_rows)]: whether each user had training interactions (has factors)."""
        self._check_fitted()
        return self._known_users[_rows(user_rows, len(self._known_users), "user_rows")]

    def known_items(self, item_rows) -> np.ndarray:
        """bool [len(item_rows)]: whether each item had training interactions."""
        self._check_fitted()
        return self._known_items[_rows(item_rows, len(self._known_items), "item_rows")]

    def scores(self, user_rows) -> np.ndarray:
        """float32 [len(user_rows), N]: factor dot products; popularity rows for unknown users."""
        self._check_fitted()
        users = _rows(user_rows, len(self.user_factors), "user_rows")
        out = self.user_factors[users] @ self.item_factors.T
        unknown = ~self._known_users[users]
        if unknown.any():
            out[unknown] = self.popularity.item_scores()
        return out.astype(np.float32, copy=False)

    def pair_scores(self, user_rows, item_rows) -> np.ndarray:
        """float32 [M]: the score of item_rows[i] for user_rows[i]; popularity for unknown users."""
        self._check_fitted()
        users = _rows(user_rows, len(self.user_factors), "user_rows")
        items = _rows(item_rows, len(self.item_factors), "item_rows")
        if len(users) != len(items):
            raise ValueError("user_rows and item_rows must have the same length")
        out = np.einsum("mf,mf->m", self.user_factors[users], self.item_factors[items])
        unknown = ~self._known_users[users]
        out[unknown] = self.popularity.item_scores()[items[unknown]]
        return out.astype(np.float32, copy=False)


def _to_numpy(factors) -> np.ndarray:
    """implicit's factors as numpy (GPU models hold them on the device)."""
    return factors.to_numpy() if hasattr(factors, "to_numpy") else np.asarray(factors)
