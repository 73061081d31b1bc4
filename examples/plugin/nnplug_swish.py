"""nnplug-swish: an example third-party nnplug plugin, written only against nnplug's public API.

Two layers:

* ``swish`` (no parameters): y = x · σ(βx), β > 0 from the config.
* ``channel_scale`` (parameters ``weight`` and ``bias``, one per channel): y = x · w_c + b_c.

Both offer ``gradcheck_cases()``, so ``nnplug gradcheck`` and ``nnplug.testing.layer_test``
check them with no further test code.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field
from scipy.special import expit

import nnplug

Params = dict[str, np.ndarray]


class SwishConfig(nnplug.LayerConfig):
    type: Literal["swish"] = "swish"  # the registered type name
    beta: float = Field(1.0, gt=0, description="slope of the sigmoid gate")


class Swish(nnplug.Layer):
    """y = x · σ(βx). Shape (N, ...) -> same.

    Backward: dx = δ · (σ + βx · σ(1 − σ)), with σ = σ(βx).
    """

    Config = SwishConfig
    config: SwishConfig

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def forward(self, params: Params, x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        s = expit(self.config.beta * x)  # stable for large |x|; keeps float32
        return x * s, (x, s)

    def backward(self, params: Params, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Params]:
        x, s = cache
        return dy * (s + self.config.beta * x * s * (1 - s)), {}

    @classmethod
    def gradcheck_cases(cls) -> Any:
        from hypothesis import strategies as st

        from nnplug.testing import Case, shapes

        # Any shape and any gate slope: swish is smooth, so plain normal values will do.
        return st.builds(lambda shape, beta: Case({"beta": beta}, (shape,)),
                         shapes(min_dims=1, max_dims=3), st.floats(0.1, 3.0))


class ChannelScaleConfig(nnplug.LayerConfig):
    type: Literal["channel_scale"] = "channel_scale"
    bias: bool = True


class ChannelScale(nnplug.Layer):
    """y[n, c, ...] = x[n, c, ...] · weight[c] + bias[c]. Shape (N, C, ...) -> same.

    weight: (C,), starts at 1; bias: (C,), starts at 0. Backward: dx = δ · weight[c],
    ∂L/∂weight[c] = Σ δ · x and ∂L/∂bias[c] = Σ δ over every axis but the channels.
    """

    Config = ChannelScaleConfig
    config: ChannelScaleConfig

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) < 1:
            raise nnplug.ShapeError(f"channel_scale expects (C, ...) with a channel axis, received {in_shape}")
        return in_shape

    def param_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        channels = (in_shape[0],)
        return {"weight": channels, "bias": channels} if self.config.bias else {"weight": channels}

    def init_params(self, in_shape: tuple[int, ...], rng: np.random.Generator) -> Params:
        return {name: np.ones(shape) if name == "weight" else np.zeros(shape)
                for name, shape in self.param_shapes(in_shape).items()}

    @staticmethod
    def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
        return v.reshape((1, -1) + (1,) * (ndim - 2))  # (C,) -> (1, C, 1, ...) broadcasts over x

    def forward(self, params: Params, x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        y = x * self._per_channel(params["weight"], x.ndim)
        if self.config.bias:
            y = y + self._per_channel(params["bias"], x.ndim)
        return y, x

    def backward(self, params: Params, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, Params]:
        x = cache
        others = tuple(a for a in range(dy.ndim) if a != 1)  # every axis but the channels
        grads = {"weight": (dy * x).sum(axis=others)}
        if self.config.bias:
            grads["bias"] = dy.sum(axis=others)
        return dy * self._per_channel(params["weight"], dy.ndim), grads

    @classmethod
    def gradcheck_cases(cls) -> Any:
        from hypothesis import strategies as st

        from nnplug.testing import Case, shapes

        return st.builds(lambda shape, bias: Case({"bias": bias}, (shape,)),
                         shapes(min_dims=1, max_dims=3), st.booleans())


@nnplug.hookimpl
def nnplug_register_layers() -> list[type]:
    return [Swish, ChannelScale]
