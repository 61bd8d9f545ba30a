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
(`vector_isa`): oneDNN chooses its code by them and rounds differently with each, so the same
seeded training on the same data can give another model on another host (and every figure that
depends on the model's vectors with it); and the host's caches (`cpu_caches`), by which oneDNN
sizes its blocks.
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


# The vector instruction sets TensorFlow's oneDNN kernels dispatch on, widest first: its name
# here, the /proc/cpuinfo flags a host needs for it, and the `ONEDNN_MAX_CPU_ISA` values that
# cap oneDNN at it (oneDNN reads only these exact names; any other value sets no cap).
_VECTOR_ISAS = (
    ("AVX-512", {"avx512f", "avx512bw", "avx512vl", "avx512dq"},
     {"AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_FP16",
      "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX",
      "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2"}),
    ("AVX2", {"avx2"}, {"AVX2", "AVX2_VNNI", "AVX2_VNNI_2"}),
    ("AVX", {"avx"}, {"AVX"}),
    ("SSE4.1", {"sse4_1"}, {"SSE41"}),
)  # fmt: skip


def vector_isa(cpu_flags: str | None = None, onednn_cap: str | None = None) -> str:
    """The widest vector instructions TensorFlow's oneDNN kernels use here: the host's (the
    `flags` line `cpu_flags` of /proc/cpuinfo; default: this host's), or the narrower set that
    `onednn_cap` caps them at (oneDNN's `ONEDNN_MAX_CPU_ISA`, e.g. "AVX2" or
    "AVX512_CORE_VNNI"; default: this process's, else the older
    `DNNL_MAX_CPU_ISA`). One of "AVX-512", "AVX2", "AVX", "SSE4.1", "older"; "unknown" without
    /proc/cpuinfo."""
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
    offered = [i for i, (_, needs, _) in enumerate(_VECTOR_ISAS) if needs <= flags]
    capped = [i for i, (_, _, caps) in enumerate(_VECTOR_ISAS) if (onednn_cap or "") in caps]
    if not offered:
        return "older"
    return _VECTOR_ISAS[max([min(offered), *capped])][0]  # the narrower of the two


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
