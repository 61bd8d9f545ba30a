"""Simulated app traffic against the real serving path.

Users of the generated data set, whose ground truth is known, open sessions: a session is a few
requests to the Edge Function over HTTP (`GET ?limit=10`, `Authorization: Bearer <JWT>`), each
followed by a swipe on every item served, like with the ground truth's P(like), nope otherwise;
with probability `organic` a swipe is on a random video of the catalogue instead (browsing
outside the recommendations). Swipes are written as the app writes them: one transaction each,
as the `authenticated` role with the user's claims, inserting only (video_id, decision), so
row-level security applies and the user id and the time come from the database. New videos
(copies of truth videos, whose P(like) is the original's) and new users (fresh UUIDs with a
truth user's tastes) arrive during the run.

Arrivals follow a fixed schedule: request i is due at i / rate seconds, whatever the answers
before it took, and a pool of worker threads serves them; `start_lag_ms` in the report shows
when the pool could not keep up.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import numpy as np
import psycopg2
import psycopg2.errors

from swiperec.data.synthetic_truth import GroundTruth, uuid_strings
from swiperec.db import connect
from swiperec.errors import SwiperecError
from swiperec.simulate.edge import EdgeFunction
from swiperec.simulate.report import Report, Tally
from swiperec.simulate.users import AccessTokens, Population

APPLICATION_NAME = "swiperec-simulate"
_NEW_SUFFIX = re.compile(r"^(.*)-new-[0-9]+$")  # a new video's external id: original-new-<n>
_SLICE_SECONDS = 0.25  # the scheduler looks at the stop event at least this often

# As the app swipes (see the core schema's row-level security): the authenticated role, the
# user's verified claims, and only (video_id, decision); user_id is auth.uid(), created_at now().
SWIPE_SQL = """
set local role authenticated;
select set_config('request.jwt.claims', %s, true);
insert into public.user_video_decisions (video_id, decision) values (%s, %s)
"""
NEW_VIDEO_SQL = """
insert into public.videos (external_id, title, description, genres, maker, label, series,
                           performers, release_date, duration_sec, thumbnail_url)
select %(external_id)s, title || ' 続編', description, genres, maker, label, series,
       performers, (now() at time zone 'UTC')::date, duration_sec, thumbnail_url
from public.videos where external_id = %(original)s
on conflict (external_id) do nothing
returning id
"""


class SimulationError(SwiperecError):
    """The simulation cannot run as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class SimulationOptions:
    """How much traffic, for how long. `rate`: recommendation requests per second; `duration`:
    seconds of arrivals; `users`: truth users taking part; `organic`: the share of swipes on a
    random video instead of a served one; `session_requests`: (fewest, most) requests of a
    session; `workers`: threads serving arrivals (default 2 per request/s, 4 to 32).
    `function_url` None: the simulator starts the Edge Function itself."""

    rate: float = 5.0
    duration: float = 60.0
    users: int = 200
    organic: float = 0.2
    new_videos_per_minute: float = 2.0
    new_users_per_minute: float = 1.0
    seed: int = 0
    function_url: str | None = None
    jwt_secret: str | None = None
    limit: int = 10
    session_requests: tuple[int, int] = (2, 4)
    workers: int | None = None
    request_timeout: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if not self.rate > 0:
            problems.append(f"rate must be positive, got {self.rate}")
        if not self.duration > 0:
            problems.append(f"duration must be positive, got {self.duration}")
        if self.users < 1:
            problems.append(f"users must be at least 1, got {self.users}")
        if not 0 <= self.organic <= 1:
            problems.append(f"organic must be between 0 and 1, got {self.organic}")
        if not (self.new_videos_per_minute >= 0 and self.new_users_per_minute >= 0):
            problems.append("new videos and new users per minute must not be negative")
        if not 1 <= self.limit <= 100:
            problems.append(f"limit must be from 1 to 100, got {self.limit}")
        low, high = self.session_requests
        if not 1 <= low <= high:
            problems.append(f"session_requests must be 1 <= fewest <= most, got {low, high}")
        if self.workers is not None and self.workers < 1:
            problems.append(f"workers must be at least 1, got {self.workers}")
        if not self.request_timeout > 0:
            problems.append(f"request_timeout must be positive, got {self.request_timeout}")
        if problems:
            raise ValueError("invalid SimulationOptions: " + "; ".join(problems))

    @property
    def worker_count(self) -> int:
        return self.workers or min(32, max(4, math.ceil(2 * self.rate)))


def simulate(
    database_url: str,
    truth: GroundTruth,
    options: SimulationOptions | None = None,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[float, dict], None] | None = None,
    progress_every: float = 10.0,
) -> Report:
    """Run simulated traffic against the Edge Function and the database; returns the Report.

    `truth` must be the ground truth of the data set in the database. Setting `stop` ends the
    arrivals early: requests in flight finish with their swipes, queued ones are dropped, and
    the report says `interrupted`. `progress(seconds, totals)` is called every
    `progress_every` seconds of the run.
    """
    options = options or SimulationOptions()
    stop = stop or threading.Event()
    rng = np.random.default_rng(options.seed)
    conn = connect(database_url, application_name=APPLICATION_NAME)
    try:
        videos = VideoCatalogue.load(conn, truth)
        _check_users(conn, truth)
    finally:
        conn.close()
    population = Population.sample(truth, options.users, rng)
    secret = options.jwt_secret
    if not secret:
        if options.function_url is not None:
            raise SimulationError(
                "a running function's JWT secret is needed to sign the users' tokens: "
                "pass --jwt-secret or set JWT_SECRET"
            )
        secret = secrets.token_urlsafe(32)
    with ExitStack() as stack:
        function = None
        url = options.function_url
        if url is None:
            function = stack.enter_context(EdgeFunction(database_url, secret))
            url = function.url
        run = _Run(database_url, url, population, videos, AccessTokens(secret), options,
                   stop, rng, trust_env=function is None)  # fmt: skip
        stack.callback(run.close)
        report = run.execute(progress, progress_every)
        if function is not None and (report.errors or report.failed_requests):
            report.function_log_tail = function.log_tail()
        return report


def _check_users(conn, truth: GroundTruth) -> None:
    """Refuses a ground truth whose users have no swipes in a database that has swipes."""
    with conn.cursor() as cur:
        cur.execute(
            "select exists (select 1 from public.user_video_decisions),"
            " exists (select 1 from public.user_video_decisions where user_id = any(%s::uuid[]))",
            (uuid_strings(truth.user_ids),),
        )
        any_swipes, truth_swipes = cur.fetchone()
    conn.rollback()
    if any_swipes and not truth_swipes:
        raise SimulationError(
            "none of the ground truth's users has swiped in this database: the ground truth "
            "belongs to another data set (pass --ground-truth, or load its data set)"
        )


class VideoCatalogue:
    """The catalogue's videos that have a ground truth: each video id -> the external id of the
    truth video it stands for (itself, or the original of a copy `<original>-new-<n>`).
    Videos unknown when the run starts are looked up when they are first seen."""

    def __init__(self, truth: GroundTruth, truth_of: dict[int, str]) -> None:
        self._truth_ids = set(truth.video_external_ids.tolist())
        self._truth_of: dict[int, str | None] = dict(truth_of)
        self._originals = sorted({v for v in truth_of.values()})  # truth videos in the database
        self._ids = sorted(truth_of)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, conn, truth: GroundTruth) -> VideoCatalogue:
        with conn.cursor() as cur:
            cur.execute("select id, external_id from public.videos")
            rows = cur.fetchall()
        conn.rollback()
        catalogue = cls(truth, {})
        truth_of = {i: t for i, e in rows if (t := catalogue.truth_external_id(e)) is not None}
        if not truth_of:
            raise SimulationError(
                f"none of the ground truth's {len(truth.video_external_ids):,} videos is in the "
                f"database ({len(rows):,} videos): the ground truth belongs to another data set"
            )
        return cls(truth, truth_of)

    def truth_external_id(self, external_id: str) -> str | None:
        if external_id in self._truth_ids:
            return external_id
        copy = _NEW_SUFFIX.match(external_id)
        if copy and copy.group(1) in self._truth_ids:
            return copy.group(1)
        return None

    def truth_video(self, video_id: int, conn) -> str | None:
        """The truth external id behind `video_id`; None for a video without a ground truth."""
        with self._lock:
            if video_id in self._truth_of:
                return self._truth_of[video_id]
        with conn.cursor() as cur:
            cur.execute("select external_id from public.videos where id = %s", (video_id,))
            row = cur.fetchone()
        conn.rollback()
        found = None if row is None else self.truth_external_id(row[0])
        with self._lock:
            self._truth_of[video_id] = found
            if found is not None:
                self._ids.append(video_id)
        return found

    def add(self, video_id: int, original: str) -> None:
        """A new video, a copy of the truth video `original`."""
        with self._lock:
            self._truth_of[video_id] = original
            self._ids.append(video_id)

    def random_original(self, rng: np.random.Generator) -> str:
        """A truth video in the database, to copy as a new one."""
        return self._originals[rng.integers(len(self._originals))]

    def random_video(self, rng: np.random.Generator, exclude: set[int]) -> int:
        """A video id of the catalogue (new videos included) not in `exclude`."""
        with self._lock:
            ids = self._ids
            for _ in range(100):
                video = ids[rng.integers(len(ids))]
                if video not in exclude:
                    return video
        raise SimulationError("the catalogue has no video outside the recommendations")


class _Ticker:
    """Calls `progress(seconds, totals)` every `every` seconds from `t0`, when given."""

    def __init__(self, t0: float, progress, every: float, tally: Tally) -> None:
        self.t0, self.last, self.progress, self.every, self.tally = t0, t0, progress, every, tally

    def tick(self) -> None:
        now = time.monotonic()
        if self.progress is not None and now - self.last >= self.every:
            self.last = now
            self.progress(now - self.t0, self.tally.progress())


@dataclass
class _Session:
    user: str
    requests_left: int
    rng: np.random.Generator


class _Run:
    """One run's state: the schedule (main thread), the sessions served by worker threads, the
    HTTP client, a database connection per worker thread, and the tally."""

    def __init__(self, database_url, function_url, population, videos, tokens, options, stop,
                 rng, *, trust_env) -> None:  # fmt: skip
        self.database_url = database_url
        self.function_url = function_url
        self.population: Population = population
        self.videos: VideoCatalogue = videos
        self.tokens: AccessTokens = tokens
        self.options: SimulationOptions = options
        self.stop = stop
        self.rng = rng  # the scheduler's (main thread); each session has its own
        self.tally = Tally()
        self._lock = threading.Lock()
        self._ready: deque[_Session] = deque()  # sessions waiting for their next request
        self._idle = list(population.participants)  # users not in a session
        self._sessions = itertools.count()
        self._video_numbers = itertools.count(1)
        self._local = threading.local()
        self._connections = []
        workers = options.worker_count
        self._client = httpx.Client(
            timeout=options.request_timeout, trust_env=trust_env,
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
        )  # fmt: skip
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="simulate")

    # -- the schedule (main thread) ------------------------------------------------------------

    def execute(self, progress, progress_every: float) -> Report:
        o = self.options
        streams = {  # name -> (period in seconds, phase as a share of it)
            "request": (1.0 / o.rate, 0.0),
            "video": (60.0 / o.new_videos_per_minute if o.new_videos_per_minute else math.inf, 0.5),
            "user": (60.0 / o.new_users_per_minute if o.new_users_per_minute else math.inf, 0.5),
        }  # fmt: skip
        done = dict.fromkeys(streams, 0)
        t0 = time.monotonic()
        ticker = _Ticker(t0, progress, progress_every, self.tally)
        while not self.stop.is_set():
            name = min(streams, key=lambda s: (done[s] + streams[s][1]) * streams[s][0])
            due = (done[name] + streams[name][1]) * streams[name][0]
            if due >= o.duration:
                break
            if not self._wait_until(t0 + due, ticker):
                break
            self._arrive(name, t0 + due)
            done[name] += 1
        self._wait_until(t0 + o.duration, ticker)  # the run lasts its duration, or to a stop
        elapsed = min(time.monotonic() - t0, o.duration)
        interrupted = self.stop.is_set()
        # In flight: finished. Queued behind a busy pool after a stop: dropped.
        self._executor.shutdown(wait=True, cancel_futures=interrupted)
        return self.tally.report(
            duration=o.duration, elapsed=round(elapsed, 3), interrupted=interrupted,
            target_rate=o.rate, participants=list(self.population.participants),
            function_url=self.function_url,
        )  # fmt: skip

    def _wait_until(self, deadline: float, ticker: _Ticker) -> bool:
        """Sleep until `deadline` (time.monotonic()); False when stopped first."""
        while not self.stop.is_set() and (wait := deadline - time.monotonic()) > 0:
            self.stop.wait(min(wait, _SLICE_SECONDS))
            ticker.tick()
        return not self.stop.is_set()

    def _arrive(self, name: str, due: float) -> None:
        if name == "request":
            session = self._next_session()
            if session is None:
                self.tally.count("missed_arrivals")
            else:
                self._submit(self._serve, session, due)
        elif name == "video":
            self._submit(self._add_video, self.videos.random_original(self.rng))
        else:
            user, truth_user = self.population.sign_up(self.rng)
            self.tally.new_user(user, truth_user)
            with self._lock:  # their first session takes the next request
                self._ready.appendleft(self._open_session(user))

    def _open_session(self, user: str) -> _Session:
        low, high = self.options.session_requests
        self.tally.count("sessions")
        rng = np.random.default_rng([self.options.seed, next(self._sessions)])
        return _Session(user, int(self.rng.integers(low, high + 1)), rng)

    def _next_session(self) -> _Session | None:
        """A session waiting for its next request, else a new one of an idle user."""
        with self._lock:
            if self._ready:
                return self._ready.popleft()
            if not self._idle:
                return None
            i = int(self.rng.integers(len(self._idle)))
            self._idle[i], self._idle[-1] = self._idle[-1], self._idle[i]
            user = self._idle.pop()
            return self._open_session(user)

    def _submit(self, task, *args) -> None:
        def guarded():
            try:
                task(*args)
            except Exception as error:  # a bug here must show in the report, not vanish
                self.tally.error(f"{task.__name__}: {type(error).__name__}: {error}")

        self._executor.submit(guarded)

    # -- sessions (worker threads) -------------------------------------------------------------

    def _serve(self, session: _Session, due: float) -> None:
        """One request of `session`, then a swipe per item served; the session goes back to
        wait for its next request, or ends."""
        over = True
        try:
            over = self._request_and_swipe(session, due)
        finally:
            self._release(session, done=over)

    def _request_and_swipe(self, session: _Session, due: float) -> bool:
        """True when the session is over (its last request, nothing served, or a failure)."""
        start = time.monotonic()
        self.tally.request_sent(start - due)
        try:
            response = self._client.get(
                self.function_url, params={"limit": self.options.limit},
                headers={"Authorization": self.tokens.authorization(session.user)},
            )  # fmt: skip
        except httpx.HTTPError as error:
            self.tally.count("failed_requests")
            self.tally.error(f"request: {type(error).__name__}: {error}")
            return True
        latency = time.monotonic() - start
        if response.status_code != 200:
            self.tally.response(response.status_code, latency)
            self.tally.error(f"HTTP {response.status_code}: {response.text[:300]}")
            return True
        try:
            body = response.json()
            served = [int(item["video_id"]) for item in body["items"]]
        except (ValueError, KeyError, TypeError) as error:
            self.tally.response(response.status_code, latency)
            self.tally.error(f"unexpected response ({error!r}): {response.text[:300]}")
            return True
        self.tally.response(200, latency, body.get("source"))
        for video in served:
            if session.rng.random() < self.options.organic:
                self._swipe(session, "organic", self.videos.random_video(session.rng, set(served)))
            else:
                self._swipe(session, "served", video)
        session.requests_left -= 1
        return session.requests_left <= 0 or not served

    def _release(self, session: _Session, *, done: bool) -> None:
        with self._lock:
            if done:
                self._idle.append(session.user)
            else:
                self._ready.append(session)

    def _swipe(self, session: _Session, kind: str, video: int) -> None:
        conn = self._connection()
        truth_video = self.videos.truth_video(video, conn)
        if truth_video is None:
            self.tally.count("unknown_videos")
            return
        p_like = self.population.p_like(session.user, truth_video)
        like = bool(session.rng.random() < p_like)
        claims = json.dumps({"sub": session.user, "role": "authenticated"})
        start = time.monotonic()
        try:
            with conn.cursor() as cur:
                cur.execute(SWIPE_SQL, (claims, video, "like" if like else "nope"))
            conn.commit()
        except psycopg2.errors.UniqueViolation:
            # The same (user, video, instant) again: one event, as for a client's retry.
            conn.rollback()
            self.tally.count("duplicate_swipes")
            return
        except psycopg2.Error as error:
            self._discard(conn)
            self.tally.error(f"swipe: {type(error).__name__}: {str(error).strip()}")
            return
        self.tally.swipe(kind, like, p_like, time.monotonic() - start)

    def _add_video(self, original: str) -> None:
        """A new video: a copy of the truth video `original`, released today."""
        conn = self._connection()
        try:
            for _ in range(50):  # copies of earlier runs may hold the first numbers
                external_id = f"{original}-new-{next(self._video_numbers)}"
                with conn.cursor() as cur:
                    cur.execute(NEW_VIDEO_SQL, {"external_id": external_id, "original": original})
                    row = cur.fetchone()
                conn.commit()
                if row is not None:
                    self.videos.add(row[0], original)
                    self.tally.new_video(external_id, original)
                    return
            self.tally.error(f"new video: no free external id for a copy of {original!r}")
        except psycopg2.Error as error:
            self._discard(conn)
            self.tally.error(f"new video: {type(error).__name__}: {str(error).strip()}")

    # -- connections ---------------------------------------------------------------------------

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = connect(self.database_url, application_name=APPLICATION_NAME)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _discard(self, conn) -> None:
        """After an error: roll back, or drop a broken connection (the next use reconnects)."""
        try:
            conn.rollback()
        except psycopg2.Error:
            conn.close()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._client.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
