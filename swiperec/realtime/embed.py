"""Re-embed users and videos from the live database into every version in use, inside the
caller's transaction: what the worker does per claimed batch and the endpoint per request.

    models = Models().current(cur)
    written = embed_and_upsert(cur, models, users=["0b5e..."], videos=[123])
    conn.commit()

Each user's and video's key is held with a transaction-level advisory lock (`lock_keys`) from
before its inputs are read until the commit, so two writers of one key (two workers, a worker
and the endpoint) take turns, and the one that commits last read the newer data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from swiperec.embeddings import store
from swiperec.embeddings.towers import embed_users, embed_videos_ranked
from swiperec.realtime import source

# The advisory lock of one queue key: the same expression in the worker's claim (queue.py).
KEY_LOCK_SQL = "hashtextextended(%s || ':' || %s, 0)"


@dataclass
class Embedded:
    """What one call wrote: per version, the user keys and video ids and their vectors."""

    users: dict[str, tuple[list, np.ndarray]] = field(default_factory=dict)
    videos: dict[str, tuple[list, np.ndarray]] = field(default_factory=dict)
    user_states: dict[str, tuple[int, int]] = field(default_factory=dict)
    as_of_us: int = 0

    @property
    def rows(self) -> int:
        return sum(len(k) for k, _ in (*self.users.values(), *self.videos.values()))


def lock_keys(cur, kind: str, keys: list, wait: bool = True) -> list:
    """Take the advisory lock of each key (released at commit); with `wait=False`, only the keys
    nobody else holds are taken and returned."""
    taken = []
    for key in keys:
        function = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
        cur.execute(f"select {function}({KEY_LOCK_SQL})", (kind, str(key)))
        if wait or cur.fetchone()[0]:
            taken.append(key)
    return taken


def embed_and_upsert(
    cur,
    models,
    users: list[str] = (),
    videos: list[int] = (),
    as_of_us: int | None = None,
    skip_states: dict[str, tuple[int, int]] | None = None,
    only_with_history: bool = False,
) -> Embedded:
    """Embed `users` (UUID strings) and `videos` (ids) with each model of `models` (see
    `swiperec.realtime.models`) and upsert the vectors into that version's ready sets.

    `as_of_us`: the time the features describe (default: the server's clock once the inputs are
    read). `skip_states`: user -> (decisions, highest decision id) already embedded; a user whose
    history is unchanged is not embedded again; with `only_with_history`, nor is a user without
    decisions. Videos that no longer exist are skipped.
    The caller holds the keys' locks (`lock_keys`) and commits.
    """
    out = Embedded()
    user_inputs = source.read_users(cur, list(users)) if users else None
    catalogue = source.read_videos(cur, list(videos)) if videos else None
    out.as_of_us = as_of_us if as_of_us is not None else source.clock_us(cur)
    if user_inputs is not None:
        out.user_states = user_inputs.state
        todo = [
            entry for entry in user_inputs.users
            if (skip_states is None or skip_states.get(entry[0]) != user_inputs.state[entry[0]])
            and (not only_with_history or user_inputs.state[entry[0]][0] > 0)
        ]  # fmt: skip
    for model in models:
        if user_inputs is not None and todo and "user" in model.kinds:
            keys, vectors = embed_users(
                model.towers, user_inputs.catalogue, model.config, todo, out.as_of_us
            )
            store.upsert_rows(cur, model.version, "user", keys, vectors)
            out.users[model.version] = (keys, vectors)
        if catalogue is not None and len(catalogue) and "video" in model.kinds:
            ids, vectors, ranking = embed_videos_ranked(
                model.towers, catalogue, range(len(catalogue)), out.as_of_us
            )
            store.upsert_rows(cur, model.version, "video", ids, vectors, ranking)
            out.videos[model.version] = (ids, vectors)
    return out
