"""A test-only layer with a kink the checker must notice: y = |x - c|.

``c`` is drawn as 0 or 0.3, so on ``values="distinct"`` inputs (which include 0, never 0.3) about half
the draws sit on the kink and must be redrawn, and the others pass.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

import nnplug


class KinkConfig(nnplug.LayerConfig):
    type: Literal["kink_for_tests"] = "kink_for_tests"


class ShiftedAbs(nnplug.Layer):
    """y = |x - c|; c is drawn as 0 or 0.3, and "distinct" values include 0 (never 0.3)."""

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
