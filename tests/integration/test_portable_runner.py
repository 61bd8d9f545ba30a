"""The Beam steps on the cluster path: PortableRunner -> a job service -> SDK worker processes.

`swiperec.beam_local_cluster` starts Beam's Python job service and its worker pool
(`--environment_type=EXTERNAL`) once per session, as subprocesses; every pipeline here runs
through the Fn API in two SDK worker processes that the pool starts as its own children (see
that module's docstring: Beam's job service would run each job in one worker, so ours passes
`--sdk_worker_parallelism` on to its runner). What fails to pickle, relies on the driver's
memory or on module state set in the driver fails here as on Flink or Dataflow. The workers
import only what the venv has installed, so a function a pipeline runs must live in an
installed module: the probe below is `beam_local_cluster.tag_with_process`, not a function of
this file. The last two tests check the harness itself: it stops its services, and a service
that cannot start is an error that says why.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from swiperec import beam_local_cluster
from swiperec.beam_local_cluster import (
    JOB_SERVER_TIMEOUT_S,
    local_portable_cluster,
    tag_with_process,
)
from swiperec.beam_pipeline import new_pipeline
from swiperec.db.connection import write_password_file
from swiperec.features.config import FeatureConfig
from swiperec.features.transform import run_transform
from tests.integration.test_transform import _assert_same_examples

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.cluster]

WORKERS = 2


@pytest.fixture(scope="session")
def portable_cluster(tmp_path_factory, pg_server):
    """The session's job service and worker pool: `args`, the pipeline options that run a
    pipeline on them; `work_dir`, their logs, staged artifacts and one folder per worker.

    The jobs carry no database password: the workers read the test server's superuser's from
    a password file their environment names, as a task manager reads a mounted secret."""
    work_dir = tmp_path_factory.mktemp("beam-cluster")
    write_password_file(pg_server.status().url, work_dir / "pgpass")
    env = {"PGPASSFILE": str(work_dir / "pgpass")}
    with local_portable_cluster(workers=WORKERS, work_dir=work_dir, worker_env=env) as args:
        yield SimpleNamespace(args=args, work_dir=work_dir)


def _sleep_then(seconds: float):
    def body(x):
        import time

        time.sleep(seconds)
        return x

    return body


# the lost stream's reader thread dies with the deadline's error, as it does in the driver
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_driver_follows_a_job_past_beams_stream_deadline(portable_cluster):
    # Beam's PortableRunner gives the job's state and message streams `--job_server_timeout`
    # as their gRPC deadline: a job longer than it loses its driver (Beam's default: 300 s).
    import time

    import apache_beam as beam
    import grpc
    from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

    def submit(extra_args):
        pipeline = new_pipeline([*portable_cluster.args, *extra_args])
        _ = pipeline | beam.Create([1]) | beam.Map(_sleep_then(4))
        return pipeline.run()

    lost = submit(["--job_server_timeout=2"])
    with pytest.raises(grpc.RpcError) as error:
        lost.wait_until_finish()
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The job itself went on (the local job service cannot cancel it); let it end first.
    give_up = time.monotonic() + 120
    while lost.state not in ("DONE", "FAILED", "CANCELLED") and time.monotonic() < give_up:
        time.sleep(0.5)
    assert lost.state == "DONE"
    # The cluster's options allow a job a week; the same 4 s job's driver sees it finish.
    options = PipelineOptions(portable_cluster.args).view_as(PortableOptions)
    assert options.job_server_timeout == JOB_SERVER_TIMEOUT_S >= 86_400
    assert submit([]).wait_until_finish() == "DONE"


def started_workers(cluster) -> set[str]:
    return {os.path.basename(f) for f in glob.glob(str(cluster.work_dir / "workers" / "*"))}


def test_a_pipeline_runs_in_sdk_worker_processes_of_the_pool(portable_cluster, tmp_path):
    import apache_beam as beam
    from apache_beam.runners.portability.portable_runner import PortableRunner

    pipeline = new_pipeline(portable_cluster.args)
    assert isinstance(pipeline.runner, PortableRunner)  # new_pipeline left the choice to Beam
    _ = (
        pipeline
        | beam.Create(range(100))
        | beam.Map(tag_with_process)
        | beam.Map(json.dumps)
        | beam.io.WriteToText(str(tmp_path / "out" / "part"))
    )
    pipeline.run().wait_until_finish()

    rows = [
        json.loads(line)
        for path in glob.glob(str(tmp_path / "out" / "part*"))
        for line in Path(path).read_text().splitlines()
    ]
    assert sorted(element for element, _, _ in rows) == list(range(100))
    pids = {pid for _, pid, _ in rows}
    parents = {parent for _, _, parent in rows}
    # Other processes than this one, at least two, all children of the worker pool, which
    # this process started.
    assert os.getpid() not in pids and len(pids) >= WORKERS, pids
    [pool] = parents
    assert "apache_beam.runners.worker.worker_pool_main" in psutil.Process(pool).cmdline()
    assert psutil.Process(pool).ppid() == os.getpid()


def test_the_feature_transform_gives_the_same_examples_as_in_process(
    portable_cluster, snapshot_dir, transformed, tmp_path
):
    before = started_workers(portable_cluster)
    result = run_transform(
        snapshot_dir,
        str(tmp_path / "transform"),
        str(tmp_path / "examples"),
        FeatureConfig(),
        pipeline_args=portable_cluster.args,
    )
    # Both pipelines (examples, TFT) ran in workers of the pool.
    assert len(started_workers(portable_cluster) - before) >= 2 * WORKERS
    assert result.metadata["counts"] == transformed.metadata["counts"]
    assert result.metadata["vocabulary_sizes"] == transformed.metadata["vocabulary_sizes"]
    _assert_same_examples(result.examples_dir, result.transform_dir, transformed)


def test_the_embedding_writer_writes_the_same_vectors_as_in_process(
    portable_cluster, trained, snapshot_dir, db_url, conn
):
    import numpy as np

    from swiperec.embeddings.store import IndexParams
    from swiperec.embeddings.writer import write_embeddings

    small = IndexParams(maintenance_work_mem="64MB", parallel_workers=0)
    shards = {"rows_per_chunk": 64, "decisions_per_shard": 400, "index": small}
    here = write_embeddings(trained.model_dir, "in-process", snapshot_dir, database_url=db_url,
                            **shards)  # fmt: skip
    before = started_workers(portable_cluster)
    there = write_embeddings(trained.model_dir, "portable", snapshot_dir, database_url=db_url,
                             pipeline_args=portable_cluster.args, **shards)  # fmt: skip
    assert len(started_workers(portable_cluster) - before) >= WORKERS
    assert there.rows == here.rows and here.rows["video"] > 0 and here.rows["user"] > 0

    def vectors(table: str, key: str, version: str):
        with conn.cursor() as cur:
            cur.execute(f"select {key}::text, embedding::text from {table} "
                        f"where model_version = %s order by 1", (version,))  # fmt: skip
            rows = cur.fetchall()
        conn.rollback()
        return [k for k, _ in rows], np.array([json.loads(v) for _, v in rows])

    for table, key in (("video_embeddings", "video_id"), ("user_embeddings", "user_id")):
        keys_here, here_vectors = vectors(table, key, "in-process")
        keys_there, there_vectors = vectors(table, key, "portable")
        assert keys_there == keys_here
        np.testing.assert_allclose(there_vectors, here_vectors, rtol=0, atol=1e-6)


def test_workers_without_the_password_fail_saying_so_and_load_nothing(
    portable_cluster, trained, snapshot_dir, db_url, conn
):
    """The workers' password file holds the superuser's password alone: a refresh as another
    role fails in the workers, saying where its password goes, and loads no row."""
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    from swiperec.embeddings.store import IndexParams, status
    from swiperec.embeddings.writer import write_embeddings

    role, password = f"refresh_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    with conn.cursor() as cur:  # roles are the server's: this one is this test's alone
        cur.execute(f"create role {role} login superuser password %s", (password,))
    conn.commit()
    parts = urlsplit(db_url)
    url = urlunsplit(parts._replace(netloc=f"{role}:{password}@{parts.hostname}:{parts.port}"))
    try:
        with pytest.raises(Exception, match="carries no password"):
            write_embeddings(trained.model_dir, "no-password", snapshot_dir, database_url=url,
                             pipeline_args=portable_cluster.args, rows_per_chunk=64,
                             index=IndexParams(maintenance_work_mem="64MB"))  # fmt: skip
        sets = {(s["kind"], s["state"]) for s in status(conn) if s["version"] == "no-password"}
        assert sets == {("video", "loading"), ("user", "loading")}  # begun, never finished
        with conn.cursor() as cur:
            cur.execute("select count(*) from embedding_set_shards where model_version = %s",
                        ("no-password",))  # fmt: skip
            assert cur.fetchone()[0] == 0  # no shard loaded
        conn.rollback()
    finally:
        with conn.cursor() as cur:
            cur.execute(f"drop owned by {role}; drop role {role}")
        conn.commit()


def test_the_services_are_stopped_when_the_body_raises(tmp_path):
    with pytest.raises(ZeroDivisionError), local_portable_cluster(work_dir=tmp_path):
        services = [
            p for p in psutil.Process().children() if str(tmp_path) in " ".join(p.cmdline())
        ]
        assert len(services) == 2  # the job service and the worker pool
        1 / 0  # noqa: B018
    assert not any(service.is_running() for service in services)


def test_a_service_that_dies_on_start_is_a_clear_error(tmp_path, monkeypatch):
    # The port the cluster chose is taken (by this test, on both of localhost's addresses)
    # before the job service binds it.
    with socket.socket() as taken, socket.socket(socket.AF_INET6) as taken_v6:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with contextlib.suppress(OSError):  # a machine without IPv6 has only the first
            taken_v6.bind(("::1", port))
        monkeypatch.setattr(beam_local_cluster, "_free_port", lambda: port)
        with (
            pytest.raises(beam_local_cluster.ClusterStartError) as error,
            local_portable_cluster(work_dir=tmp_path),
        ):
            pass
    message = str(error.value)
    assert message.startswith("the job service exited with code 1 on start")
    assert f"Failed to bind to address localhost:{port}" in message  # the end of its log
    assert not [p for p in psutil.Process().children() if str(tmp_path) in " ".join(p.cmdline())]
