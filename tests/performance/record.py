"""What every results file records: the machine a benchmark ran on, and how fast it was at the
time (the calibration).

These machines differ 3-4x from one day or host to the next, so every results file records,
beside its figures, two fixed CPU reference workloads timed in the same run:

- `matmul_gflops`: float32 1024 x 1024 matrix products with numpy's BLAS (all cores), best of
  five: what the model's dense layers and the vector maths get;
- `python_mops`: a pure-Python integer loop, millions of iterations per second, best of five:
  what the interpreter-bound code (Beam's DoFns, the example builder, drivers) gets.

A time from another machine is compared after scaling by the ratio of the relevant reference
(`tests.performance.suite.calibrated`), never raw.

Each also records the widest vector instructions TensorFlow's oneDNN kernels use there
(`vector_isa`) and the host's caches (`cpu_caches`): oneDNN chooses its code by the first and
blocks its products by the second, and rounds differently with each, so the same seeded
training on the same data can give another model on another host (and every figure that
depends on the model's vectors with it).
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
_MATMUL_N = 1024
_LOOP_N = 2_000_000


def _best_of(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def calibration() -> dict:
    """The two reference rates, measured now (about one second)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((_MATMUL_N, _MATMUL_N), dtype=np.float32)
    b = rng.standard_normal((_MATMUL_N, _MATMUL_N), dtype=np.float32)
    a @ b  # warm the BLAS threads
    matmul_s = _best_of(lambda: a @ b)

    def loop():
        total = 0
        for i in range(_LOOP_N):
            total += i & 7
        return total

    loop_s = _best_of(loop)
    return {
        "matmul_gflops": round(2 * _MATMUL_N**3 / matmul_s / 1e9, 1),
        "python_mops": round(_LOOP_N / loop_s / 1e6, 1),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# The vector instruction sets the compiled kernels dispatch on, widest first: (the
# /proc/cpuinfo flag that offers it, its name, the oneDNN cap names that stop at it).
_VECTOR_ISAS = (
    ("avx512f", "AVX-512", ("AVX512", "AVX10")),
    ("avx2", "AVX2", ("AVX2",)),
    ("avx", "AVX", ("AVX",)),
    ("sse4_1", "SSE4.1", ("SSE41",)),
)


def vector_isa(cpu_flags: str | None = None, onednn_cap: str | None = None) -> str:
    """The widest vector instructions TensorFlow's oneDNN kernels use here: the host's (the
    `flags` line `cpu_flags` of /proc/cpuinfo; default: this host's), or the narrower set that
    `onednn_cap` caps them at (oneDNN's `ONEDNN_MAX_CPU_ISA`, e.g. "AVX2" or
    "AVX512_CORE_VNNI"; default: this process's, or the older `DNNL_MAX_CPU_ISA`). One of
    "AVX-512", "AVX2", "AVX", "SSE4.1", "older"; "unknown" without /proc/cpuinfo."""
    if cpu_flags is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpu_flags = next((line for line in f if line.startswith("flags")), "")
        except OSError:
            cpu_flags = ""
    if onednn_cap is None:
        onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    flags = set(cpu_flags.partition(":")[2].split())
    if not flags:
        return "unknown"
    offered = [i for i, (flag, _, _) in enumerate(_VECTOR_ISAS) if flag in flags]
    widest = min(offered, default=len(_VECTOR_ISAS))
    cap = (onednn_cap or "").strip().upper()
    capped = [i for i, (_, _, names) in enumerate(_VECTOR_ISAS) if cap.startswith(names)]
    widest = max(widest, min(capped, default=widest))  # "ALL" or none: no cap
    return _VECTOR_ISAS[widest][1] if widest < len(_VECTOR_ISAS) else "older"


def _index_number(folder: Path) -> int:
    number = folder.name.removeprefix("index")
    return int(number) if number.isdigit() else 0


def cpu_caches(folder: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> str:
    """The first CPU's caches as Linux lists them, e.g. "L1d 48K, L1i 64K, L2 2048K, L3 30720K";
    "unknown" where it does not."""
    caches = []
    for index in sorted(folder.glob("index*"), key=_index_number):
        try:
            level, kind, size = (
                (index / name).read_text().strip() for name in ("level", "type", "size")
            )
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        caches.append(f"L{level}{suffix} {size}")
    return ", ".join(caches) or "unknown"


def machine() -> dict:
    """The host, its load and its calibration, now."""
    import psutil

    figures = {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "vector_isa": vector_isa(),
        "cpu_caches": cpu_caches(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    figures["calibration"] = calibration()
    return figures


def add_out_argument(parser, default) -> None:
    """`--out`: where the results file goes (the suite writes each run's files apart)."""
    parser.add_argument(
        "--out", type=Path, default=None, help=f"results file (default: results/{default})"
    )


def save(figures: dict, out: Path | None, default: str) -> Path:
    """Write `figures` with the machine and its calibration (measured now, after the run, unless
    the bench recorded one already) as JSON to `out`, or to results/`default`."""
    figures.setdefault("machine", machine())
    path = Path(out) if out else RESULTS / default
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, default=str))
    return path
