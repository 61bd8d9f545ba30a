"""`tests.conftest._once_for_all_workers`: set-up shared by pytest-xdist's worker processes is
made once, whichever worker gets there first, and every worker gets the same result."""

import multiprocessing
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import _once_for_all_workers


def _factory(base: Path):
    """A stand-in for pytest's tmp_path_factory: a worker's basetemp under a shared folder."""
    return SimpleNamespace(getbasetemp=lambda: base)


def _worker(shared: str, worker: str, made_log: str, results):
    os.environ.update(PYTEST_XDIST_WORKER=worker, PYTEST_XDIST_TESTRUNUID="run-1")

    def make():
        with open(made_log, "a") as log:
            log.write(worker + "\n")
        time.sleep(0.5)  # long enough for the other worker to arrive while this one makes it
        return {"made_by": worker, "files": [f"{shared}/{worker}/snapshot"]}

    results.put(_once_for_all_workers(_factory(Path(shared) / worker), "data", make))


def test_two_workers_at_once_make_it_once_and_get_the_same_result(tmp_path):
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, as xdist's workers
    results = context.Queue()
    log = tmp_path / "made.log"
    workers = [context.Process(target=_worker, args=(str(tmp_path), name, str(log), results))
               for name in ("gw0", "gw1")]  # fmt: skip
    for worker in workers:
        worker.start()
    got = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(log.read_text().splitlines()) == 1  # made once
    assert got[0] == got[1]  # and both workers hold what it returned
    assert not list(tmp_path.glob("*.partial"))


def test_a_failed_make_leaves_nothing_and_the_next_worker_makes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "run-2")
    factory = _factory(tmp_path / "gw0")

    def failing():
        raise RuntimeError("the transform failed")

    with pytest.raises(RuntimeError, match="the transform failed"):
        _once_for_all_workers(factory, "data", failing)
    assert not list(tmp_path.glob("*.pickle"))
    assert _once_for_all_workers(factory, "data", lambda: "made") == "made"
    assert _once_for_all_workers(factory, "data", lambda: "again") == "made"  # kept, not remade


def test_without_xdist_it_makes_it_each_time(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    calls = []
    for _ in range(2):
        _once_for_all_workers(_factory(tmp_path / "x"), "data", lambda: calls.append(1))
    assert calls == [1, 1] and not list(tmp_path.iterdir())
