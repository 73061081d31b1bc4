"""Probe: from what size does a numpy operation pay for being split over two threads?

    python3 benchmarks/split_threshold.py [--threads 2] [--dtype float32]

Two equal halves of a stream of in-place adds run one after the other on one thread, then
side by side on two (numpy releases the GIL inside each add, and takes it back after). Below
some size the two threads spend more time handing the GIL to each other than they save; this
is where ``nnplug_layers.workers.MIN_OP_ELEMENTS`` comes from (measured on the project's
2-core machine: 4K-element adds ran about 2x slower on two threads, 16K broke even, 32K-64K
ran 1.4-1.6x faster). Prints the speedup (one thread's time / two threads' time) per size, the
median of several interleaved rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SIZES = (4096, 16384, 32768, 65536, 131072, 262144)
WORK_ELEMENTS = 1 << 24  # per half: the number of adds times their size


def speedups(size: int, dtype: str, threads: int, rounds: int) -> list[float]:
    halves = [np.random.default_rng(k).random(size).astype(dtype) for k in range(threads)]
    outs = [np.zeros_like(h) for h in halves]
    reps = max(20, WORK_ELEMENTS // size)

    def work(k: int) -> None:
        a, out = halves[k], outs[k]
        for _ in range(reps):
            np.add(out, a, out=out)

    def one_thread() -> None:
        for k in range(threads):
            work(k)

    with ThreadPoolExecutor(threads - 1) as pool:
        def side_by_side() -> None:
            futures = [pool.submit(work, k) for k in range(1, threads)]
            work(0)
            for f in futures:
                f.result()

        out = []
        for _ in range(rounds):
            times = []
            for fn in (one_thread, side_by_side):
                fn()  # warm
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            out.append(times[0] / times[1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.threads < 2:
        parser.error("--threads must be at least 2")
    print(f"elements per operation, {args.dtype}: speedup on {args.threads} threads (median of {args.rounds})")
    for size in SIZES:
        print(f"{size:>8}: {statistics.median(speedups(size, args.dtype, args.threads, args.rounds)):.2f}x")


if __name__ == "__main__":
    main()
