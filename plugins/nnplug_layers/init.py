"""Weight initialisers shared by the layers with parameters."""

from __future__ import annotations

from typing import Literal

import numpy as np

Initializer = Literal["glorot_uniform", "he_normal", "he_uniform"]


def draw_weights(kind: Initializer, shape: tuple[int, ...], fan_in: int, fan_out: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Glorot: U(±sqrt(6 / (fan_in + fan_out))); He: N(0, 2 / fan_in) or U(±sqrt(6 / fan_in))."""
    if kind == "glorot_uniform":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=shape)
    if kind == "he_uniform":
        limit = np.sqrt(6.0 / fan_in)
        return rng.uniform(-limit, limit, size=shape)
    return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
