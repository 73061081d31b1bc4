"""What building a model says of its graph: a cycle told from its earliest node in the file,
a multi-input node's misfit told with each input's shape and origin, and an output too large
for any machine blamed on the node that makes it."""

from __future__ import annotations

from typing import Any

import pytest

import nnplug


def build_error(layers: list[dict[str, Any]]) -> str:
    with pytest.raises((nnplug.ConfigError, nnplug.ShapeError)) as info:
        nnplug.Model.from_config({"input": [4], "layers": layers, "loss": {"type": "mse"}})
    return str(info.value)


def test_a_cycle_reached_from_a_node_off_it_is_told_from_its_earliest_node_in_the_file() -> None:
    # x reads the cycle without being on it; a comes before b in the file
    message = build_error([{"type": "relu", "name": "x", "inputs": ["b"]},
                           {"type": "relu", "name": "a", "inputs": ["b"]},
                           {"type": "relu", "name": "b", "inputs": ["a"]},
                           {"type": "dense", "units": 2, "inputs": ["x"]}])
    assert message.startswith("layers[1] 'a' (relu): is on a cycle of inputs: a -> b -> a (each feeds the next)")


def test_a_two_input_node_that_does_not_fit_names_each_input_with_its_shape() -> None:
    message = build_error([{"type": "dense", "name": "a", "units": 2},
                           {"type": "dense", "name": "b", "units": 3, "inputs": ["input"]},
                           {"type": "add", "inputs": ["a", "b"]}])
    assert message.startswith("layers[2] 'add_2' (add): ")
    assert message.endswith("; inputs: (2,) from 'a', (3,) from 'b'")


@pytest.mark.parametrize(("padding", "blamed"), [(23168, r"'dense_2' \(dense\): the model would have"),
                                                (23169, r"'conv2d_0' \(conv2d\): its output \(1, 46342, 46342\)")])
def test_an_output_is_blamed_from_just_past_2_to_the_31_values_per_example(padding: int, blamed: str) -> None:
    # 46340² values per example stay under the limit (the dense layer's budget is what fails);
    # 46342² pass it, and the conv's output is named
    layers = [{"type": "conv2d", "filters": 1, "kernel_size": 1, "padding": padding},
              {"type": "flatten"}, {"type": "dense", "units": 1}]
    with pytest.raises(nnplug.ShapeError, match=blamed):
        nnplug.Model.from_config({"input": [1, 4, 4], "layers": layers, "loss": {"type": "mse"}})
