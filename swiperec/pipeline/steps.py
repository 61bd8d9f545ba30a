"""What every pipeline step records about its own run, on its output artifacts' metadata.

    started = step_started()
    ...                                  # the step's work
    record_step(started, model, metrics)  # started_at, finished_at, seconds, peak_rss_mb

The registry's lineage reads these times, and the pipeline benchmark reads the memory figure,
so each step measures itself the same way locally and on a cluster.
"""

from __future__ import annotations

import os
import resource
import time
from datetime import UTC, datetime


def step_started() -> float:
    """The wall-clock start of a step (seconds since the epoch)."""
    return time.time()


def peak_rss_mb() -> int:
    """Peak resident memory of this process or of its largest finished child, in MB (Beam's
    DirectRunner works in-process; worker processes it started count when they have exited)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024)


def step_record(started: float) -> dict:
    finished = time.time()
    return {
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "seconds": round(finished - started, 2),
        "peak_rss_mb": peak_rss_mb(),
    }


def record_step(started: float, *artifacts) -> dict:
    """Stamp each artifact's metadata with the step's times and peak memory; returns them."""
    record = step_record(started)
    for artifact in artifacts:
        artifact.metadata.update({f"step/{name}": value for name, value in record.items()})
    return record


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def step_database_url(given: str = "") -> str:
    """The database a step works on: `given` (the pipeline's `database_url`), else the step's
    DATABASE_URL. Never the embedded server: inside a cluster's container that would be a
    fresh, empty database that vanishes with the step (`swiperec pipeline run --local` passes
    the embedded server's URL explicitly)."""
    url = given or os.environ.get("DATABASE_URL")
    if not url:
        raise ValueError(
            "no database for this step: set the pipeline's database_url parameter, or give the "
            "steps DATABASE_URL in their environment (e.g. from a Kubernetes secret)"
        )
    return url
