"""Timing primitives of the benchmark: pinned threads, warm-up, repeated medians, the GEMM peak.

Every measurement runs a zero-argument callable. A repeat that would last under
``MIN_REPEAT_S`` runs the callable several times in a row and divides, so that very short
cases (a dense layer, a loss) are not lost in timer noise; the statistics are over repeats.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

THREADS = 2
MIN_REPEAT_S = 0.02  # a repeat shorter than this is batched (timeit's autorange idea)
WARMUP_S = 0.1  # warm-up lasts at least this long, and at least one call
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


@dataclass
class Timing:
    """Seconds per call over ``repeats`` repeats of ``number`` calls each."""

    median_s: float
    min_s: float
    iqr_s: float
    repeats: int
    number: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(fn: Callable[[], Any], repeats: int) -> Timing:
    """Warm ``fn`` up, then time ``repeats`` repeats and summarise them (median, min, IQR)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    while time.perf_counter() - start < WARMUP_S:
        fn()
    number = 1 if first >= MIN_REPEAT_S else max(1, min(1000, int(MIN_REPEAT_S / max(first, 1e-7)) + 1))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
    if len(samples) >= 4:
        q = statistics.quantiles(samples, n=4)
        iqr = q[2] - q[0]
    else:
        iqr = max(samples) - min(samples)
    return Timing(statistics.median(samples), min(samples), iqr, repeats, number)


def pin_threads() -> Any:
    """Limit numpy's BLAS (and any OpenMP pool) to ``THREADS`` threads, torch too if present.

    Returns the threadpoolctl limiter, which must stay alive for the limit to hold.
    """
    from threadpoolctl import threadpool_limits

    limiter = threadpool_limits(limits=THREADS)
    try:
        import torch

        torch.set_num_threads(THREADS)
    except ImportError:
        pass
    return limiter


def environment() -> dict[str, Any]:
    """What a reader needs to trust the numbers: versions, CPU, BLAS kernels, thread pools."""
    from threadpoolctl import threadpool_info

    import nnplug

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "nnplug": nnplug.__version__,
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": THREADS,
        "env": {k: os.environ[k] for k in OPENBLAS_VARS if k in os.environ},
    }
    for name in ("scipy", "torch", "mygrad"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    info["threadpools"] = [
        {k: pool.get(k) for k in ("user_api", "internal_api", "prefix", "version", "architecture",
                                  "num_threads")}
        for pool in threadpool_info()
    ]
    return info


def blas_warnings(env: dict[str, Any]) -> list[str]:
    """Warnings about settings known to slow numpy's OpenBLAS down."""
    out = []
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in env["env"]:
            out.append(f"{var}={env['env'][var]} is set: it forces OpenBLAS's kernel choice and can slow "
                       f"numpy down; run `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python "
                       f"benchmarks/run.py` to measure the default kernel")
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gemm_peak(dtype: str, repeats: int, sizes: tuple[int, ...] = (512, 1024, 2048)) -> dict[str, Any]:
    """numpy's square matmul rate (GFLOP/s, 2n³ flops) at each size; the best is the peak."""
    rng = np.random.default_rng(0)
    best: dict[str, Any] = {"gflops": 0.0}
    per_size = {}
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        out = np.empty((n, n), dtype=dtype)
        timing = measure(lambda a=a, b=b, out=out: np.matmul(a, b, out=out), repeats)
        gflops = 2 * n**3 / timing.median_s / 1e9
        per_size[n] = round(gflops, 2)
        if gflops > best["gflops"]:
            best = {"gflops": gflops, "n": n, "timing": timing}
    best["per_size"] = per_size
    return best
