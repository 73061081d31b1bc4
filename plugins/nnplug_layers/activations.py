"""Elementwise activations: relu, leaky_relu, sigmoid, tanh. Shape (N, ...) -> same."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field
from scipy.special import expit

import nnplug

Params = dict[str, np.ndarray]


def _same_shape_cases(values: str) -> Any:
    from hypothesis import strategies as st

    from nnplug.testing import Case, shapes

    return st.builds(lambda s: Case({}, (s,), values=values), shapes(min_dims=1, max_dims=3))


class _Elementwise(nnplug.Layer):
    """Shared shape logic: the output has the input's shape."""

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape


class ReLUConfig(nnplug.LayerConfig):
    type: Literal["relu"] = "relu"


class ReLU(_Elementwise):
    """y = max(x, 0); dx = δ · [x > 0] (the subgradient 0 is taken at x = 0; a NaN input passes
    δ through, as PyTorch's ReLU does)."""

    Config = ReLUConfig

    def forward(self, params: Params, x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        y = np.maximum(x, 0)
        return y, y

    def backward(self, params: Params, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Params]:
        # ∂L/∂x in x's memory layout (y's), whatever δ's: see geometry.images_like. y ≠ 0 is
        # x > 0, except that y = NaN (x = NaN) passes δ as PyTorch does.
        return np.multiply(dy, cache != 0, out=np.empty_like(cache)), {}

    @classmethod
    def gradcheck_cases(cls) -> Any:
        return _same_shape_cases("off_zero")


class LeakyReLUConfig(nnplug.LayerConfig):
    type: Literal["leaky_relu"] = "leaky_relu"
    alpha: float = Field(0.01, ge=0, description="slope for x < 0")


class LeakyReLU(_Elementwise):
    """y = x for x > 0, αx otherwise; dx = δ for x > 0, αδ otherwise."""

    Config = LeakyReLUConfig
    config: LeakyReLUConfig

    def forward(self, params: Params, x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        positive = x > 0
        return np.where(positive, x, self.config.alpha * x), positive

    def backward(self, params: Params, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Params]:
        return np.where(cache, dy, self.config.alpha * dy), {}

    @classmethod
    def gradcheck_cases(cls) -> Any:
        from hypothesis import strategies as st

        from nnplug.testing import Case, shapes

        return st.builds(
            lambda s, a: Case({"alpha": a}, (s,), values="off_zero"),
            shapes(min_dims=1, max_dims=3), st.floats(0.0, 0.5),
        )


class SigmoidConfig(nnplug.LayerConfig):
    type: Literal["sigmoid"] = "sigmoid"


class Sigmoid(_Elementwise):
    """y = 1 / (1 + e^(−x)), computed without overflow; dx = δ · y (1 − y)."""

    Config = SigmoidConfig

    def forward(self, params: Params, x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        y = expit(x)  # stable for large |x|, keeps float32
        return y, y

    def backward(self, params: Params, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Params]:
        y = cache
        return dy * y * (1 - y), {}

    @classmethod
    def gradcheck_cases(cls) -> Any:
        return _same_shape_cases("normal")


class TanhConfig(nnplug.LayerConfig):
    type: Literal["tanh"] = "tanh"


class Tanh(_Elementwise):
    """y = tanh(x); dx = δ · (1 − y²)."""

    Config = TanhConfig

    def forward(self, params: Params, x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        y = np.tanh(x)
        return y, y

    def backward(self, params: Params, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Params]:
        y = cache
        return dy * (1 - y * y), {}

    @classmethod
    def gradcheck_cases(cls) -> Any:
        return _same_shape_cases("normal")
