"""What reusing conv2d's scratch buffers saves: page faults and time per training step.

    python benchmarks/scratch_reuse.py [--rounds N]

Runs the same training steps (the digits CNN at its batch size, and LeNet at batch 64) with
scratch buffers kept between calls (nnplug's default) and with none kept
(``scratch.SCRATCH_LIMIT = 0``: every buffer is allocated afresh, as before the scratch
existed), alternating the two in one process. Prints the median step time and the minor page
faults per step (``getrusage``; POSIX only).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from nets import digits_batch, digits_model, lenet_config, nnplug_step  # noqa: E402
from nnplug_layers import scratch  # noqa: E402

import nnplug  # noqa: E402


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _timed(step: Callable[[], object], calls: int) -> tuple[float, float]:
    """(seconds per step, minor page faults per step) over ``calls`` steps."""
    faults, start = _faults(), time.perf_counter()
    for _ in range(calls):
        step()
    return (time.perf_counter() - start) / calls, (_faults() - faults) / calls


def compare(name: str, step: Callable[[], object], rounds: int, calls: int) -> None:
    limits = {"kept (default)": scratch.SCRATCH_LIMIT, "none kept": 0}
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in limits}
    for _ in range(rounds):
        for label, limit in limits.items():
            scratch.SCRATCH_LIMIT = limit
            scratch.release()
            step()  # refill (or not) the scratch before timing
            results[label].append(_timed(step, calls))
    scratch.SCRATCH_LIMIT = limits["kept (default)"]
    print(name)
    medians = {label: statistics.median(t for t, _ in runs) for label, runs in results.items()}
    for label, runs in results.items():
        faults = statistics.median(f for _, f in runs)
        print(f"  scratch {label:15s} {medians[label] * 1e3:7.3f} ms/step  {faults:7.1f} page faults/step")
    print(f"  speedup from reuse: {medians['none kept'] / medians['kept (default)']:.2f}x")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=9, help="alternations of the two settings (default 9)")
    args = p.parse_args(argv)
    digits = digits_model("float32")
    compare(f"digits CNN step, float32, batch {digits_batch(digits)}",
            nnplug_step(digits, digits_batch(digits)), args.rounds, calls=100)
    lenet = nnplug.Model.from_config(lenet_config("float32"))
    compare("LeNet step, float32, batch 64", nnplug_step(lenet, 64), args.rounds, calls=10)


if __name__ == "__main__":
    main()
