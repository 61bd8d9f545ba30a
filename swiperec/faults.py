"""Fault points: named places where a test stops a process on purpose, to kill it right there.

    fault_point("store.attach")   # does nothing unless SWIPEREC_FAULT_POINT names this point

A process whose environment has SWIPEREC_FAULT_POINT=<name> and SWIPEREC_FAULT_MARKER=<file>
writes its pid to that file (whole, by a rename) when it reaches that point, then waits there to
be killed. The fault-injection tests kill the embedding writer (SIGKILL) at each stage of a
refresh this way and check that what serves is untouched and that the next run completes. Both
variables are needed (a leaked SWIPEREC_FAULT_POINT alone does nothing), and a process nobody
kills exits after `WAIT_SECONDS` instead of holding its locks for ever.
"""

from __future__ import annotations

import os
import time

WAIT_SECONDS = 300


def fault_point(name: str) -> None:
    """Stop here when SWIPEREC_FAULT_POINT is `name` and SWIPEREC_FAULT_MARKER is set."""
    marker = os.environ.get("SWIPEREC_FAULT_MARKER")
    if os.environ.get("SWIPEREC_FAULT_POINT") != name or not marker:
        return
    # Renamed into place: a test that sees the file finds the whole pid in it.
    partial = f"{marker}.{os.getpid()}.partial"
    with open(partial, "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(partial, marker)
    time.sleep(WAIT_SECONDS)
    os._exit(70)  # nobody killed it: end without committing anything more
