"""Small layers for the checker's numeric tests: curves with offsets and mistakes, a layer
norm, a tiny gate, a mask, a two-input gate, a positive parameter and a bias."""

from __future__ import annotations

from typing import Literal

import numpy as np

import nnplug

FUNCTIONS = {  # name: (f, f')
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "exp": (np.exp, np.exp),
    "quartic": (lambda x: x**4, lambda x: 4 * x**3),
    "square": (lambda x: x**2, lambda x: 2 * x),
    "identity": (lambda x: x, np.ones_like),
}


class Elementwise(nnplug.Layer):
    """y = scale·f(x) + offset, with ``wrong`` scaling dx (``column``: the last feature only)."""

    class Config(nnplug.LayerConfig):
        type: Literal["elementwise_for_tests"] = "elementwise_for_tests"
        fn: Literal["tanh", "exp", "quartic", "square", "identity"] = "tanh"
        scale: float = 1.0
        offset: float = 0.0
        wrong: float = 1.0
        column: bool = False

    def output_shape(self, in_shape):
        return in_shape

    def forward(self, params, x, *, training):
        c = self.config
        f, _ = FUNCTIONS[c.fn]
        return (x.dtype.type(c.scale) * f(x) + x.dtype.type(c.offset)).astype(x.dtype), x

    def backward(self, params, cache, dy):
        c = self.config
        _, df = FUNCTIONS[c.fn]
        dx = (dy * cache.dtype.type(c.scale) * df(cache)).astype(cache.dtype)
        if c.column:
            dx[..., -1] *= c.wrong
        else:
            dx *= cache.dtype.type(c.wrong)
        return dx, {}


class LayerNorm(nnplug.Layer):
    """(x - mean) / sqrt(var + 1e-5) over the features; ``wrong`` scales dx."""

    class Config(nnplug.LayerConfig):
        type: Literal["layernorm_for_tests"] = "layernorm_for_tests"
        wrong: float = 1.0

    def output_shape(self, in_shape):
        return in_shape

    def forward(self, params, x, *, training):
        centred = x - x.mean(-1, keepdims=True)
        std = np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-5)
        return centred / std, (centred / std, std)

    def backward(self, params, cache, dy):
        y, std = cache
        dx = (dy - dy.mean(-1, keepdims=True) - y * (dy * y).mean(-1, keepdims=True)) / std
        return dx * self.config.wrong, {}


class LayerScale(nnplug.Layer):
    """y = x + g·tanh(x @ W), g per feature initialised at 1e-6; ``drop_branch`` leaves the
    g branch out of dx (its parameter gradients stay right)."""

    class Config(nnplug.LayerConfig):
        type: Literal["layerscale_for_tests"] = "layerscale_for_tests"
        drop_branch: bool = False

    def output_shape(self, in_shape):
        return in_shape

    def init_params(self, in_shape, rng):
        n = in_shape[0]
        return {"w": rng.standard_normal((n, n)) / np.sqrt(n), "g": np.full(n, 1e-6)}

    def forward(self, params, x, *, training):
        t = np.tanh(x @ params["w"])
        return x + params["g"] * t, (x, t)

    def backward(self, params, cache, dy):
        x, t = cache
        dz = dy * params["g"] * (1 - t * t)
        dx = dy.copy() if self.config.drop_branch else dy + dz @ params["w"].T
        return dx, {"w": x.T @ dz, "g": (dy * t).sum(0)}


class MaskedFill(nnplug.Layer):
    """Every fourth feature replaced by -1e9 (a causal mask's fill): those entries are flat."""

    class Config(nnplug.LayerConfig):
        type: Literal["masked_fill_for_tests"] = "masked_fill_for_tests"

    def output_shape(self, in_shape):
        return in_shape

    def _masked(self, a):
        return np.arange(a.shape[-1]) % 4 == 3

    def forward(self, params, x, *, training):
        return np.where(self._masked(x), -1e9, x), None

    def backward(self, params, cache, dy):
        return np.where(self._masked(dy), 0.0, dy), {}


class Gate(nnplug.Layer):
    """y = x0 · sigmoid(x1); ``wrong`` scales dx0."""

    n_inputs = 2

    class Config(nnplug.LayerConfig):
        type: Literal["gate_for_tests"] = "gate_for_tests"
        wrong: float = 1.0

    def output_shape(self, in_shapes):
        return in_shapes[0]

    def forward(self, params, xs, *, training):
        gate = 1 / (1 + np.exp(-np.clip(xs[1], -700, 700)))
        return xs[0] * gate, (xs[0], gate)

    def backward(self, params, cache, dy):
        x0, gate = cache
        return (dy * gate * self.config.wrong, dy * x0 * gate * (1 - gate)), {}


class SoftSign(nnplug.Layer):
    """x / sqrt(x² + eps), eps a parameter initialised at 1e-3 that must stay positive."""

    class Config(nnplug.LayerConfig):
        type: Literal["softsign_eps_for_tests"] = "softsign_eps_for_tests"

    def output_shape(self, in_shape):
        return in_shape

    def init_params(self, in_shape, rng):
        return {"eps": np.full(in_shape, 1e-3)}

    def forward(self, params, x, *, training):
        d = np.sqrt(x * x + params["eps"])
        return x / d, (x, d)

    def backward(self, params, cache, dy):
        x, d = cache
        return dy * params["eps"] / d**3, {"eps": (dy * -0.5 * x / d**3).sum(0)}


class Bias(nnplug.Layer):
    """y = x + b, b: (d,) for x: (N, d); dx a fresh copy of dy."""

    class Config(nnplug.LayerConfig):
        type: Literal["bias_for_tests"] = "bias_for_tests"

    def output_shape(self, in_shape):
        return in_shape

    def init_params(self, in_shape, rng):
        return {"b": rng.standard_normal(in_shape)}

    def forward(self, params, x, *, training):
        return x + params["b"], None

    def backward(self, params, cache, dy):
        return dy.copy(), {"b": dy.sum(0)}
