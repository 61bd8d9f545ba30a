"""Fault points: a process stops at the named point only, and the marker it leaves is whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

STOP_AT = (
    "from swiperec.faults import fault_point; fault_point('a'); fault_point('b'); print('done')"
)


def run(tmp_path, point: str | None):
    marker = tmp_path / "pid"
    env = {**os.environ, "SWIPEREC_FAULT_MARKER": str(marker)}
    env.pop("SWIPEREC_FAULT_POINT", None)
    if point:
        env["SWIPEREC_FAULT_POINT"] = point
    process = subprocess.Popen([sys.executable, "-c", STOP_AT], env=env, stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    return process, marker


def test_a_process_stops_at_its_point_and_the_marker_holds_its_whole_pid(tmp_path):
    process, marker = run(tmp_path, "b")
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():  # the first moment it is there, the pid is whole
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
        assert int(marker.read_text()) == process.pid
        assert [path.name for path in tmp_path.iterdir()] == ["pid"]  # no partial file left
        time.sleep(0.2)
        assert process.poll() is None  # waiting at the point, to be killed
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    assert process.stdout.read() == ""


def test_without_a_point_named_nothing_stops(tmp_path):
    process, marker = run(tmp_path, None)
    assert process.communicate(timeout=60)[0] == "done\n"
    assert not marker.exists()
