"""A layer whose parameters include a 0-d one (shape ``()``), a zero-size one and names with
dots and dashes: its gradients check and an optimizer moves it; a numpy scalar given back as the
0-d gradient is named as such, not as a shape; a name holding a slash is refused."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest

import nnplug
from nnplug.optim import make_optimizer


class _GainConfig(nnplug.LayerConfig):
    type: Literal["gain_for_tests"] = "gain_for_tests"


class _Gain(nnplug.Layer):
    """y = k·x + bias-1 (+ the sum of an empty parameter). (d,) -> (d,)."""

    Config = _GainConfig

    def output_shape(self, in_shape: Any) -> Any:
        return in_shape

    def param_shapes(self, in_shape: Any) -> Any:
        return {"k": (), "bias-1": in_shape, "none.yet": (0,)}

    def init_params(self, in_shape: Any, rng: np.random.Generator) -> Any:
        return {"k": np.array(1.0), "bias-1": rng.standard_normal(in_shape), "none.yet": np.zeros(0)}

    def forward(self, params: Any, x: Any, *, training: bool) -> Any:
        return params["k"] * x + params["bias-1"] + params["none.yet"].sum(), x

    def backward(self, params: Any, x: Any, dy: Any) -> Any:
        return dy * params["k"], {"k": np.asarray((dy * x).sum()), "bias-1": dy.sum(0),
                                  "none.yet": np.zeros(0, dtype=dy.dtype)}


class _ScalarGain(_Gain):
    def backward(self, params: Any, x: Any, dy: Any) -> Any:
        dx, grads = super().backward(params, x, dy)
        return dx, {**grads, "k": (dy * x).sum()}  # a numpy float, not a 0-d array


def _model(cls: type) -> nnplug.Model:
    class Plugin:
        @nnplug.hookimpl
        def nnplug_register_layers(self) -> list[type]:
            return [cls]

    return nnplug.Model.from_config(
        {"input": [3], "layers": [{"type": "gain_for_tests", "name": "g.1"}], "loss": {"type": "mse"},
         "train": {"epochs": 2, "batch_size": 4, "optimizer": {"type": "adam", "lr": 0.05}}},
        registry=nnplug.Registry(plugins=[Plugin(), "nnplug_layers"], autoload=False))


def test_a_0d_and_a_zero_size_parameter_check_and_train() -> None:
    model = _model(_Gain)
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    assert nnplug.gradcheck_model(model, x, 3 * x).ok
    optimizer = make_optimizer(model.spec.train.optimizer, model.params)
    for _ in range(20):
        _, grads = model.loss_and_grads(x, 3 * x)
        optimizer.step(model.params, grads)
    assert float(model.params["g.1"]["k"]) > 1.5  # moved towards 3
    assert {k: v.shape for k, v in model.params["g.1"].items()} == {"k": (), "bias-1": (3,), "none.yet": (0,)}


def test_a_numpy_scalar_as_the_gradient_of_a_0d_parameter_is_named_as_a_scalar() -> None:
    model = _model(_ScalarGain)
    x = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(nnplug.PluginError, match=r"returned gradient of k as float32, expected an array of "
                                                 r"shape \(\) \(np.asarray makes one of a scalar\)"):
        model.loss_and_grads(x, x)


class _SlashedName(_Gain):
    def param_shapes(self, in_shape: Any) -> Any:
        return {"k": (), "bias/1": in_shape}

    def init_params(self, in_shape: Any, rng: np.random.Generator) -> Any:
        return {"k": np.array(1.0), "bias/1": np.zeros(in_shape)}


def test_a_parameter_name_holding_a_slash_is_refused_naming_the_node() -> None:
    # checkpoints key weights as node/param: a '/' in the name would read back as another node's
    with pytest.raises(nnplug.PluginError,
                       match=r"'g\.1' \(gain_for_tests, plugin 'Plugin'\): parameter name 'bias/1' is not a plain"):
        _model(_SlashedName)
