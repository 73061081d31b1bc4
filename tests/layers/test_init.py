"""Initial weights: each initializer's documented distribution over dense's and conv2d's fans,
biases at zero, and one stream per node (README "The executor": keyed by the node's name)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nnplug

REGISTRY = nnplug.load_registry()

# (type, config, in_shape, fan_in, fan_out): conv2d's fans count the kernel's taps.
LAYERS = [
    ("dense", {"units": 150}, (400,), 400, 150),
    ("conv2d", {"filters": 48, "kernel_size": 3}, (8, 5, 5), 8 * 9, 48 * 9),
]


def _weights(type_name: str, config: dict, in_shape: tuple[int, ...], initializer: str) -> np.ndarray:
    layer = REGISTRY.get(type_name)({**config, "kernel_initializer": initializer})
    return layer.init_params(in_shape, np.random.default_rng(0))["w"]


@pytest.mark.parametrize(("type_name", "config", "in_shape", "fan_in", "fan_out"), LAYERS)
def test_uniform_initializers_fill_their_documented_range(type_name, config, in_shape, fan_in, fan_out):
    for initializer, limit in (("glorot_uniform", math.sqrt(6 / (fan_in + fan_out))),
                               ("he_uniform", math.sqrt(6 / fan_in))):
        w = _weights(type_name, config, in_shape, initializer)
        # thousands of draws: the largest lands within 1% of the limit, none past it
        assert limit * 0.99 < np.abs(w).max() <= limit, initializer
        assert abs(w.mean()) < 0.05 * limit


@pytest.mark.parametrize(("type_name", "config", "in_shape", "fan_in", "fan_out"), LAYERS)
def test_he_normal_has_variance_two_over_fan_in(type_name, config, in_shape, fan_in, fan_out):
    w = _weights(type_name, config, in_shape, "he_normal")
    assert w.std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)  # N(0, 2 / fan_in)


@pytest.mark.parametrize(("type_name", "config", "in_shape", "fan_in", "fan_out"), LAYERS)
def test_biases_start_at_zero(type_name, config, in_shape, fan_in, fan_out):
    b = REGISTRY.get(type_name)(config).init_params(in_shape, np.random.default_rng(0))["b"]
    np.testing.assert_array_equal(b, np.zeros(b.shape))


def test_nodes_of_one_shape_draw_different_weights_and_a_new_node_changes_no_others():
    def model(*names: str) -> nnplug.Model:
        return nnplug.Model.from_config({
            "input": [6], "seed": 0, "loss": {"type": "mse"},
            "layers": [{"type": "dense", "name": n, "units": 6} for n in names]})

    two, three = model("a", "b"), model("a", "c", "b")
    # one stream per node: two layers of one shape are not initialised as copies of each other
    assert not np.allclose(two.params["a"]["w"], two.params["b"]["w"])
    for name in ("a", "b"):  # keyed by the name, not by the position in the file
        np.testing.assert_array_equal(two.params[name]["w"], three.params[name]["w"])
