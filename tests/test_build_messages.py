"""What building a model says of its graph: a cycle told from its earliest node in the file,
and a multi-input node's misfit told with each input's shape and origin."""

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
