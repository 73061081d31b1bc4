"""Layers that only move values: flatten, add (two inputs) and concat (along channels)."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field

import nnplug
from nnplug_layers.geometry import batch_innermost, images_like

Params = dict[str, np.ndarray]


class FlattenConfig(nnplug.LayerConfig):
    type: Literal["flatten"] = "flatten"


class Flatten(nnplug.Layer):
    """(N, d1, d2, ...) -> (N, d1·d2·...), in C order; backward reshapes δ back."""

    Config = FlattenConfig

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(in_shape),)

    def forward(self, params: Params, x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        return x.reshape(x.shape[0], -1), (x.shape, batch_innermost(x))

    def backward(self, params: Params, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Params]:
        shape, batch_inner = cache
        dx = images_like(batch_inner, shape, dy.dtype)  # a copy (never aliasing δ) in x's layout
        dx[...] = dy.reshape(shape)
        return dx, {}

    @classmethod
    def gradcheck_cases(cls) -> Any:
        from hypothesis import strategies as st

        from nnplug.testing import Case, shapes

        return st.builds(lambda s: Case({}, (s,)), shapes(min_dims=1, max_dims=3))


class AddConfig(nnplug.LayerConfig):
    type: Literal["add"] = "add"


class Add(nnplug.Layer):
    """y = a + b (a residual connection); both inputs receive δ. Shapes must be equal."""

    Config = AddConfig
    n_inputs = 2

    def output_shape(self, in_shape: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
        a, b = in_shape
        if a != b:
            raise nnplug.ShapeError(f"add expects two inputs of one shape, received {a} and {b}")
        return a

    def forward(self, params: Params, x: tuple[np.ndarray, ...], *, training: bool) -> tuple[np.ndarray, Any]:
        a, b = x
        return a + b, None

    def backward(self, params: Params, cache: Any, dy: np.ndarray) -> tuple[Any, Params]:
        return (dy.copy(), dy.copy()), {}

    @classmethod
    def gradcheck_cases(cls) -> Any:
        from hypothesis import strategies as st

        from nnplug.testing import Case, shapes

        return st.builds(lambda s: Case({}, (s, s)), shapes(min_dims=1, max_dims=3))


class ConcatConfig(nnplug.LayerConfig):
    type: Literal["concat"] = "concat"
    axis: int = Field(1, ge=1, description="axis counted with the batch axis as 0; 1 is channels")


class Concat(nnplug.Layer):
    """y = [a, b] along ``axis`` (channels by default); δ is split back at the same place."""

    Config = ConcatConfig
    config: ConcatConfig
    n_inputs = 2

    def output_shape(self, in_shape: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
        a, b = in_shape
        k = self.config.axis - 1
        if len(a) != len(b) or k >= len(a):
            raise nnplug.ShapeError(
                f"concat along axis {self.config.axis} expects two inputs of one rank with that "
                f"axis, received {a} and {b}"
            )
        if a[:k] + a[k + 1:] != b[:k] + b[k + 1:]:
            raise nnplug.ShapeError(
                f"concat along axis {self.config.axis} expects inputs equal on every other axis, "
                f"received {a} and {b}"
            )
        return (*a[:k], a[k] + b[k], *a[k + 1:])

    def forward(self, params: Params, x: tuple[np.ndarray, ...], *, training: bool) -> tuple[np.ndarray, Any]:
        a, b = x
        return np.concatenate((a, b), axis=self.config.axis), a.shape[self.config.axis]

    def backward(self, params: Params, cache: Any, dy: np.ndarray) -> tuple[Any, Params]:
        da, db = np.split(dy, [cache], axis=self.config.axis)
        return (da.copy(), db.copy()), {}

    @classmethod
    def gradcheck_cases(cls) -> Any:
        from hypothesis import strategies as st

        from nnplug.testing import Case, shapes

        @st.composite
        def cases(draw: Any) -> Any:
            s = draw(shapes(min_dims=1, max_dims=3))
            axis = draw(st.integers(1, len(s)))
            other = list(s)
            other[axis - 1] = draw(st.integers(1, 4))
            return Case({"axis": axis}, (s, tuple(other)))

        return cases()
