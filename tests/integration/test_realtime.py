"""Real-time embeddings: the outbox triggers, the worker, parity with the batch refresh, the
endpoint, and the Edge Function's use of it.

The session's serving database (`serving_base` in conftest: the tiny synthetic data, a
snapshot of it, a version written from that snapshot by the real batch writer, registered and
serving) is copied for each test (`create database ... template`), so tests may swipe and kill
freely.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from swiperec.db import connect
from swiperec.embeddings.store import IndexParams
from swiperec.features.config import datetime_to_us
from swiperec.realtime import queue
from swiperec.realtime.embed import embed_and_upsert, lock_keys
from swiperec.realtime.models import Models
from swiperec.realtime.worker import Worker
from swiperec.snapshot import take_snapshot
from tests.conftest import SERVING_VERSION, TINY_DATA, database_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VERSION = SERVING_VERSION
BASE = "serving_base"


@pytest.fixture(scope="module")
def prepared(serving_base):
    """The session's serving database (see `serving_base` in conftest), as a dict."""
    return vars(serving_base)


def copy_of_base(pg_server, base=BASE):
    """A new database copied from the serving base; yields its URL, drops it afterwards."""
    yield from database_copy(pg_server, base)


@pytest.fixture
def rt_url(pg_server, prepared):
    """A copy of the prepared database for one test."""
    yield from copy_of_base(pg_server)


@pytest.fixture
def rt(rt_url):
    conn = connect(rt_url)
    yield conn
    conn.close()


def queued(conn) -> list[tuple[str, str]]:
    with conn.cursor() as cur:
        cur.execute("select kind, key from swiperec_private.embedding_queue order by id")
        rows = cur.fetchall()
    conn.rollback()
    return rows


def user_vector(conn, user: str) -> np.ndarray | None:
    with conn.cursor() as cur:
        cur.execute("select embedding from user_embeddings where model_version = %s"
                    " and user_id = %s", (VERSION, user))  # fmt: skip
        row = cur.fetchone()
    conn.rollback()
    return None if row is None else row[0].to_numpy()


def some_users(conn, n: int) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("select distinct user_id::text from user_video_decisions order by 1 limit %s",
                    (n,))  # fmt: skip
        rows = [r[0] for r in cur.fetchall()]
    conn.rollback()
    return rows


def undecided_videos(conn, user: str, n: int) -> list[int]:
    with conn.cursor() as cur:
        cur.execute("select id from videos v where not exists (select from user_video_decisions"
                    " d where d.user_id = %s and d.video_id = v.id) order by id limit %s",
                    (user, n))  # fmt: skip
        rows = [r[0] for r in cur.fetchall()]
    conn.rollback()
    return rows


def swipe(conn, user: str, video: int, decision: str = "like") -> None:
    with conn, conn.cursor() as cur:
        cur.execute("insert into user_video_decisions (user_id, video_id, decision)"
                    " values (%s, %s, %s)", (user, video, decision))  # fmt: skip


# -- the outbox --------------------------------------------------------------------------------


def test_loading_data_enqueued_every_user_and_video(prepared):
    assert prepared["loaded_queue"] == (prepared["users"], TINY_DATA.videos)


def test_outbox_enqueues_with_the_change_and_only_with_it(rt, rt_url):
    user, other = some_users(rt, 2)
    video = undecided_videos(rt, user, 1)[0]
    listener = connect(rt_url)
    listener.autocommit = True
    with listener.cursor() as cur:
        cur.execute(f"listen {queue.CHANNEL}")

    with rt.cursor() as cur:  # rolled back: nothing queued, nothing notified
        cur.execute("insert into user_video_decisions (user_id, video_id, decision)"
                    " values (%s, %s, 'like')", (user, video))  # fmt: skip
    rt.rollback()
    assert queued(rt) == []
    assert select.select([listener], [], [], 0.2)[0] == []

    # As the app swipes: the authenticated role, the user from the token's claims (RLS).
    with rt, rt.cursor() as cur:
        cur.execute("set local role authenticated")
        cur.execute("select set_config('request.jwt.claims', %s, true)",
                    (json.dumps({"sub": user, "role": "authenticated"}),))  # fmt: skip
        cur.execute("insert into user_video_decisions (video_id, decision) values (%s, 'like')",
                    (video,))  # fmt: skip
    assert queued(rt) == [("user", user)]
    assert select.select([listener], [], [], 2)[0] == [listener]
    listener.poll()
    assert [n.channel for n in listener.notifies] == [queue.CHANNEL]

    # One statement, three swipes of two users: one row per user.
    videos = undecided_videos(rt, user, 3)
    with rt, rt.cursor() as cur:
        cur.execute("delete from swiperec_private.embedding_queue")
        cur.execute("insert into user_video_decisions (user_id, video_id, decision)"
                    " select u, v, 'nope' from unnest(%s::uuid[], %s::bigint[]) as t(u, v)",
                    ([user, user, other], videos))  # fmt: skip
    assert sorted(queued(rt)) == sorted([("user", user), ("user", other)])

    # Videos: a new one, a change the tower reads, a change it does not.
    with rt, rt.cursor() as cur:
        cur.execute("delete from swiperec_private.embedding_queue")
        cur.execute("insert into videos (external_id, title, genres) values ('rt-new', 't', '{}')"
                    " returning id")  # fmt: skip
        new_id = cur.fetchone()[0]
        cur.execute("update videos set title = title || ' 2' where id = 1")
        cur.execute("update videos set thumbnail_url = 'https://example.com/x.jpg' where id = 2")
    assert queued(rt) == [("video", str(new_id)), ("video", "1")]
    listener.close()


# -- the worker --------------------------------------------------------------------------------


def test_worker_collapses_a_users_swipes_into_one_embedding(rt, rt_url):
    user = some_users(rt, 1)[0]
    before = user_vector(rt, user)
    for video in undecided_videos(rt, user, 5):
        swipe(rt, user, video)
    assert queued(rt) == [("user", user)] * 5

    # Debounced: not due while the swipes are recent, unless the oldest waited too long.
    waiting = Worker(rt_url, debounce_ms=60_000, max_delay_ms=60_000)
    assert waiting.run_batch() is None
    assert len(queued(rt)) == 5
    bounded = Worker(rt_url, debounce_ms=60_000, max_delay_ms=0)
    outcome = bounded.run_batch()
    assert (outcome.keys, outcome.events, outcome.embedded) == (1, 5, 1)
    assert queued(rt) == []
    after = user_vector(rt, user)
    assert not np.allclose(before, after, atol=1e-6)
    assert bounded.run_batch() is None

    # The same history again (a row queued without a new swipe): not embedded twice.
    with rt, rt.cursor() as cur:
        cur.execute("insert into swiperec_private.embedding_queue (kind, key) values ('user', %s)",
                    (user,))  # fmt: skip
    again = bounded.run_batch()
    assert (again.keys, again.embedded, again.unchanged) == (1, 0, 1)


def test_two_workers_share_one_queue_and_do_each_key_once(rt, rt_url):
    users = some_users(rt, 30)
    videos = {user: undecided_videos(rt, user, 3) for user in users}
    with rt, rt.cursor() as cur:
        for user in users:
            for video in videos[user]:
                cur.execute("insert into user_video_decisions (user_id, video_id, decision)"
                            " values (%s, %s, 'like')", (user, video))  # fmt: skip
        cur.execute("insert into videos (external_id, title, genres) select 'rt-' || g, "
                    "'新作 ' || g, '{ドラマ}' from generate_series(1, 10) g")  # fmt: skip
    assert len(queued(rt)) == 30 * 3 + 10
    models = Models()  # one set of towers for both, as two processes would each load theirs
    workers = [Worker(rt_url, batch_size=8, models=models) for _ in range(2)]
    done: list[list] = [[], []]

    failures = []

    def drain(i):
        try:
            while (outcome := workers[i].run_batch()) is not None:
                done[i].extend((c.kind, c.key) for c in outcome.claimed)
        except Exception as err:  # a worker that died must fail the test, not hide in a thread
            failures.append(err)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures and not any(t.is_alive() for t in threads), failures
    assert queued(rt) == []
    assert done[0] and done[1], "both workers took part"
    every = done[0] + done[1]
    assert len(every) == len(set(every)) == 30 + 10  # each key once, by one worker
    # What they wrote is what the towers give for the state now.
    check_users = users[:5]
    expected = recompute_users(rt, check_users)
    for user in check_users:
        np.testing.assert_allclose(user_vector(rt, user), expected[user], atol=1e-5)


def recompute_users(conn, users, as_of_us=None) -> dict[str, np.ndarray]:
    """The users' vectors by the real-time code, computed and then rolled back."""
    with conn.cursor() as cur:
        out = embed_and_upsert(cur, Models().current(cur), users, [], as_of_us=as_of_us)
    conn.rollback()
    keys, vectors = out.users[VERSION]
    return dict(zip(keys, vectors, strict=True))


def test_a_worker_killed_mid_batch_loses_nothing(rt, rt_url, tmp_path):
    user = some_users(rt, 1)[0]
    before = user_vector(rt, user)
    for video in undecided_videos(rt, user, 2):
        swipe(rt, user, video)
    marker = tmp_path / "pid"
    env = {**os.environ, "DATABASE_URL": rt_url, "SWIPEREC_FAULT_POINT": "realtime.before_commit",
           "SWIPEREC_FAULT_MARKER": str(marker)}  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "swiperec.cli", "realtime", "run"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():  # renamed into place whole
            assert process.poll() is None and time.monotonic() < deadline, "never reached"
            time.sleep(0.1)
        # At the point: rows deleted and the vector upserted, uncommitted. Kill it there.
        os.kill(int(marker.read_text()), signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert queued(rt) == [("user", user)] * 2
    np.testing.assert_array_equal(user_vector(rt, user), before)
    status = subprocess.run([sys.executable, "-m", "swiperec.cli", "realtime", "status"],
                            env={**os.environ, "DATABASE_URL": rt_url}, capture_output=True,
                            text=True, timeout=120, check=True).stdout  # fmt: skip
    assert "queue     2 rows" in status and f"in use    {VERSION}" in status

    assert Worker(rt_url).drain() == 1
    assert queued(rt) == []
    np.testing.assert_allclose(user_vector(rt, user), recompute_users(rt, [user])[user], atol=1e-5)
    assert not np.allclose(user_vector(rt, user), before, atol=1e-6)


def test_sigterm_finishes_and_exits(rt, rt_url):
    env = {**os.environ, "DATABASE_URL": rt_url}
    process = subprocess.Popen([sys.executable, "-m", "swiperec.cli", "realtime", "run",
                                "--poll-seconds", "60"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        user = some_users(rt, 1)[0]
        deadline = time.monotonic() + 120
        swipe(rt, user, undecided_videos(rt, user, 1)[0])
        while queued(rt):  # the NOTIFY wakes it; the poll (60 s) would be too late
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "worker stopped" in process.stdout.read()


# -- parity with the batch refresh ----------------------------------------------------------


def test_realtime_vectors_equal_the_batch_writers(rt, prepared):
    from swiperec.embeddings.towers import embed_users, embed_videos_ranked, load_towers
    from swiperec.features.config import stored_feature_config
    from swiperec.features.events import load_catalogue
    from swiperec.model.train import read_model_card

    cutoff = prepared["cutoff_us"]
    users = some_users(rt, 8)
    stored = {u: user_vector(rt, u) for u in users}
    realtime = recompute_users(rt, users, as_of_us=cutoff)
    for user in users:  # users with history: the vectors the batch writer stored
        np.testing.assert_allclose(realtime[user], stored[user], atol=1e-5)

    towers = load_towers(prepared["model_dir"])
    config = stored_feature_config(
        read_model_card(prepared["model_dir"])["input"]["feature_config"]
    )
    catalogue = load_catalogue(prepared["snapshot"])
    newcomer = str(uuid.uuid4())  # no history: the batch code on an empty history
    empty = np.empty(0, np.int64)
    _, batch = embed_users(towers, catalogue, config, [(newcomer, empty, empty, empty)], cutoff)
    np.testing.assert_allclose(recompute_users(rt, [newcomer], cutoff)[newcomer], batch[0],
                               atol=1e-5)  # fmt: skip

    # A video inserted after the snapshot: the batch code reads it from a newer snapshot.
    with rt, rt.cursor() as cur:
        cur.execute("insert into videos (external_id, title, description, genres, maker,"
                    " performers, release_date, duration_sec) values ('rt-late', '夏の新作ドラマ',"
                    " '説明', '{ドラマ,コメディ}', 'メーカーA', '{出演者B}', '2024-05-01', 3600)"
                    " returning id")  # fmt: skip
        late = cur.fetchone()[0]
    later = str(Path(prepared["snapshot"]).parent / "later")
    meta = take_snapshot(rt, later)
    at = datetime_to_us(meta.cutoff)
    catalogue = load_catalogue(later)
    position = int(np.flatnonzero(catalogue.video_id == late)[0])
    _, batch, terms = embed_videos_ranked(towers, catalogue, [position], at)
    with rt.cursor() as cur:
        out = embed_and_upsert(cur, Models().current(cur), [], [late], as_of_us=at)
        cur.execute("select rank_bias, rank_scale from video_embeddings where video_id = %s "
                    "and model_version = %s", (late, VERSION))  # fmt: skip
        stored_terms = cur.fetchone()
    rt.rollback()
    np.testing.assert_allclose(out.videos[VERSION][1][0], batch[0], atol=1e-5)
    # With its ranking terms, as the batch writer would store them.
    np.testing.assert_allclose(stored_terms, terms[0], rtol=1e-5, atol=1e-6)


def test_endpoint_and_worker_take_turns_on_a_key(rt, rt_url):
    """The per-key lock: while one transaction holds a user, a worker passes the user over."""
    user = some_users(rt, 1)[0]
    swipe(rt, user, undecided_videos(rt, user, 1)[0])
    holder = connect(rt_url)
    with holder.cursor() as cur:
        lock_keys(cur, "user", [user])
    assert Worker(rt_url).run_batch() is None  # held elsewhere: left in the queue
    assert queued(rt) == [("user", user)]
    holder.rollback()
    holder.close()
    assert Worker(rt_url).run_batch().keys == 1


# -- the endpoint ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(pg_server, prepared):
    """`swiperec realtime serve` on a free port, on a copy of the prepared database that the
    endpoint's tests share (each uses its own users)."""
    for url in copy_of_base(pg_server):
        port, token = free_port(), secrets.token_urlsafe(16)
        env = {**os.environ, "DATABASE_URL": url, "SWIPEREC_REALTIME_TOKEN": token}
        process = subprocess.Popen(
            [sys.executable, "-m", "swiperec.cli", "realtime", "serve", "--port", str(port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, process)
        conn = connect(url)
        yield {"url": base, "token": token, "db_url": url, "conn": conn}
        conn.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_until_healthy(base: str, process=None) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert process is None or process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the endpoint did not start"
        try:
            status = httpx.get(f"{base}/healthz", timeout=1).status_code
            if status == 200 or (process is None and status == 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def test_endpoint_embeds_users_and_videos(endpoint):
    url, auth = endpoint["url"], {"Authorization": f"Bearer {endpoint['token']}"}
    rt = endpoint["conn"]
    user = some_users(rt, 1)[0]
    swipe(rt, user, undecided_videos(rt, user, 1)[0])
    response = httpx.post(f"{url}/embed/user", json={"user_id": user}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json() == {"user_id": user, "model_version": VERSION, "versions": [VERSION],
                               "path": "realtime", "has_history": True}  # fmt: skip
    np.testing.assert_allclose(user_vector(rt, user), recompute_users(rt, [user])[user], atol=1e-5)

    with rt, rt.cursor() as cur:
        cur.execute("insert into videos (external_id, title, genres) values ('rt-e', 'e', '{}')"
                    " returning id")  # fmt: skip
        video = cur.fetchone()[0]
    response = httpx.post(f"{url}/embed/video", json={"video_id": video}, headers=auth)
    assert response.status_code == 200 and response.json()["versions"] == [VERSION]
    with rt.cursor() as cur:
        cur.execute("select count(*) from video_embeddings where video_id = %s", (video,))
        assert cur.fetchone()[0] == 1
    rt.rollback()

    unknown = str(uuid.uuid4())
    cases = [
        ("/embed/user", {"user_id": unknown}, auth, 404),
        ("/embed/video", {"video_id": 10**12}, auth, 404),
        ("/embed/user", {"user_id": "not-a-uuid"}, auth, 400),
        ("/embed/user", {"user": user}, auth, 400),
        ("/embed/user", [user], auth, 400),
        ("/embed/video", {"video_id": "1"}, auth, 400),
        ("/embed/video", {"video_id": True}, auth, 400),
        ("/embed/user", {"user_id": user}, {"Authorization": "Bearer wrong"}, 401),
        ("/embed/user", {"user_id": user}, {}, 401),
    ]
    for path, body, headers, status in cases:
        response = httpx.post(f"{url}{path}", json=body, headers=headers)
        assert response.status_code == status, (path, body, response.text)
    for raw in (b"{", b"\xff\xfe", b"x" * 5000):
        response = httpx.post(f"{url}/embed/user", content=raw, headers=auth)
        assert response.status_code == 400, raw[:10]
    assert user_vector(rt, unknown) is None

    metrics = httpx.get(f"{url}/metrics").text
    ok = 'swiperec_realtime_requests_total{route="/embed/user",status="200"} '
    assert float(metrics.split(ok)[1].split()[0]) >= 1
    assert 'swiperec_realtime_requests_total{route="/embed/user",status="400"} ' in metrics


def test_endpoint_without_a_serving_version_answers_503(db_url):
    import uvicorn

    from swiperec.realtime.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(db_url), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base)
        assert httpx.get(f"{base}/healthz").status_code == 503
        response = httpx.post(f"{base}/embed/user", json={"user_id": str(uuid.uuid4())})
        assert response.status_code == 503 and response.headers["retry-after"] == "30"
    finally:
        server.should_exit = True
        thread.join(30)


def test_edge_function_uses_the_endpoint_and_falls_back(endpoint, tmp_path):
    """The real handler under Deno, against the real endpoint: a user with likes and no
    embedding gets one during the request (source "realtime"); a user without decisions and
    a refused endpoint fall back to the SQL cold start."""
    from tests.integration.test_edge_function import PERMISSIONS, deno

    rt, rt_url = endpoint["conn"], endpoint["db_url"]
    cold = str(uuid.uuid4())
    with rt, rt.cursor() as cur:
        cur.execute("insert into user_video_decisions (user_id, video_id, decision)"
                    " select %s, v, 'like' from unnest(array[11, 42, 77]::bigint[]) v",
                    (cold,))  # fmt: skip
        cur.execute("delete from swiperec_private.embedding_queue")  # no worker runs here
    fixture = tmp_path / "realtime.json"
    fixture.write_text(json.dumps({
        "realtime_url": endpoint["url"], "realtime_token": endpoint["token"],
        "model_version": VERSION, "users": {"cold": cold, "none": str(uuid.uuid4())},
    }))  # fmt: skip
    result = deno(
        "test", *PERMISSIONS,
        "supabase/functions/enhanced_two_tower_recommendations/realtime_integration.ts",
        SUPABASE_DB_URL=rt_url, JWT_SECRET=secrets.token_urlsafe(32),
        SWIPEREC_REALTIME_FIXTURE=str(fixture),
    )  # fmt: skip
    assert " passed " in result.stdout and " 0 failed " in result.stdout
    with rt.cursor() as cur:
        cur.execute("select source, count(*) from served_recommendations where user_id = %s"
                    " group by 1 order by 1", (cold,))  # fmt: skip
        assert dict(cur.fetchall()).keys() == {"embedding", "realtime"}
    rt.rollback()


def test_a_key_that_fails_alone_is_set_aside_and_the_rest_goes_on(rt, rt_url):
    user = some_users(rt, 1)[0]
    before = user_vector(rt, user)
    with rt, rt.cursor() as cur:  # a row no video id can be read from, queued first
        cur.execute("insert into swiperec_private.embedding_queue (kind, key)"
                    " values ('video', 'not-a-number')")  # fmt: skip
    swipe(rt, user, undecided_videos(rt, user, 1)[0])
    worker = Worker(rt_url)
    failures, set_aside = 0, 0
    for _ in range(6):
        try:
            outcome = worker.run_batch()
        except ValueError:
            failures += 1
            continue
        if outcome is None:
            break
        set_aside += outcome.set_aside
    assert (failures, set_aside) == (1, 1)  # in the batch, then alone: set aside
    assert queued(rt) == []
    with rt.cursor() as cur:
        cur.execute("select kind, key, events, error from swiperec_private.embedding_queue_failed")
        assert cur.fetchall() == [("video", "not-a-number", 1,
                                   "ValueError: invalid literal for int() with base 10: "
                                   "'not-a-number'")]  # fmt: skip
    rt.rollback()
    assert not np.allclose(user_vector(rt, user), before, atol=1e-6)


def test_a_version_that_starts_serving_gets_what_changed_since_its_snapshot(rt, rt_url):
    """Swipes and videos after a version's snapshot were embedded for the version serving
    then; the switch queues them for the new one."""
    from swiperec.embeddings import store
    from swiperec.registry.versions import promote

    user = some_users(rt, 1)[0]
    swipe(rt, user, undecided_videos(rt, user, 1)[0])  # after the snapshot
    with rt, rt.cursor() as cur:
        cur.execute("insert into videos (external_id, title, genres) values ('rt-s', 's', '{}')"
                    " returning id")  # fmt: skip
        video = cur.fetchone()[0]
        cur.execute("delete from swiperec_private.embedding_queue")  # a worker took them
        cur.execute("select as_of from embedding_sets where model_version = %s", (VERSION,))
        as_of = cur.fetchone()[0]
    # A second version written from the same snapshot (a copy of the sets is enough here).
    for kind, key in (("video", "video_id"), ("user", "user_id")):
        with rt.cursor() as cur:
            cur.execute(f"select {key}, embedding from {kind}_embeddings"
                        " where model_version = %s", (VERSION,))  # fmt: skip
            rows = cur.fetchall()
        rt.rollback()
        store.begin_set(rt, "v2", kind, 768, expected_shards=1, as_of=as_of)
        store.copy_shard(rt, "v2", kind, "all", [r[0] for r in rows],
                         np.stack([r[1].to_numpy() for r in rows]))  # fmt: skip
        store.finish_set(rt, "v2", kind, IndexParams(parallel_workers=0))
    promote(rt, "v2", force=True, reason="a test")
    assert sorted(queued(rt)) == [("user", user), ("video", str(video))]
    promote(rt, "v2", force=True, reason="again: nothing changes")
    assert len(queued(rt)) == 2
