"""Each tensor is checked at its own scale: a tensor whose gradients are all small (an early
layer of a model behind a layer of tiny weights, an input behind a gate at 1e-7) is not
waved through by an atol set for larger gradients elsewhere."""

from __future__ import annotations

import sys
from typing import Literal

import numpy as np
import pytest

import nnplug


class SquareDense(nnplug.Layer):
    """y = x @ w.T + b with w square; ``bug`` breaks one gradient, keeping its shape."""

    class Config(nnplug.LayerConfig):
        type: Literal["square_dense_for_tests"] = "square_dense_for_tests"
        scale: float = 1.0
        bug: Literal["", "w_transposed", "b_doubled", "b_forgotten"] = ""

    def output_shape(self, in_shape):
        return in_shape

    def init_params(self, in_shape, rng):
        s = self.config.scale
        return {"w": s * rng.standard_normal((in_shape[0], in_shape[0])), "b": s * rng.standard_normal(in_shape[0])}

    def forward(self, params, x, *, training):
        return x @ params["w"].T + params["b"], x

    def backward(self, params, x, dy):
        dw, db = dy.T @ x, dy.sum(axis=0)
        if self.config.bug == "w_transposed":
            dw = dw.T.copy()
        if self.config.bug == "b_doubled":
            db = 2 * db
        if self.config.bug == "b_forgotten":
            db = np.zeros_like(db)
        return dy @ params["w"], {"w": dw, "b": db}


@nnplug.hookimpl
def nnplug_register_layers():
    return [SquareDense]


def _model(bug: str) -> nnplug.Model:
    """The first layer's gradients are about 1e-7, behind a layer of weights about 1e-6;
    the last layer's bias gradient is about 0.1."""
    layers = [{"type": "square_dense_for_tests", "name": "first", "bug": bug},
              {"type": "square_dense_for_tests", "name": "tiny", "scale": 1e-6},
              {"type": "dense", "name": "out", "units": 3}]
    registry = nnplug.Registry(plugins=[sys.modules[__name__], "nnplug_layers"])
    return nnplug.Model.from_config({"input": [4], "dtype": "float64", "layers": layers,
                                     "loss": {"type": "softmax_cross_entropy"}}, registry=registry)


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("bug", ["w_transposed", "b_doubled", "b_forgotten"])
def test_a_wrong_gradient_of_an_early_layer_behind_vanishing_gradients_fails(mode, bug):
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((4, 4)), rng.integers(0, 3, 4)
    report = nnplug.gradcheck(_model(bug), x, target, mode=mode, raise_on_failure=False)
    assert report.failures and report.worst.tensor.startswith("first/"), str(report)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_the_same_model_with_correct_gradients_passes(mode):
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((4, 4)), rng.integers(0, 3, 4)
    for seed in range(3):
        report = nnplug.gradcheck(_model(""), x, target, mode=mode, seed=seed, raise_on_failure=False)
        assert report.ok, str(report)
