"""A video's own swipe evidence as of any time: how real users answered it so far.

The towers learn what a video is like; how the app's users actually answered it is evidence
that keeps arriving after training. The ranking stage weighs two figures per candidate, as of
the example's time in training and as of the request in serving:

- `video_like_logodds`: ln((likes + 1) / (nopes + 1)), the video's smoothed like log-odds;
- `video_swipes`: ln(1 + likes + nopes), how much evidence that is.

Counted over real users' votes, one per user and video: their latest swipe on it (a repeat
swipe replaces the earlier vote), from the swipes strictly before the time asked: a swipe
never sees itself or anything at its own instant. Serving reads the same counts
from `swiperec_private.video_swipe_counts`, kept live by triggers on user_video_decisions
(supabase/migrations/20261208000000_video_swipe_counts.sql). Reviews are left out: serving
would need the rating thresholds of the model that is serving. (The popular fallback's
`video_popularity` counts something else: each user's latest like plus high ratings, refreshed
with each embedding refresh.) The snapshot's parser drops no swipe the database holds: the
table's constraints already refuse what it would reject.
"""

from __future__ import annotations

import math

import numpy as np

from swiperec.features.events import Catalogue, Events
from swiperec.features.user_history import MATCH_FEATURE_NAMES

# In this order everywhere: the ranking features after the match with the user's history.
VIDEO_EVIDENCE_NAMES = ("video_like_logodds", "video_swipes")
# The ranking stage's pair features (`TrainConfig.match_features`): the user's match with the
# video, then the video's own evidence; a model trained without the evidence
# (`TrainConfig.video_evidence` off) weighs it 0.
RANKING_FEATURE_NAMES = (*MATCH_FEATURE_NAMES, *VIDEO_EVIDENCE_NAMES)


def evidence(likes, nopes) -> np.ndarray:
    """[..., 2] float64: `VIDEO_EVIDENCE_NAMES` of like and nope counts (any shape)."""
    likes = np.asarray(likes, dtype=np.float64)
    nopes = np.asarray(nopes, dtype=np.float64)
    return np.stack([np.log((likes + 1.0) / (nopes + 1.0)), np.log1p(likes + nopes)], axis=-1)


class VideoSwipeCounts:
    """Every video's real-user votes, answering likes and nopes before any time.

    A user's vote on a video is their latest swipe on it: a repeat swipe replaces the earlier
    vote rather than adding one, so no account can move a video's evidence by swiping it
    again and again. Holds (E,) arrays of the votes' changes sorted by (catalogue position,
    time): their running sums, each video's slice of them and one sorted key per change, so
    any number of (video, time) queries are one `searchsorted`. Picklable; a side input of the
    example builder, like the negative sampler.
    """

    def __init__(self, catalogue: Catalogue, events: Events):
        real = ~np.asarray(events.is_pseudo, dtype=bool)
        users = np.unique(np.asarray(events.user_key[real]), return_inverse=True)[1]
        changes = vote_changes(catalogue.index_of(events.video_id[real]), users,
                               events.time_us[real], events.label[real])  # fmt: skip
        self._build(len(catalogue), changes)

    @classmethod
    def from_changes(cls, videos: int, changes: tuple[np.ndarray, ...]) -> VideoSwipeCounts:
        """The counts of a catalogue of `videos` from `vote_changes` (concatenated over users
        in any order: what the transform's workers collect, one user at a time)."""
        counts = cls.__new__(cls)
        counts._build(videos, changes)
        return counts

    def _build(self, videos: int, changes: tuple[np.ndarray, ...]) -> None:
        position, time_us, d_likes, d_nopes = changes
        order = np.lexsort((time_us, position))
        # the change of likes over each video's first k swipes: _likes[start + k] - _likes[start]
        self._likes = np.concatenate([[0], np.cumsum(d_likes[order])])
        self._nopes = np.concatenate([[0], np.cumsum(d_nopes[order])])
        self._start = np.searchsorted(position[order], np.arange(videos + 1))
        # One sorted int64 key per change, (position, rank of its time among the distinct
        # times), so a whole array of (position, time) queries is one `searchsorted`: a
        # change is before a time exactly when its time's rank is below the time's.
        self._times = np.unique(time_us)
        self._key = position[order] * (len(self._times) + 1) + np.searchsorted(
            self._times, time_us[order]
        )

    def counts_before(self, positions, at_us) -> tuple[np.ndarray, np.ndarray]:
        """(likes, nopes), int64 arrays shaped like `positions`: the real users' votes (their
        latest swipes) on the videos at catalogue `positions`, from the swipes strictly before
        `at_us` (one time, or one per position)."""
        positions = np.asarray(positions, dtype=np.int64)
        at = np.broadcast_to(np.asarray(at_us, dtype=np.int64), positions.shape)
        start = self._start[positions]
        query = positions * (len(self._times) + 1) + np.searchsorted(self._times, at)
        before = np.searchsorted(self._key, query, side="left")  # start + changes before
        likes = self._likes[before] - self._likes[start]
        return likes, self._nopes[before] - self._nopes[start]

    def evidence_at(self, position: int, at_us: int) -> tuple[float, float]:
        """`VIDEO_EVIDENCE_NAMES` of the video at catalogue `position` as of `at_us`, for one
        video: plain floats."""
        likes, nopes = (int(count[0]) for count in self.counts_before([position], at_us))
        return math.log((likes + 1.0) / (nopes + 1.0)), math.log1p(likes + nopes)

    def evidence(self, positions, at_us) -> np.ndarray:
        """[len(positions), 2] float64: `VIDEO_EVIDENCE_NAMES` as of `at_us`."""
        return evidence(*self.counts_before(positions, at_us))


def vote_changes(positions, users, times_us, labels) -> tuple[np.ndarray, ...]:
    """Real users' swipes -> (catalogue position, time_us, change of likes, change of nopes),
    (E,) int64 arrays: each swipe adds its vote and takes back the same user's previous vote
    on the video. `users` tells users apart (any integer code); a user's swipes may come in
    any order, but all of them at once."""
    position = np.asarray(positions, dtype=np.int64)
    users = np.asarray(users, dtype=np.int64)
    time_us = np.asarray(times_us, dtype=np.int64)
    like = np.asarray(labels, dtype=np.int64)
    # The label breaks ties: two swipes of one video at one instant count in one order always.
    order = np.lexsort((like, time_us, position, users))
    same_pair = np.zeros(len(order), dtype=bool)
    same_pair[1:] = (users[order][1:] == users[order][:-1]) & (
        position[order][1:] == position[order][:-1]
    )
    previous = np.zeros(len(order), dtype=np.int64)  # the previous vote: +1 like, -1 nope
    previous[1:] = np.where(same_pair[1:], 2 * like[order][:-1] - 1, 0)
    d_likes = np.empty(len(order), dtype=np.int64)
    d_nopes = np.empty(len(order), dtype=np.int64)
    d_likes[order] = like[order] - (previous == 1)
    d_nopes[order] = (1 - like[order]) - (previous == -1)
    return position, time_us, d_likes, d_nopes
