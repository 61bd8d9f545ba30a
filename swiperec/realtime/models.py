"""The towers of every model version in use, loaded once and kept while the version is in use.

A version is in use when serving names it: `serving_state` or an active serving route
(`swiperec_private.versions_in_use`). Real-time embedding writes into each such version's ready
sets, with that version's own towers and feature config (its model card), found through the
registry (`model_versions.model_uri`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from swiperec.embeddings.towers import load_towers
from swiperec.errors import SwiperecError
from swiperec.features.config import FeatureConfig, stored_feature_config
from swiperec.model.train import read_model_card

log = logging.getLogger(__name__)

_IN_USE = """
select u.model_version, m.model_uri,
       coalesce(array_agg(s.kind order by s.kind) filter (where s.kind is not null), '{}')
from (select distinct model_version from swiperec_private.versions_in_use) u
left join public.model_versions m on m.model_version = u.model_version
left join public.embedding_sets s on s.model_version = u.model_version and s.state = 'ready'
group by u.model_version, m.model_uri
order by u.model_version
"""


def in_use(cur) -> list[tuple[str, str | None, list[str]]]:
    """(version, model URI or None, kinds with a ready set) of every version in use."""
    cur.execute(_IN_USE)
    return [(version, uri, list(kinds)) for version, uri, kinds in cur.fetchall()]


class VersionUnavailable(SwiperecError):
    """A version in use cannot be embedded for (no model_uri, a model that does not load)."""


@dataclass
class VersionModel:
    """One version in use: its towers, feature config and the kinds whose sets are ready."""

    version: str
    model_uri: str
    towers: dict
    config: FeatureConfig
    kinds: tuple[str, ...]


class Models:
    """The loaded versions in use. `current(cur)` reads which versions are in use (one small
    query) and loads any it has not loaded yet; a version that left use is dropped. Loading is
    the slow part (seconds per SavedModel), so it happens once per version. Thread-safe."""

    def __init__(self, loader=load_towers):
        self._loader = loader
        self._loaded: dict[tuple[str, str], tuple[dict, FeatureConfig]] = {}
        self._lock = threading.Lock()
        self.problems: dict[str, str] = {}  # version -> why it cannot be embedded for

    def current(self, cur) -> list[VersionModel]:
        rows = in_use(cur)
        models, wanted, problems = [], set(), {}
        with self._lock:
            for version, uri, kinds in rows:
                if not uri:
                    problems[version] = "the registry has no model_uri for it"
                    continue
                if not kinds:
                    continue
                key = (version, uri)
                wanted.add(key)
                if key not in self._loaded:
                    try:
                        card = read_model_card(uri)
                        config = stored_feature_config(card["input"]["feature_config"])
                        self._loaded[key] = (self._loader(uri), config)
                        log.info("loaded the towers of %s from %s", version, uri)
                    except Exception as err:  # any failure to load: reported, others go on
                        problems[version] = f"its model at {uri} cannot be loaded: {err}"
                        continue
                towers, config = self._loaded[key]
                models.append(VersionModel(version, uri, towers, config, tuple(kinds)))
            for key in set(self._loaded) - wanted:
                del self._loaded[key]
            for version, problem in problems.items():
                if self.problems.get(version) != problem:
                    log.warning("version %s is in use but not embedded for: %s", version, problem)
            self.problems = problems
        return models
