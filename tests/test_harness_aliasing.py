"""Input gradients that are ``dy`` itself, or share memory with each other, keep the layer
contract (it forbids editing what a layer is given, not returning it): the conformance harness
passes such layers, and the executor sums their gradients over a fan-out without corrupting
another node's ``dy`` or the caller's input. Parameter gradients, handed to the caller as they
are, still share memory with nothing."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest
from numeric_layers import Bias

import nnplug
from nnplug.testing import Case, ConformanceError, check_layer


class _SameConfig(nnplug.LayerConfig):
    type: Literal["same_for_tests"] = "same_for_tests"


class _Same(nnplug.Layer):
    """y = x, dx = dy: both returned as they came, and x itself is the cache."""

    Config = _SameConfig

    def output_shape(self, in_shape: Any) -> Any:
        return in_shape

    def forward(self, params: Any, x: Any, *, training: bool) -> Any:
        return x, x

    def backward(self, params: Any, cache: Any, dy: Any) -> Any:
        return dy, {}


class _BothConfig(nnplug.LayerConfig):
    type: Literal["both_for_tests"] = "both_for_tests"


class _Both(nnplug.Layer):
    """y = a + b; (dy, dy) as the input gradients, one array twice."""

    Config = _BothConfig
    n_inputs = 2

    def output_shape(self, in_shape: Any) -> Any:
        return in_shape[0]

    def forward(self, params: Any, x: Any, *, training: bool) -> Any:
        return x[0] + x[1], None

    def backward(self, params: Any, cache: Any, dy: Any) -> Any:
        return (dy, dy), {}


@pytest.mark.parametrize(("cls", "shapes"), [(_Same, ((3, 2),)), (_Both, ((4,), (4,)))])
def test_a_layer_returning_dy_itself_as_its_input_gradients_passes_the_harness(cls: type, shapes: Any) -> None:
    for seed in range(3):
        assert check_layer(cls, Case({}, shapes), seed=seed).report.ok


def test_a_parameter_gradient_sharing_memory_with_an_input_gradient_still_fails() -> None:
    class OneExample(Bias):
        def backward(self, params: Any, cache: Any, dy: Any) -> Any:
            dx = dy.copy()
            return dx, {"b": dx[0]}  # a view of dx: wrong, and aliased

    with pytest.raises(ConformanceError, match="aliasing broken: dx and gradient 'b' share memory"):
        check_layer(OneExample, Case({}, ((3,),)), seed=0)


class _Plugin:
    @nnplug.hookimpl
    def nnplug_register_layers(self) -> list[type]:
        return [_Same, _Both]


def test_fan_out_through_identities_returning_dy_sums_gradients_without_corrupting_them() -> None:
    registry = nnplug.Registry(plugins=[_Plugin(), "nnplug_layers"], autoload=False)
    layers = [
        {"type": "same_for_tests", "name": "a", "inputs": ["input"]},
        {"type": "same_for_tests", "name": "b", "inputs": ["input"]},
        {"type": "both_for_tests", "name": "s", "inputs": ["a", "b"]},
        {"type": "both_for_tests", "name": "t", "inputs": ["s", "a"]},
        {"type": "concat", "name": "c", "inputs": ["t", "s"]},
        {"type": "dense", "units": 3, "name": "head"},
    ]
    model = nnplug.Model.from_config({"input": [4], "dtype": "float64", "layers": layers,
                                      "loss": {"type": "mse"}}, registry)
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 3))
    before = x.copy()
    _, _, dx = model.loss_and_all_grads(x, target)
    np.testing.assert_array_equal(x, before)
    # by hand: t = s + a = 2a + b and s = a + b, with a = b = x: c = [3x, 2x]
    w, b = model.params["head"]["w"], model.params["head"]["b"]
    d_out = 2 * (np.concatenate([3 * x, 2 * x], 1) @ w.T + b - target) / target.size
    d_c = d_out @ w
    np.testing.assert_allclose(dx, 3 * d_c[:, :4] + 2 * d_c[:, 4:], rtol=1e-10, atol=1e-13)
    assert nnplug.gradcheck_model(model, x, target).ok
