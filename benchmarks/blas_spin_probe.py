"""Probe: does splitting a batch over two threads pay inside a network?

    python3 benchmarks/blas_spin_probe.py [--rounds 15]
    OPENBLAS_THREAD_TIMEOUT=4 python3 benchmarks/blas_spin_probe.py     # workers sleep at once

After a product that used its threads, OpenBLAS's idle workers busy-wait for new work (about
0.1 s, its THREAD_TIMEOUT) before they sleep. In a network some layer's GEMM ran a moment
before every layer that splits its batch (``nnplug_layers.workers``), so one of the split's
two threads shares its core with a spinning worker. This probe times the same work, two
halves of a stream of 64K-element numpy operations, on one thread and split over two
(``run_parts``), in three states: after an idle pause, right after a two-thread GEMM (a
layer in a network), and right after another split (a layer timed alone in a loop). It
prints the split's speedup and, for the slower half, its wall time over its CPU time: a half
that waited for a core reads about 2.

Measured on the project's 2-core VM (several runs): right after another split the split ran
1.8-1.9x faster; right after a GEMM 0.95-0.99x, its slower half at 2.0x wall over CPU; after
an idle pause 0.95-1.06x. With OPENBLAS_THREAD_TIMEOUT=4 the split ran 1.5-1.6x faster
after a GEMM, but every multi-threaded GEMM then wakes sleeping workers, and a LeNet float32
step ran 7% slower with it, so nnplug leaves it alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from nnplug_layers.workers import run_parts
from threadpoolctl import threadpool_limits

SIZE = 1 << 16  # elements per operation: at the split threshold, MIN_OP_ELEMENTS
REPS = 200  # operations per half: a few milliseconds, like one layer's part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    limiter = threadpool_limits(2)  # noqa: F841 (kept alive: the limit holds while it does)
    rng = np.random.default_rng(0)
    a, b = rng.random((256, 256)), rng.random((256, 256))
    halves = [rng.random(SIZE) for _ in range(2)]
    outs = [np.empty(SIZE) for _ in range(2)]

    def half(k: int, _stop: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(REPS):
            np.multiply(halves[k], 1.0001, out=outs[k])
        return time.perf_counter() - wall, time.thread_time() - cpu

    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "unset")
    print(f"OPENBLAS_THREAD_TIMEOUT={timeout}; two halves of {REPS} operations on {SIZE} float64 "
          f"elements; median of {args.rounds} rounds")

    def gemm() -> None:
        a @ b  # OpenBLAS's workers run, then spin

    def split_section() -> None:  # what a layer timed alone in a loop ran just before
        run_parts(half, [(0, 1), (1, 2)])

    states = (("after a 0.3 s pause", gemm, 0.3), ("right after a 2-thread GEMM", gemm, 0.0),
              ("right after another split", split_section, 0.0))
    for state, before, pause in states:
        time.sleep(0.3)  # the previous state's GEMM workers stop spinning
        one, two, slowest = [], [], []
        for _ in range(args.rounds):
            for split in (False, True):
                before()
                time.sleep(pause)
                start = time.perf_counter()
                parts = run_parts(half, [(0, 1), (1, 2)]) if split else [half(0, 1), half(1, 2)]
                elapsed = time.perf_counter() - start
                if split:
                    two.append(elapsed)
                    slowest.append(max(wall / max(cpu, 1e-9) for wall, cpu in parts))
                else:
                    one.append(elapsed)
        t_one, t_two = statistics.median(one), statistics.median(two)
        print(f"{state:28s}: one thread {t_one * 1e3:6.2f} ms, split {t_two * 1e3:6.2f} ms, "
              f"speedup {t_one / t_two:.2f}x; slower half's wall/CPU {statistics.median(slowest):.2f}")


if __name__ == "__main__":
    main()
