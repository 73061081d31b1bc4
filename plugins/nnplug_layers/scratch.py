"""Scratch buffers kept between calls, one set per thread.

A convolution's im2col columns, padded images and product buffers live only inside one call.
Allocated afresh each time, buffers of a few hundred KiB come back from the C allocator as
new pages, and the kernel zero-fills each page on first touch: on this project's VM a
digits-CNN training step faulted in 182 pages, 28% of its time, and a LeNet step 3,650, 58%
(``benchmarks/scratch_reuse.py``). Reusing the buffers removes that, as PyTorch's oneDNN
kernels reuse a scratchpad.

Each thread has its own buffers, so the parts of a batch split over threads
(:mod:`nnplug_layers.workers`) never share one. A buffer is found by its key, shape and dtype;
the least recently used are dropped once a thread holds more than :data:`SCRATCH_LIMIT` bytes.
A buffer never leaves the call that asked for it: whatever a layer returns or caches is
allocated as usual.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import numpy as np

#: Bytes of scratch one thread keeps between calls; a single buffer larger than this is
#: allocated per call, as without scratch.
SCRATCH_LIMIT = 64 * 1024**2

_local = threading.local()
_all_pools: weakref.WeakSet[_Pool] = weakref.WeakSet()  # live threads' pools, for held_bytes
_registry_lock = threading.Lock()


class _Pool:
    """One thread's buffers, least recently used first."""

    def __init__(self) -> None:
        self.buffers: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self.nbytes = 0

    def get(self, key: Hashable, shape: tuple[int, ...], dtype: np.dtype, zeroed: bool) -> np.ndarray:
        full_key = (key, shape, dtype)
        buf = self.buffers.get(full_key)
        if buf is not None:
            self.buffers.move_to_end(full_key)
            return buf
        buf = np.zeros(shape, dtype) if zeroed else np.empty(shape, dtype)
        self._keep(full_key, buf)
        return buf

    def grown(self, tag: Hashable, size: int, dtype: np.dtype) -> np.ndarray:
        key = (tag, "grown", dtype)
        buf = self.buffers.get(key)
        if buf is not None and buf.size >= size:
            self.buffers.move_to_end(key)
            return buf[:size]
        if buf is not None:
            del self.buffers[key]
            self.nbytes -= buf.nbytes
        buf = np.empty(size, dtype)
        self._keep(key, buf)
        return buf

    def _keep(self, key: Hashable, buf: np.ndarray) -> None:
        if buf.nbytes > SCRATCH_LIMIT:
            return
        self.buffers[key] = buf
        self.nbytes += buf.nbytes
        while self.nbytes > SCRATCH_LIMIT:
            _, dropped = self.buffers.popitem(last=False)
            self.nbytes -= dropped.nbytes

    def clear(self) -> None:
        self.buffers.clear()
        self.nbytes = 0


def _pool() -> _Pool:
    pool: _Pool | None = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = _Pool()
        with _registry_lock:
            _all_pools.add(pool)
    return pool


def scratch(key: Hashable, shape: tuple[int, ...] | int, dtype: Any, *, zeroed: bool = False) -> np.ndarray:
    """A buffer of ``shape`` and ``dtype`` private to the calling thread, handed again to the
    next call on this thread with the same ``key``, shape and dtype.

    Its contents are whatever that key's previous user left, or zeros when it is first made
    and ``zeroed`` is true: a caller that keeps some cells zero (padding, junk columns) keys
    the buffer by everything that decides which cells those are, and never writes them.
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return _pool().get(key, shape, np.dtype(dtype), zeroed)


def workspace(tag: Hashable, size: int, dtype: Any) -> np.ndarray:
    """``size`` elements of a 1-D buffer private to the calling thread, of arbitrary contents:
    one buffer per ``tag`` and dtype, grown to the largest size asked for (a prefix is
    returned), so that layers of different shapes share it."""
    return _pool().grown(tag, int(size), np.dtype(dtype))


def held_bytes() -> int:
    """Bytes of scratch held now by every thread (reported beside peak memory)."""
    with _registry_lock:
        return sum(pool.nbytes for pool in _all_pools)


def release() -> None:
    """Drop the calling thread's scratch buffers (other threads keep theirs)."""
    _pool().clear()
