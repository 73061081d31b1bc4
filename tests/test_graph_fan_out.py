"""The executor's backward pass: gradients summed over every consumer of a node, the
training path's shortcut for nodes reading the input, and the ``training`` flag."""

from __future__ import annotations

import types
from typing import Literal

import numpy as np
import pytest

import nnplug


def stem_feeding(consumers: int) -> dict:
    """``stem`` feeds tanh, sigmoid and ``consumers - 2`` add nodes chained after them."""
    layers = [
        {"type": "dense", "units": 4, "name": "stem"},
        {"type": "tanh", "name": "t", "inputs": ["stem"]},
        {"type": "sigmoid", "name": "s", "inputs": ["stem"]},
        {"type": "add", "name": "a0", "inputs": ["t", "s"]},
    ]
    last = "a0"
    for k in range(1, consumers - 1):
        layers.append({"type": "add", "name": f"a{k}", "inputs": ["stem", last]})
        last = f"a{k}"
    layers.append({"type": "dense", "units": 3, "name": "head", "inputs": [last]})
    return {"input": [5], "dtype": "float64", "seed": 1, "layers": layers,
            "loss": {"type": "softmax_cross_entropy"}}


@pytest.mark.parametrize("consumers", [3, 4])
def test_a_node_feeding_three_or_four_others_gets_the_sum_of_their_gradients(consumers):
    model = nnplug.Model.from_config(stem_feeding(consumers))
    assert sum("stem" in n.inputs for n in model.nodes) == consumers
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((4, 5)), np.array([0, 1, 2, 1])
    nnplug.gradcheck_model(model, x, labels)

    # By hand: dstem = da·(consumers - 2) + da·(1 - tanh²) + da·σ(1 - σ), with da the
    # gradient reaching every add node (adds pass δ through unchanged).
    w, b = model.params["stem"]["w"], model.params["stem"]["b"]
    stem = x @ w.T + b
    tanh, sig = np.tanh(stem), 1 / (1 + np.exp(-stem))
    h = tanh + sig + (consumers - 2) * stem
    logits = h @ model.params["head"]["w"].T + model.params["head"]["b"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    da = (p - np.eye(3)[labels]) / len(x) @ model.params["head"]["w"]
    dstem = da * ((consumers - 2) + (1 - tanh**2) + sig * (1 - sig))
    _, grads = model.loss_and_grads(x, labels)
    np.testing.assert_allclose(grads["stem"]["w"], dstem.T @ x, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(grads["stem"]["b"], dstem.sum(0), rtol=1e-10, atol=1e-14)


def test_a_node_reading_the_input_and_another_node_passes_a_gradient_to_that_node():
    # "mix" reads the input and "d"; training skips input gradients, but "d" still needs its δ.
    config = {"input": [4], "dtype": "float64", "seed": 2, "layers": [
        {"type": "dense", "units": 4, "name": "d"},
        {"type": "add", "name": "mix", "inputs": ["input", "d"]},
        {"type": "dense", "units": 3, "name": "head"}],
        "loss": {"type": "softmax_cross_entropy"}}
    model = nnplug.Model.from_config(config)
    x, labels = np.random.default_rng(3).standard_normal((5, 4)), np.array([0, 1, 2, 0, 1])
    _, grads = model.loss_and_grads(x, labels)
    _, grads_all, _ = model.loss_and_all_grads(x, labels)
    assert np.abs(grads_all["d"]["w"]).max() > 1e-3  # the comparison below is not 0 == 0
    for node, own in grads_all.items():
        for name, g in own.items():
            np.testing.assert_allclose(grads[node][name], g, rtol=1e-12, atol=1e-15)


class _TrainingShift(nnplug.Layer):
    """y = x + 1 while training, y = x at inference: the output shows the flag it was given."""

    class Config(nnplug.LayerConfig):
        type: Literal["training_shift_for_tests"] = "training_shift_for_tests"

    def output_shape(self, in_shape):
        return in_shape

    def forward(self, params, x, *, training):
        return x + 1.0 if training else x.copy(), None

    def backward(self, params, cache, dy):
        return dy.copy(), {}


def test_inference_runs_layers_with_training_false_and_training_with_true():
    module = types.ModuleType("training_shift_plugin")
    module.nnplug_register_layers = nnplug.hookimpl(lambda: [_TrainingShift])  # type: ignore[attr-defined]
    registry = nnplug.Registry(plugins=[module])
    config = {"input": [3], "dtype": "float64", "layers": [{"type": "training_shift_for_tests"}],
              "loss": {"type": "mse"}}
    model = nnplug.Model.from_config(config, registry)
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(model.forward(x), x)  # training=False: no shift
    loss, _ = model.loss_and_grads(x, x)
    assert loss == 1.0  # training=True: every output is x + 1, so (x + 1 - x)² = 1 exactly
