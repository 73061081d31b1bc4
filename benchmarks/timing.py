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
from functools import partial
from importlib import metadata
from typing import Any

import numpy as np

THREADS = 2
MIN_REPEAT_S = 0.02  # a repeat shorter than this is batched (timeit's autorange idea)
WARMUP_S = 0.1  # warm-up lasts at least this long, and at least one call
SWITCH_PAUSE_S = 0.25  # outlasts OpenBLAS's busy-waiting workers (about 0.1 s) when libraries alternate
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


def _warm(fn: Callable[[], Any]) -> int:
    """Warm ``fn`` up; return how many calls one repeat should make (at least one)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    while time.perf_counter() - start < WARMUP_S:
        fn()
    return 1 if first >= MIN_REPEAT_S else max(1, min(1000, int(MIN_REPEAT_S / max(first, 1e-7)) + 1))


def _repeat(fn: Callable[[], Any], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def _summary(samples: list[float], number: int) -> Timing:
    if len(samples) >= 4:
        q = statistics.quantiles(samples, n=4)
        iqr = q[2] - q[0]
    else:
        iqr = max(samples) - min(samples)
    return Timing(statistics.median(samples), min(samples), iqr, len(samples), number)


def measure(fn: Callable[[], Any], repeats: int) -> Timing:
    """Warm ``fn`` up, then time ``repeats`` repeats and summarise them (median, min, IQR)."""
    return measure_interleaved({"fn": fn}, {"fn": repeats})["fn"]


def measure_interleaved(fns: dict[str, Callable[[], Any]], repeats: dict[str, int],
                        pools: dict[str, str] | None = None) -> dict[str, Timing]:
    """Time several callables round-robin: repeat k of each runs before repeat k + 1 of any.

    On a shared machine the load changes over seconds; interleaving puts every framework's
    repeats in the same time windows, so a ratio of medians compares like with like.
    ``pools`` names each callable's thread pool ("numpy" by default, "torch"). When the pool
    changes, the timer first pauses ``SWITCH_PAUSE_S`` and makes one untimed call: OpenBLAS's
    idle workers busy-wait for about 0.1 s (its THREAD_TIMEOUT) before they sleep, and on 2
    cores they would steal a core from the other library's threads.
    """
    if any(r < 1 for r in repeats.values()):
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    pools = pools or {}
    numbers: dict[str, int] = {}
    previous = None
    for key, fn in fns.items():
        _settle(previous, key, pools, None)
        numbers[key] = _warm(fn)
        previous = key
    samples: dict[str, list[float]] = {key: [] for key in fns}
    for k in range(max(repeats.values())):
        for key, fn in fns.items():
            if k < repeats[key]:
                _settle(previous, key, pools, fn)
                samples[key].append(_repeat(fn, numbers[key]))
                previous = key
    return {key: _summary(samples[key], numbers[key]) for key in fns}


def _settle(previous: str | None, key: str, pools: dict[str, str], fn: Callable[[], Any] | None) -> None:
    if previous is None or pools.get(previous, "numpy") == pools.get(key, "numpy"):
        return
    time.sleep(SWITCH_PAUSE_S)
    if fn is not None:
        fn()


def pin_threads(with_torch: bool) -> Any:
    """Limit numpy's BLAS (and any OpenMP pool) to ``THREADS`` threads, and torch's pool.

    Returns the threadpoolctl limiter, which must stay alive for the limit to hold.
    """
    from threadpoolctl import threadpool_limits

    if with_torch:
        import torch

        torch.set_num_threads(THREADS)
    return threadpool_limits(limits=THREADS)


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
        "load_average_at_start": list(os.getloadavg()),
    }
    for name in ("scipy", "torch", "mygrad"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = None
    info["threadpools"] = [
        {k: pool.get(k) for k in ("user_api", "internal_api", "prefix", "version", "architecture",
                                  "num_threads")}
        for pool in threadpool_info()
    ]
    return info


def blas_warnings(env: dict[str, Any]) -> list[str]:
    """Warnings about settings known to slow numpy's OpenBLAS down."""
    what = {"OPENBLAS_CORETYPE": "forces the kernel family", "OPENBLAS_L2_SIZE": "overrides the cache size "
            "the GEMM blocking is tuned for"}
    found = [f"{var}={env['env'][var]} ({what[var]})" for var in what if var in env["env"]]
    out = []
    load = env["load_average_at_start"][0]
    if load > 0.5 * (env["cpu_count"] or 1):
        out.append(f"the 1-minute load average is {load:.1f} on {env['cpu_count']} CPUs: other processes "
                   "compete for the cores and the timings will be noisy")
    if found:
        out.append(f"{' and '.join(found)}: numpy's BLAS may run slower than it can; measure the default "
                   "with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py`")
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
    """numpy's square matmul rate (GFLOP/s, 2n³ flops) at each size; the best is the peak.

    A peak is what the machine can do, so each size's rate is taken from its fastest repeat
    (at least 15), not the median: a neighbour's load on a shared machine only slows it.
    """
    repeats = max(repeats, 15)
    rng = np.random.default_rng(0)
    best: dict[str, Any] = {"gflops": 0.0}
    per_size = {}
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        out = np.empty((n, n), dtype=dtype)
        timing = measure(partial(np.matmul, a, b, out=out), repeats)
        gflops = 2 * n**3 / timing.min_s / 1e9
        per_size[n] = round(gflops, 2)
        if gflops > best["gflops"]:
            best = {"gflops": gflops, "n": n, "timing": timing}
    best["per_size"] = per_size
    return best
