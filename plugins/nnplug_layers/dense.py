"""dense: a fully connected layer, laid out as PyTorch's Linear."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

import nnplug
from nnplug_layers.init import Initializer, draw_weights

Params = dict[str, np.ndarray]


class DenseConfig(nnplug.LayerConfig):
    type: Literal["dense"] = "dense"
    units: int = Field(..., ge=1, description="number of output features")
    bias: bool = True
    kernel_initializer: Initializer = "glorot_uniform"


def _like(param: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``param`` in a float ``x``'s dtype. A model casts its parameters once (this is then a
    no-op); a layer called directly with init_params' float64 weights keeps a float32 input
    float32. Integer inputs leave the weights as they are (float results, not truncated ones)."""
    return param.astype(x.dtype, copy=False) if x.dtype.kind == "f" else param


class Dense(nnplug.Layer):
    """y = x wᵀ + b.  x: (N, in) -> y: (N, units); w: (units, in), b: (units,).

    Backward: dx = δ w, ∂L/∂w = δᵀ x, ∂L/∂b = Σₙ δ.
    """

    Config = DenseConfig
    config: DenseConfig

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 1:
            raise nnplug.ShapeError(
                f"dense expects flat features (in,), received {in_shape}; put a flatten before it"
            )
        return (self.config.units,)

    def param_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"w": (self.config.units, in_shape[0])}
        if self.config.bias:
            shapes["b"] = (self.config.units,)
        return shapes

    def init_params(self, in_shape: tuple[int, ...], rng: np.random.Generator) -> Params:
        fan_in, units = in_shape[0], self.config.units
        params = {"w": draw_weights(self.config.kernel_initializer, (units, fan_in), fan_in, units, rng)}
        if self.config.bias:
            params["b"] = np.zeros(units)
        return params

    def forward(self, params: Params, x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        w = _like(params["w"], x)
        y = x @ w.T  # (N, in) @ (in, units) -> (N, units)
        if self.config.bias:
            y += _like(params["b"], x)
        return y, x

    def backward(self, params: Params, cache: Any, dy: np.ndarray
                 ) -> tuple[np.ndarray, Params]:
        dx = dy @ _like(params["w"], dy)  # (N, units) @ (units, in) -> (N, in)
        return dx, self.param_grads(params, cache, dy)

    def param_grads(self, params: Params, cache: Any, dy: np.ndarray) -> Params:
        """∂L/∂W = δᵀ·x and ∂L/∂b = Σ_n δ, without ∂L/∂x."""
        x = cache
        grads = {"w": dy.T @ x}  # (units, N) @ (N, in) -> (units, in)
        if self.config.bias:
            grads["b"] = dy.sum(axis=0)
        return grads

    @classmethod
    def gradcheck_cases(cls) -> Any:
        from hypothesis import strategies as st

        from nnplug.testing import Case

        return st.builds(
            lambda units, n_in, bias: Case({"units": units, "bias": bias}, ((n_in,),)),
            st.integers(1, 6), st.integers(1, 7), st.booleans(),
        )
