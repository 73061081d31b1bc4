"""Hypothesis strategies and helpers for testing layers (public API).

A layer's ``gradcheck_cases()`` returns a strategy of :class:`Case`: a config and the input
shapes (no batch axis). The checker draws the batch and the values; ``Case.values`` names
how values are drawn so that they stay off the layer's kinks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

Shape = tuple[int, ...]

#: How a case's input values are drawn, by name (see :func:`draw_values`).
VALUE_KINDS: dict[str, Callable[[Shape, np.random.Generator], np.ndarray]] = {}


def _value_kind(name: str) -> Callable[[Callable[[Shape, np.random.Generator], np.ndarray]],
                                       Callable[[Shape, np.random.Generator], np.ndarray]]:
    def register(fn: Callable[[Shape, np.random.Generator], np.ndarray]) -> Callable[[Shape, np.random.Generator], np.ndarray]:
        VALUE_KINDS[name] = fn
        return fn
    return register


@_value_kind("normal")
def _normal(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Standard normal values: for smooth layers."""
    return rng.standard_normal(shape)


@_value_kind("off_zero")
def _off_zero(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Normal values pushed at least 0.1 away from 0: for ReLU-like kinks at 0."""
    z = rng.standard_normal(shape)
    return np.sign(z) * (np.abs(z) + 0.1) + (z == 0) * 0.1


@_value_kind("distinct")
def _distinct(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of evenly spaced values in [-2, 2): every pair differs by at least
    4 / size, far more than the finite-difference step, so max-like windows have no near-ties."""
    size = int(np.prod(shape, dtype=np.int64))
    spacing = 4.0 / max(size, 1)
    return (rng.permutation(size) * spacing - 2.0).reshape(shape)


def draw_values(kind: str, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Values of ``shape`` drawn the way ``kind`` names (``normal``, ``off_zero``, ``distinct``)."""
    try:
        fn = VALUE_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown value kind {kind!r}; available: {', '.join(sorted(VALUE_KINDS))}") from None
    return fn(shape, rng)


@dataclass(frozen=True)
class Case:
    """One gradient-check case: a layer config (a dict, without ``type``), the input shapes
    without the batch axis (one per input), and how values are drawn."""

    config: dict[str, Any]
    in_shapes: tuple[Shape, ...]
    values: str = field(default="normal")


def shapes(min_dims: int = 1, max_dims: int = 3, min_side: int = 1, max_side: int = 5) -> st.SearchStrategy[Shape]:
    """Small array shapes (no batch axis)."""
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(tuple)
