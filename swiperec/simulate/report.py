"""What a simulated run did: `Tally` counts while it runs (from many threads), `Report` is the
result, printable as text or JSON."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

_ERROR_SAMPLES = 5  # distinct error messages kept for the report


@dataclass
class Report:
    """The outcome of `simulate`. Times in seconds unless named `_ms`; rates per second.

    `status_counts`: HTTP status (as text) -> responses; `failed_requests`: requests that got no
    answer (connection error, timeout). `source_counts`: the responses' `source` (embedding,
    realtime, recent_likes, popular) -> responses. Swipes on served items and organic ones are
    counted apart, each with the likes the ground truth expects (the sum of P(like)).
    `new_user_truth`: each signed-up user's UUID -> the truth user whose P(like) they have;
    `new_video_truth`: each inserted video's external id -> the original's.
    """

    duration: float
    elapsed: float
    interrupted: bool
    target_rate: float
    requests: int
    status_counts: dict[str, int]
    failed_requests: int
    missed_arrivals: int
    latency_ms: dict[str, float]
    start_lag_ms: dict[str, float]
    source_counts: dict[str, int]
    sessions: int
    served_swipes: int
    organic_swipes: int
    likes: int
    nopes: int
    served_likes: int
    organic_likes: int
    expected_served_likes: float
    expected_organic_likes: float
    duplicate_swipes: int
    unknown_videos: int
    swipe_latency_ms: dict[str, float]
    errors: int
    error_samples: list[str]
    participants: list[str] = field(repr=False)
    new_user_truth: dict[str, str]
    new_video_truth: dict[str, str]
    function_url: str
    function_log_tail: str = ""

    @property
    def swipes(self) -> int:
        return self.served_swipes + self.organic_swipes

    @property
    def new_users(self) -> int:
        return len(self.new_user_truth)

    @property
    def new_videos(self) -> int:
        return len(self.new_video_truth)

    @property
    def achieved_rate(self) -> float:
        """Requests sent per second of the arrival window."""
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict:
        """The report as JSON-ready data (the participants' ids as a count only)."""
        data = asdict(self)
        data["participants"] = len(self.participants)
        data.update(
            swipes=self.swipes,
            new_users=self.new_users,
            new_videos=self.new_videos,
            achieved_rate=round(self.achieved_rate, 3),
        )
        return data

    def format(self) -> str:
        """The report as a few aligned lines of text."""

        def share(likes: int, total: int) -> str:
            return f"{likes / total:.1%}" if total else "-"

        def ms(values: dict[str, float]) -> str:
            return ", ".join(f"{k} {v:.1f} ms" for k, v in values.items()) or "-"

        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.status_counts.items()))
        if self.failed_requests:
            statuses += f"{', ' if statuses else ''}no answer: {self.failed_requests}"
        sources = ", ".join(f"{k} {v}" for k, v in sorted(self.source_counts.items())) or "-"
        lines = [
            f"simulated    {self.elapsed:.1f} s of {self.duration:.0f} s"
            f"{' (interrupted)' if self.interrupted else ''} against {self.function_url}",
            f"requests     {self.requests} ({statuses or 'none'}); {self.achieved_rate:.2f}/s "
            f"of {self.target_rate:g}/s; {self.missed_arrivals} arrivals found no free user",
            f"latency      {ms(self.latency_ms)}",
            f"start lag    {ms(self.start_lag_ms)}",
            f"sources      {sources}",
            f"sessions     {self.sessions} ({len(self.participants)} users taking part)",
            f"swipes       {self.swipes}: {self.likes} likes, {self.nopes} nopes; "
            f"{self.duplicate_swipes} duplicates ignored, {self.unknown_videos} unknown videos",
            f"  served     {self.served_swipes}: like share "
            f"{share(self.served_likes, self.served_swipes)}, ground truth expects "
            f"{share(self.expected_served_likes, self.served_swipes)}",
            f"  organic    {self.organic_swipes}: like share "
            f"{share(self.organic_likes, self.organic_swipes)}, ground truth expects "
            f"{share(self.expected_organic_likes, self.organic_swipes)}",
            f"swipe write  {ms(self.swipe_latency_ms)}",
            f"new videos   {self.new_videos}",
            f"new users    {self.new_users}",
            f"errors       {self.errors}",
        ]
        lines += [f"  {message}" for message in self.error_samples]
        if self.function_log_tail:
            lines += ["the Edge Function's log ends:", self.function_log_tail]
        return "\n".join(lines)


def percentiles_ms(seconds: list[float], which=(50, 95, 99)) -> dict[str, float]:
    """{"p50": ms, ...} of durations in seconds; empty for no durations."""
    if not seconds:
        return {}
    values = np.percentile(np.asarray(seconds) * 1000.0, which)
    return {f"p{p}": round(float(v), 2) for p, v in zip(which, values, strict=True)}


class Tally:
    """Counters of a running simulation; every method may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.sources: Counter[str] = Counter()
        self.expected = {"served": 0.0, "organic": 0.0}
        self.latencies: list[float] = []
        self.start_lags: list[float] = []
        self.swipe_latencies: list[float] = []
        self.error_samples: list[str] = []
        self.new_user_truth: dict[str, str] = {}
        self.new_video_truth: dict[str, str] = {}

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def request_sent(self, start_lag: float) -> None:
        with self._lock:
            self.counts["requests"] += 1
            self.start_lags.append(start_lag)

    def response(self, status: int, latency: float, source: str | None = None) -> None:
        with self._lock:
            self.statuses[str(status)] += 1
            self.latencies.append(latency)
            if source:
                self.sources[source] += 1

    def swipe(self, kind: str, like: bool, p_like: float, latency: float) -> None:
        """A swipe written: `kind` is "served" or "organic"."""
        with self._lock:
            self.counts[f"{kind}_swipes"] += 1
            self.counts[f"{kind}_likes"] += int(like)
            self.counts["likes" if like else "nopes"] += 1
            self.expected[kind] += p_like
            self.swipe_latencies.append(latency)

    def error(self, message: str) -> None:
        with self._lock:
            self.counts["errors"] += 1
            if len(self.error_samples) < _ERROR_SAMPLES and message not in self.error_samples:
                self.error_samples.append(message)

    def new_user(self, user_id: str, truth_user: str) -> None:
        with self._lock:
            self.new_user_truth[user_id] = truth_user

    def new_video(self, external_id: str, original: str) -> None:
        with self._lock:
            self.new_video_truth[external_id] = original

    def progress(self) -> dict[str, int]:
        """A few running totals, for a progress line."""
        with self._lock:
            c = self.counts
            return {
                "requests": c["requests"],
                "swipes": c["served_swipes"] + c["organic_swipes"],
                "errors": c["errors"],
                "new_videos": len(self.new_video_truth),
                "new_users": len(self.new_user_truth),
            }

    def report(self, **run) -> Report:
        """The Report of what was counted; `run` gives the fields the tally does not know
        (duration, elapsed, interrupted, target_rate, participants, function_url, ...)."""
        with self._lock:
            c = self.counts
            return Report(
                requests=c["requests"],
                status_counts=dict(self.statuses),
                failed_requests=c["failed_requests"],
                missed_arrivals=c["missed_arrivals"],
                latency_ms=percentiles_ms(self.latencies),
                start_lag_ms=percentiles_ms(self.start_lags, (50, 95, 100)),
                source_counts=dict(self.sources),
                sessions=c["sessions"],
                served_swipes=c["served_swipes"],
                organic_swipes=c["organic_swipes"],
                likes=c["likes"],
                nopes=c["nopes"],
                served_likes=c["served_likes"],
                organic_likes=c["organic_likes"],
                expected_served_likes=round(self.expected["served"], 3),
                expected_organic_likes=round(self.expected["organic"], 3),
                duplicate_swipes=c["duplicate_swipes"],
                unknown_videos=c["unknown_videos"],
                swipe_latency_ms=percentiles_ms(self.swipe_latencies, (50, 95)),
                errors=c["errors"],
                error_samples=list(self.error_samples),
                new_user_truth=dict(self.new_user_truth),
                new_video_truth=dict(self.new_video_truth),
                **run,
            )
