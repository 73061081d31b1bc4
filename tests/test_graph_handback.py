"""What the executor hands back is the caller's to edit, whatever the plugins returned: a
layer may hand δ itself back as its input gradient (an identity), which the executor froze
while the layers ran."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest

import nnplug


class _PassConfig(nnplug.LayerConfig):
    type: Literal["test_pass"] = "test_pass"


class _Pass(nnplug.Layer):
    """y = x, dx = δ: both returned as they came, no copies."""

    Config = _PassConfig

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def forward(self, params: dict[str, np.ndarray], x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        return x, None

    def backward(self, params: dict[str, np.ndarray], cache: Any, dy: np.ndarray) -> tuple[Any, Any]:
        return dy, {}


class _Plugin:
    @nnplug.hookimpl
    def nnplug_register_layers(self) -> list[type]:
        return [_Pass]


def test_an_input_gradient_that_is_delta_itself_is_handed_back_writable():
    model = nnplug.Model.from_config(
        {"input": [3], "layers": [{"type": "test_pass"}], "loss": {"type": "mse"}},
        registry=nnplug.Registry(plugins=[_Plugin(), "nnplug_layers"]))
    x, target = np.ones((2, 3)), np.zeros((2, 3))
    loss, _, dx = model.loss_and_all_grads(x, target)
    np.testing.assert_allclose(dx, 2 * (x - target) / x.size)  # mse's δ, passed straight through
    dx[...] = 0  # the caller's own array, though the layer saw it read-only
    assert loss == pytest.approx(1.0) and not np.shares_memory(dx, x)
    y = model.forward(x)  # the input itself, passed through: a copy, so the caller's x stays
    y[...] = 5
    np.testing.assert_array_equal(x, np.ones((2, 3)))
