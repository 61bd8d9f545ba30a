"""Who swipes in a simulation: the ground truth's users, users who sign up during the run, and
the access tokens the app would hold for them."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np

from swiperec.data.synthetic_truth import GroundTruth, uuid_strings

TOKEN_LIFETIME_SECONDS = 3600  # Supabase Auth's default access-token lifetime
_TOKEN_RENEWAL_SECONDS = 3000  # a token this old is replaced, as the app refreshes its session


class Population:
    """The simulated users and, for each, the ground-truth user whose P(like) they have.

    A truth user is their own truth; a user who signs up during the run has a fresh UUID and
    the tastes of a randomly chosen truth user. Safe to use from several threads.
    """

    def __init__(self, truth: GroundTruth, participants: list[str]) -> None:
        self.truth = truth
        self.participants = list(participants)
        self._truth_of = {user: user for user in participants}
        self._lock = threading.Lock()

    @classmethod
    def sample(cls, truth: GroundTruth, count: int, rng: np.random.Generator) -> Population:
        """`count` truth users (all of them when there are fewer), chosen by `rng`."""
        everyone = uuid_strings(truth.user_ids)
        if not everyone:
            raise ValueError("the ground truth has no app users (only reviewers)")
        chosen = rng.choice(len(everyone), size=min(count, len(everyone)), replace=False)
        return cls(truth, [everyone[i] for i in sorted(chosen)])

    def sign_up(self, rng: np.random.Generator) -> tuple[str, str]:
        """A new user: (their UUID, the truth user whose tastes they have)."""
        user = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        like = uuid_strings(self.truth.user_ids[rng.integers(len(self.truth.user_ids))])[0]
        with self._lock:
            self._truth_of[user] = like
        return user, like

    def truth_user(self, user: str) -> str:
        """The truth user whose P(like) `user` has."""
        with self._lock:
            return self._truth_of[user]

    def p_like(self, user: str, truth_video: str) -> float:
        """Ground-truth P(like) of `user` for the video whose truth external id is given."""
        return float(self.truth.p_like([self.truth_user(user)], [truth_video])[0])


class AccessTokens:
    """HS256 access tokens as Supabase Auth issues them (sub, role and aud "authenticated",
    iat, exp one hour later), signed with the project's JWT secret, one per user, renewed
    before they expire."""

    def __init__(self, secret: str, clock=time.time) -> None:
        if not secret:
            raise ValueError("the JWT secret is empty")
        self._secret = secret
        self._clock = clock
        self._tokens: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def claims(self, user: str, now: float | None = None) -> dict:
        """The claims of `user`'s token issued at `now` (seconds since the epoch)."""
        issued = int(self._clock() if now is None else now)
        return {
            "sub": user,
            "role": "authenticated",
            "aud": "authenticated",
            "iat": issued,
            "exp": issued + TOKEN_LIFETIME_SECONDS,
        }

    def token(self, user: str) -> str:
        """`user`'s current token (a compact JWS)."""
        import jwt

        now = self._clock()
        with self._lock:
            held = self._tokens.get(user)
            if held is not None and now - held[0] < _TOKEN_RENEWAL_SECONDS:
                return held[1]
        token = jwt.encode(self.claims(user, now), self._secret, algorithm="HS256")
        with self._lock:
            self._tokens[user] = (now, token)
        return token

    def authorization(self, user: str) -> str:
        """The `Authorization` header value of `user`'s requests."""
        return f"Bearer {self.token(user)}"
