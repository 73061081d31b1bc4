"""A test-only layer with a kink the checker must notice: y = |x - c|.

``c`` is drawn as 0 or 0.3, so on :data:`GRID_WITH_ZERO` inputs (evenly spaced values that
include 0, never 0.3) about half the draws sit on the kink and must be redrawn, and the others
pass. (``distinct`` values stay off 0; tests register this kind with ``monkeypatch``.)
"""

from __future__ import annotations

from typing import Literal

import numpy as np

import nnplug

GRID_WITH_ZERO = "grid_with_zero"


def grid_with_zero(shape, rng):
    """A random permutation of evenly spaced values in [-2, 2), 0 among them for an even size."""
    size = int(np.prod(shape, dtype=np.int64))
    return (rng.permutation(size) * (4.0 / max(size, 1)) - 2.0).reshape(shape)


class KinkConfig(nnplug.LayerConfig):
    type: Literal["kink_for_tests"] = "kink_for_tests"


class ShiftedAbs(nnplug.Layer):
    """y = |x - c|; c is drawn as 0 or 0.3, and grid_with_zero values include 0 (never 0.3)."""

    Config = KinkConfig

    def output_shape(self, in_shape):
        return in_shape

    def init_params(self, in_shape, rng):
        return {"c": np.full(in_shape, 0.0 if rng.random() < 0.5 else 0.3)}

    def forward(self, params, x, *, training):
        d = x - params["c"]
        return np.abs(d), np.sign(d)

    def backward(self, params, cache, dy):
        return dy * cache, {"c": -(dy * cache).sum(axis=0)}
