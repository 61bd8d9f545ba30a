"""Fault points: a process stops at the named point only, and the marker it leaves is whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swiperec import faults

STOP_AT = (
    "from swiperec.faults import fault_point; fault_point('a'); fault_point('b'); print('done')"
)


class Stopped(Exception):
    pass


def test_the_marker_is_renamed_into_place_with_the_whole_pid(tmp_path, monkeypatch):
    marker = tmp_path / "pid"
    monkeypatch.setenv("SWIPEREC_FAULT_POINT", "here")
    monkeypatch.setenv("SWIPEREC_FAULT_MARKER", str(marker))
    renamed = []
    real_replace = os.replace

    def replace(source, target):
        # Before the rename, the marker's name holds nothing and the partial file all of it.
        renamed.append((not marker.exists(), Path(source).read_text(), target))
        real_replace(source, target)

    def sleep(seconds):
        raise Stopped  # instead of waiting to be killed

    monkeypatch.setattr(faults.os, "replace", replace)
    monkeypatch.setattr(faults.time, "sleep", sleep)
    faults.fault_point("elsewhere")
    assert not renamed and not marker.exists()
    with pytest.raises(Stopped):
        faults.fault_point("here")
    assert renamed == [(True, str(os.getpid()), str(marker))]
    assert marker.read_text() == str(os.getpid())
    assert [path.name for path in tmp_path.iterdir()] == ["pid"]  # no partial file left


def run(tmp_path, point: str | None):
    marker = tmp_path / "pid"
    env = {**os.environ, "SWIPEREC_FAULT_MARKER": str(marker)}
    env.pop("SWIPEREC_FAULT_POINT", None)
    if point:
        env["SWIPEREC_FAULT_POINT"] = point
    process = subprocess.Popen([sys.executable, "-c", STOP_AT], env=env, stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    return process, marker


def test_a_process_waits_at_its_point_to_be_killed(tmp_path):
    process, marker = run(tmp_path, "b")
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        assert int(marker.read_text()) == process.pid
        time.sleep(0.2)
        assert process.poll() is None  # waiting at the point
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    assert process.stdout.read() == ""  # it never went past the point


def test_without_a_point_named_nothing_stops(tmp_path):
    process, marker = run(tmp_path, None)
    assert process.communicate(timeout=60)[0] == "done\n"
    assert not marker.exists()
