"""Fault points: named places where a test stops a process on purpose, to kill it right there.

    fault_point("store.attach")   # does nothing unless SWIPEREC_FAULT_POINT names this point

A process whose environment has SWIPEREC_FAULT_POINT=<name> writes its pid to the file
SWIPEREC_FAULT_MARKER when it reaches that point, then waits there until it is killed. The
fault-injection tests kill the embedding writer (SIGKILL) at each stage of a refresh this way
and check that what serves is untouched and that the next run completes.
"""

from __future__ import annotations

import os
import time


def fault_point(name: str) -> None:
    """Stop here, for good, when SWIPEREC_FAULT_POINT is `name` (see above)."""
    if os.environ.get("SWIPEREC_FAULT_POINT") != name:
        return
    marker = os.environ.get("SWIPEREC_FAULT_MARKER")
    if marker:
        with open(marker, "w") as handle:
            handle.write(str(os.getpid()))
    while True:
        time.sleep(60)
