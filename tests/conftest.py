"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test.

The server runs in a temporary SWIPEREC_HOME, so tests never touch a developer's `.swiperec/`.
Each test that asks for `db_url` gets its own database cloned from a migrated template, which
takes ~50 ms, so tests are isolated without re-running migrations.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import psycopg2
import pytest

from swiperec.data.load import load_synthetic
from swiperec.data.synthetic import SyntheticConfig, generate
from swiperec.db import connect
from swiperec.db.embedded import EmbeddedServer
from swiperec.db.migrate import migrate
from swiperec.model.config import TrainConfig
from swiperec.snapshot import take_snapshot

TEMPLATE = "swiperec_template"
_counter = itertools.count()

# The files whose set-up or tests take minutes, longest first (`pytest --durations`). With
# `--dist loadfile --no-loadscope-reorder` (the Makefile's) each file runs on one worker, in
# this order: started first, they run beside the many short files instead of after them, where
# one of them would leave the other worker idle at the end.
SLOW_FILES_FIRST = (
    "tests/integration/test_pipeline.py",  # the installed wheel's demo, ~200 s of set-up
    "tests/integration/test_embedding_faults.py",
    "tests/integration/test_isolated_pipeline.py",
    "tests/integration/test_realtime.py",
    "tests/integration/test_evaluate.py",
    "tests/integration/test_tune.py",
)


def pytest_report_header(config):
    """The machine's calibration (tests/performance/record.py), so a suite's wall time can be
    compared across machines: these differ 3-4x from one day or host to the next."""
    from tests.performance.record import calibration, vector_isa

    rates = calibration()
    return (
        f"machine calibration: numpy matmul {rates['matmul_gflops']} GFLOP/s, Python loop "
        f"{rates['python_mops']} M iterations/s, {os.cpu_count()} cpus, {vector_isa()}"
    )


def pytest_collection_modifyitems(config, items):
    """The slow files first (`SLOW_FILES_FIRST`), the rest in collection order."""
    rank = {path: i for i, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def server_home():
    """`server_home(name)`: a new folder for an embedded server's SWIPEREC_HOME that lasts the
    session, outside pytest's base temp folder; removed after the session.

    Every pytest session takes group and other access off `/tmp/pytest-of-<user>`, and the
    embedded server runs as a user of its own when the tests run as root: a server whose data
    folder lay under it would lose it mid-run (a PANIC on pg_control) whenever a second pytest
    session started on the machine."""
    homes = []

    def make(name: str) -> Path:
        homes.append(Path(tempfile.mkdtemp(prefix=f"swiperec-{name}-")))
        return homes[-1]

    yield make
    for home in homes:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def own_home():
    """A SWIPEREC_HOME (not yet made) for a test that starts an embedded server of its own,
    outside pytest's base temp folder, which a second pytest session would lock the server's
    user out of (see `server_home`); removed after the test."""
    parent = Path(tempfile.mkdtemp(prefix="swiperec-test-"))
    yield parent / "home"
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(server_home):
    """The embedded server, started in a temporary home and stopped after the session."""
    server = EmbeddedServer(server_home("test-server"))
    status = server.start()
    admin = psycopg2.connect(status.url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"create database {TEMPLATE}")
    admin.close()
    template = connect(_with_database(status.url, TEMPLATE))
    migrate(template, local_bootstrap=True)
    template.close()
    yield server
    server.stop()


def fresh_database(pg_server, name: str) -> str:
    """URL of a new, migrated database `name` on the session's server (replacing one of that
    name), for fixtures that outlive one test; dropped with the server at the session's end."""
    admin = psycopg2.connect(pg_server.status().url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"drop database if exists {name} with (force)")
        cur.execute(f"create database {name} template {TEMPLATE}")
    admin.close()
    return _with_database(pg_server.status().url, name)


@pytest.fixture
def db_url(pg_server):
    """URL of a fresh, migrated database for this test, dropped afterwards."""
    name = f"test_{os.getpid()}_{next(_counter)}"
    url = fresh_database(pg_server, name)
    yield url
    admin = psycopg2.connect(pg_server.status().url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"drop database if exists {name} with (force)")
    admin.close()


@pytest.fixture
def conn(db_url):
    """A connection to this test's database (pgvector registered)."""
    connection = connect(db_url)
    yield connection
    connection.close()


# -- one small synthetic data set, snapshotted and transformed once for all test workers -------
# Shared by the transform, training and later steps' tests: each step's tests start from the
# real output of the steps before it.
TINY_DATA = SyntheticConfig(
    videos=400,
    users=60,
    pseudo_users=60,
    decisions_per_user=25,
    reviews_per_pseudo_user=10,
    seed=11,
)


def _once_for_all_workers(tmp_path_factory, name: str, make):
    """`make()` once for all of pytest-xdist's worker processes: the first to get here makes it
    and pickles what it returns beside the workers' temp folders; the others wait for it and
    unpickle it. For set-up whose result is files and plain data (each worker's own embedded
    server holds nothing of it). Without xdist, `make()`."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return make()
    shared = tmp_path_factory.getbasetemp().parent  # the folder of every worker's temp folder
    name = f"{name}-{os.environ['PYTEST_XDIST_TESTRUNUID']}"  # this session's
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also on an error
        made = shared / f"{name}.pickle"
        if made.exists():
            return pickle.loads(made.read_bytes())
        result = make()
        partial = made.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(result))
        partial.replace(made)  # whole or not at all, should this worker die mid-write
        return result


@pytest.fixture(scope="session")
def snapshot_and_transform(pg_server, tmp_path_factory):
    """(`snapshot_dir`, `transform_component`): made once per session for all the test
    workers, the feature transform being the slowest set-up many test files share."""
    return _once_for_all_workers(
        tmp_path_factory, "snapshot_and_transform",
        lambda: _make_snapshot_and_transform(pg_server, tmp_path_factory),
    )  # fmt: skip


@pytest.fixture(scope="session")
def snapshot_dir(snapshot_and_transform):
    """A snapshot folder of `TINY_DATA`, taken from a real database."""
    return snapshot_and_transform[0]


@pytest.fixture(scope="session")
def transform_component(snapshot_and_transform):
    """The feature transform of `snapshot_dir`, run through the KFP component's `python_func`
    (as a pipeline step runs it) with its defaults, i.e. `run_transform(..., FeatureConfig())`.
    A SimpleNamespace: `result`, the `TransformResult` that `run_transform` returned inside the
    component; `transform_graph` and `examples`, the component's output artifacts (their
    metadata as the component stamped it)."""
    return snapshot_and_transform[1]


def _make_snapshot_and_transform(pg_server, tmp_path_factory):
    from types import SimpleNamespace

    from kfp import dsl

    import swiperec.features.transform as transform_module
    from components.feature_transform import feature_transform

    root = pg_server.status().url
    admin = psycopg2.connect(root)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("drop database if exists tiny_data")
        cur.execute(f"create database tiny_data template {TEMPLATE}")
    conn = connect(_with_database(root, "tiny_data"))
    load_synthetic(conn, generate(TINY_DATA))
    snapshot = str(tmp_path_factory.mktemp("snapshot") / "s")
    take_snapshot(conn, snapshot)
    conn.close()
    with admin.cursor() as cur:
        cur.execute("drop database tiny_data with (force)")
    admin.close()

    out = tmp_path_factory.mktemp("transform")
    transform_graph = dsl.Artifact(uri=str(out / "transform"))
    examples = dsl.Dataset(uri=str(out / "examples"))
    result = _component_keeping(
        transform_module, "run_transform", feature_transform,
        snapshot=dsl.Dataset(uri=snapshot), transform_graph=transform_graph, examples=examples,
    )  # fmt: skip
    return snapshot, SimpleNamespace(
        result=result, transform_graph=transform_graph, examples=examples
    )


def _component_keeping(module, name: str, component, **kwargs):
    """Run the KFP `component`'s python_func with `kwargs` and return what `module.name`, the
    library function it calls, returned inside it."""
    returned = []
    function = getattr(module, name)

    def keep_result(*args, **kwargs):
        returned.append(function(*args, **kwargs))
        return returned[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, name, keep_result)
        component.python_func(**kwargs)
    [result] = returned
    return result


@pytest.fixture(scope="session")
def transformed(transform_component):
    """The feature transform of `snapshot_dir` (a `TransformResult`; see
    `transform_component`)."""
    return transform_component.result


# A model small enough to train on the tiny data set in seconds.
SMALL_TRAIN = TrainConfig(hidden_units=(32,), bag_dim=8, batch_size=128, epochs=4, patience=2)


@pytest.fixture(scope="session")
def train_component(transform_component, tmp_path_factory):
    """A small two-tower model (`SMALL_TRAIN`) trained on the session's transform, once per
    session, through the KFP train component's `python_func` (as a pipeline step runs it), i.e.
    `train(..., SMALL_TRAIN)`. A SimpleNamespace: `result`, the `TrainResult` that `train`
    returned inside the component; `model` and `metrics`, the component's output artifacts."""
    import json
    from types import SimpleNamespace

    from kfp import dsl

    import swiperec.model.train as train_module
    from components.train import train as component

    out = tmp_path_factory.mktemp("model")
    model = dsl.Model(uri=str(out / "m"))
    metrics = dsl.Metrics(uri=str(out / "metrics"))
    result = _component_keeping(
        train_module, "train", component,
        transform_graph=transform_component.transform_graph,
        examples=transform_component.examples, model=model, metrics=metrics,
        train_config_json=json.dumps(SMALL_TRAIN.to_dict()),
    )  # fmt: skip
    return SimpleNamespace(result=result, model=model, metrics=metrics)


@pytest.fixture(scope="session")
def trained(train_component):
    """A small two-tower model trained on `transformed` (a `TrainResult`; see
    `train_component`)."""
    return train_component.result


# -- one serving database per session, copied by the tests that need one ------------------------
SERVING_VERSION = "serve-v1"


@pytest.fixture(scope="session")
def serving_base(pg_server, trained, tmp_path_factory):
    """A database as it serves, kept as a template: `TINY_DATA` loaded, a snapshot of it,
    version SERVING_VERSION written from that snapshot by the batch writer, blessed and
    promoted, and the real-time queue the load filled emptied. Tests take a copy
    (`database_copy`) and may change it freely. A SimpleNamespace: `name`, `version`,
    `snapshot`, `cutoff_us`, `model_dir`, `truth`, `truth_path`, `loaded_queue` (user and
    video rows the load queued), `users` (users with decisions)."""
    from types import SimpleNamespace

    from swiperec.embeddings.store import IndexParams
    from swiperec.embeddings.writer import write_embeddings
    from swiperec.features.config import datetime_to_us
    from swiperec.registry.versions import promote, record_evaluation

    name = "serving_base"
    url = fresh_database(pg_server, name)
    conn = connect(url)
    dataset = generate(TINY_DATA)
    load_synthetic(conn, dataset)
    with conn.cursor() as cur:
        cur.execute("select count(*) filter (where kind = 'user'), count(*) filter"
                    " (where kind = 'video') from swiperec_private.embedding_queue")  # fmt: skip
        loaded_queue = cur.fetchone()
        cur.execute("select count(distinct user_id) from user_video_decisions")
        users = cur.fetchone()[0]
    conn.rollback()
    folder = tmp_path_factory.mktemp("serving-base")
    meta = take_snapshot(conn, folder / "snapshot")
    write_embeddings(
        trained.model_dir, SERVING_VERSION, str(folder / "snapshot"), database_url=url,
        rows_per_chunk=128, decisions_per_shard=800,
        index=IndexParams(maintenance_work_mem="64MB", parallel_workers=0),
    )  # fmt: skip
    record_evaluation(conn, SERVING_VERSION, trained.model_dir, {}, {"blessed": True})
    promote(conn, SERVING_VERSION)
    with conn, conn.cursor() as cur:
        cur.execute("delete from swiperec_private.embedding_queue")
    conn.close()
    return SimpleNamespace(
        name=name, version=SERVING_VERSION, snapshot=str(folder / "snapshot"),
        cutoff_us=datetime_to_us(meta.cutoff), model_dir=trained.model_dir,
        truth=dataset.ground_truth,
        truth_path=dataset.ground_truth.save(folder / "ground_truth.npz"),
        loaded_queue=loaded_queue, users=users,
    )  # fmt: skip


def database_copy(pg_server, template: str):
    """Yields the URL of a new database copied from `template`; drops it afterwards."""
    name = f"copy_{os.getpid()}_{next(_counter)}"
    admin = psycopg2.connect(pg_server.status().url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"create database {name} template {template}")
        yield _with_database(pg_server.status().url, name)
        with admin.cursor() as cur:
            cur.execute(f"drop database if exists {name} with (force)")
    finally:
        admin.close()


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """swiperec as a user installs it: the wheel of this checkout in a fresh virtualenv
    (`tests.installed.Installed`)."""
    from tests.installed import build_and_install

    return build_and_install(tmp_path_factory.mktemp("installed"))
