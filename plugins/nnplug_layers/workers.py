"""Splitting a layer's batch over threads, as PyTorch splits its convolutions over the batch.

numpy's BLAS spreads one matrix product over its threads, but the copies around it (im2col,
col2im, layout changes) run on one core, which leaves the others idle for a third of a
convolution. Giving each thread its own contiguous part of the batch instead, with BLAS held
to one thread meanwhile, keeps every core busy for the whole pass: numpy releases the GIL in
both its copies and its BLAS calls.

Splitting pays only when every numpy operation of a part is large: two threads hand the GIL
to each other around each operation, which costs more than it saves on small arrays
(``benchmarks/split_threshold.py`` on this project's 2-core machine: adds of 4K elements ran
2x slower on two threads than on one, 16K broke even, 32K-64K ran 1.4-1.6x faster). Smaller
work runs on the calling thread alone, with BLAS's own threads inside its matrix products.

The number of threads is the number numpy's BLAS may use, so ``threadpoolctl``'s
``threadpool_limits(1)`` (or ``OPENBLAS_NUM_THREADS=1``) makes every layer sequential. The
parts are a function of the batch size and that number only, so results are deterministic for
a given thread count.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_controller: Any = None  # threadpoolctl's BLAS controllers, found once
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_active = 0  # parallel sections running now (BLAS held to 1 thread while > 0)
_saved_limits: list[int] = []  # each BLAS library's thread count, restored by the last section


def _blas() -> Any:
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


def blas_threads() -> int:
    """Threads numpy's BLAS may use now (1 when no BLAS is found); while a parallel section
    runs, the count it started from."""
    with _lock:
        counts = _saved_limits if _active else [lib.num_threads for lib in _blas().lib_controllers]
    return max(counts, default=1)


#: The batch is split only while every numpy operation of a part touches at least this many
#: elements (see the module docstring).
MIN_OP_ELEMENTS = 1 << 16


def batch_split(batch: int, op_elements: int) -> list[tuple[int, int]]:
    """Ranges of the batch for a layer whose numpy operations each touch ``op_elements``
    values when the batch is one part: one range per BLAS thread, as long as each range's
    operations keep :data:`MIN_OP_ELEMENTS`; the whole batch otherwise."""
    if op_elements < 2 * MIN_OP_ELEMENTS:  # too small for two parts, whatever the threads
        return [(0, batch)]
    return split_batch(batch, min(blas_threads(), op_elements // MIN_OP_ELEMENTS))


def split_batch(batch: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, stop) ranges covering ``range(batch)``, sizes within one."""
    parts = max(1, min(parts, batch))
    return [(batch * i // parts, batch * (i + 1) // parts) for i in range(parts)]


def run_parts(task: Callable[[int, int], T], bounds: Sequence[tuple[int, int]]) -> list[T]:
    """``[task(start, stop) for each range]``, the ranges on separate threads with BLAS held to
    one thread; the calling thread runs the first range itself. Results keep the ranges'
    order; the first exception raised is re-raised here after every range has finished. A
    single range runs here, BLAS untouched."""
    if len(bounds) == 1:
        return [task(*bounds[0])]
    _enter()
    try:
        pool = _get_pool(len(bounds) - 1)
        futures: list[Future[T]] = [pool.submit(task, *span) for span in bounds[1:]]
        try:
            first = task(*bounds[0])
        finally:
            done = [_outcome(future) for future in futures]  # wait for all before leaving
        for _, error in done:
            if error is not None:
                raise error
        return [first, *(value for value, _ in done)]
    finally:
        _exit()


def _outcome(future: Future[T]) -> tuple[Any, BaseException | None]:
    try:
        return future.result(), None
    except BaseException as error:  # handed back to the caller, never swallowed
        return None, error


def _get_pool(workers: int) -> ThreadPoolExecutor:
    """The shared pool of at least ``workers`` threads (created on first use, grown if asked)."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)  # its threads finish their current parts, then exit
            _pool, _pool_size = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nnplug-batch"), workers
        return _pool


def _enter() -> None:
    """Hold BLAS to one thread; with a count so that overlapping sections (several threads
    running layers at once) restore the user's setting only when the last one ends."""
    global _active, _saved_limits
    with _lock:
        if _active == 0:
            _saved_limits = [lib.num_threads for lib in _blas().lib_controllers]
            for lib in _blas().lib_controllers:
                lib.set_num_threads(1)
        _active += 1


def _exit() -> None:
    global _active
    with _lock:
        _active -= 1
        if _active == 0:
            for lib, count in zip(_blas().lib_controllers, _saved_limits):
                lib.set_num_threads(count)


def _reset_after_fork() -> None:
    """A forked child has none of the parent's threads: start from a fresh lock and pool, and
    give BLAS back the parent's setting if the fork happened inside a parallel section."""
    global _lock, _pool, _pool_size, _active
    _lock, _pool, _pool_size = threading.Lock(), None, 0
    if _active and _controller is not None:
        for lib, count in zip(_controller.lib_controllers, _saved_limits):
            lib.set_num_threads(count)
    _active = 0


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_reset_after_fork)
