"""The checks ``parse_model`` makes of a description's own sections (input, dtype, seed, data,
train) and of its node list as a whole: each refused value is named, nothing is taken silently."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import nnplug
from nnplug import config
from nnplug.config import MAX_INPUT_ELEMENTS, parse_model

REGISTRY = nnplug.load_registry()
BASE: dict[str, Any] = {"input": [4], "layers": [{"type": "dense", "units": 3}], "loss": {"type": "mse"}}


def problems(**changes: Any) -> list[str]:
    with pytest.raises(nnplug.ConfigError) as info:
        parse_model({**BASE, **changes}, REGISTRY)
    return info.value.problems


@pytest.mark.parametrize("shape", [[], [0], [4, 0], [True, 4], [-1], [4.0]])
def test_an_input_shape_without_positive_int_axes_is_refused_naming_it(shape: list[Any]) -> None:
    assert problems(input=shape) == [f"input: expected a list of positive ints such as [1, 8, 8], got {shape!r}"]


def test_an_input_shape_past_the_element_limit_is_refused_with_its_size() -> None:
    assert problems(input=[MAX_INPUT_ELEMENTS + 1]) == [
        f"input: {MAX_INPUT_ELEMENTS + 1} elements per example is more than {MAX_INPUT_ELEMENTS}"]
    assert parse_model({**BASE, "input": [MAX_INPUT_ELEMENTS]}, REGISTRY).input_shape == (MAX_INPUT_ELEMENTS,)


def test_a_model_without_a_dtype_is_float32_in_its_spec_and_its_weights() -> None:
    assert parse_model(BASE, REGISTRY).dtype == "float32"
    model = nnplug.Model.from_config(BASE)
    assert {a.dtype for p in model.params.values() for a in p.values()} == {np.dtype(np.float32)}


@pytest.mark.parametrize("seed", [True, False, -1, 1.0, "0"])
def test_a_seed_that_is_not_a_non_negative_int_is_refused(seed: Any) -> None:
    assert problems(seed=seed) == [f"seed: expected an int from 0 to 2**63 - 1, got {seed!r}"]


@pytest.mark.parametrize("section", ["data", "train"])
@pytest.mark.parametrize("value", [[], 0, "", False])
def test_an_empty_or_false_section_that_is_not_a_mapping_is_refused_not_skipped(section: str, value: Any) -> None:
    assert problems(**{section: value}) == [f"{section}: expected a mapping, got {value!r}"]


def test_an_empty_train_section_takes_the_training_defaults() -> None:
    spec = parse_model({**BASE, "train": {}}, REGISTRY)
    assert spec.train is not None and spec.train.epochs >= 1


def test_a_node_without_a_type_lists_the_layer_types_to_choose_from() -> None:
    [line] = problems(layers=[{"units": 3}])
    assert line.startswith("layers[0]: missing 'type'; available: ")
    assert "dense" in line and "flatten" in line and "mse" not in line  # layers, not losses


def test_more_nodes_than_the_limit_are_refused_with_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_NODES", 3)
    layers = [{"type": "relu"}, {"type": "relu"}, {"type": "relu"}, {"type": "dense", "units": 3}]
    assert problems(layers=layers) == ["layers: 4 nodes is more than 3"]
    assert len(parse_model({**BASE, "layers": layers[1:]}, REGISTRY).nodes) == 3
