"""The monitoring configuration: bucket size, outcome attribution, retention, alert rules.

    config = load_config()                 # the packaged default.toml
    config = load_config("monitoring.toml")

A TOML file (see `default.toml`, which documents every field). Unknown keys and bad values are
errors that name the field, so a typo never silently disables a rule.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from swiperec.errors import SwiperecError

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")
KINDS = ("below", "above", "above_abs", "relative_drop", "relative_rise")
# What metrics.sql writes (plus source_share:<source>); a rule on another name would never fire.
METRICS = frozenset({
    "served_items", "swipe_through", "like_rate", "coverage", "novelty", "popularity_pct",
    "requests", "hit_rate", "likes_per_session", "maker_diversity", "genre_diversity",
    "embedding_diversity", "requests_logged", "error_rate", "latency_p50_ms", "latency_p95_ms",
    "latency_p99_ms", "freshness_p50_s", "freshness_p95_s", "without_embedding_share",
    "swipe_like_rate", "drift_like_rate", "drift_activity", "drift_genre_tv",
})  # fmt: skip
SEGMENTS = ("all", "user:", "source:", "video:")


class ConfigError(SwiperecError):
    """The monitoring configuration cannot be used; the message names the field."""


@dataclass(frozen=True)
class Buckets:
    seconds: int = 3600
    attribution_seconds: int = 1800
    settle_seconds: int = 1800
    session_gap_seconds: int = 1800
    new_user_days: int = 7
    new_video_days: int = 30


@dataclass(frozen=True)
class Retention:
    served_days: int = 90
    partitions_ahead_days: int = 3


@dataclass(frozen=True)
class AlertRule:
    name: str
    metric: str
    kind: str
    threshold: float
    min_samples: int = 100
    cooldown_buckets: int = 6
    baseline_buckets: int = 6
    min_baseline_buckets: int = 3
    model_version: str = "*"
    route: str = "*"
    segment: str = "all"
    severity: str = "warning"


@dataclass(frozen=True)
class MonitoringConfig:
    buckets: Buckets = field(default_factory=Buckets)
    retention: Retention = field(default_factory=Retention)
    alerts: tuple[AlertRule, ...] = ()
    source: str = ""  # the file it was read from


def load_config(path: str | Path | None = None) -> MonitoringConfig:
    """Read and check a monitoring TOML file (default: the packaged `default.toml`)."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read the monitoring config {path}: {err}") from None
    unknown = set(raw) - {"buckets", "retention", "alerts"}
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)}")
    buckets = _section(Buckets, raw.get("buckets", {}), f"{path} [buckets]")
    retention = _section(Retention, raw.get("retention", {}), f"{path} [retention]")
    for owner, values in (("buckets", buckets), ("retention", retention)):
        for f in fields(values):
            if getattr(values, f.name) < (1 if f.name in ("seconds", "served_days") else 0):
                raise ConfigError(f"{path} [{owner}] {f.name} must be positive")
    if buckets.settle_seconds < buckets.attribution_seconds:
        raise ConfigError(
            f"{path} [buckets] settle_seconds must be at least attribution_seconds: an alert on "
            "a bucket whose outcomes are still arriving would judge it on part of its data"
        )
    rules = []
    for i, entry in enumerate(raw.get("alerts", [])):
        where = f"{path} [[alerts]] #{i + 1}"
        rule = _section(AlertRule, entry, where)
        if rule.metric not in METRICS and not rule.metric.startswith("source_share:"):
            raise ConfigError(f"{where}: unknown metric {rule.metric!r}")
        if rule.segment != "all" and not rule.segment.startswith(SEGMENTS[1:]):
            raise ConfigError(f"{where}: unknown segment {rule.segment!r}")
        if rule.kind not in KINDS:
            raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {rule.kind!r}")
        if rule.kind.startswith("relative") and not 0 < rule.threshold < 10:
            raise ConfigError(f"{where}: a relative threshold is a fraction, got {rule.threshold}")
        if rule.min_samples < 1 or rule.cooldown_buckets < 0 or rule.min_baseline_buckets < 1:
            raise ConfigError(f"{where}: min_samples, min_baseline_buckets >= 1, cooldown >= 0")
        rules.append(rule)
    names = [r.name for r in rules]
    if len(names) != len(set(names)):
        raise ConfigError(f"{path}: alert names must be unique, got {names}")
    return MonitoringConfig(buckets, retention, tuple(rules), str(path))


def _section(cls, values: dict, where: str):
    names = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    converted = {}
    for key, value in values.items():
        expected = names[key].type
        if expected == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kind = {"int": int, "float": float, "str": str}[expected]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be {expected}, got {value!r}")
        converted[key] = value
    try:
        return cls(**converted)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None
