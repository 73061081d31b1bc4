"""Layer configs: frozen, extra keys forbidden, strict JSON-like types."""

from __future__ import annotations

import pytest

import nnplug

DENSE = nnplug.load_registry().get("dense")


@pytest.mark.parametrize("value,phrase", [
    ("3", "valid integer"),
    (True, "valid integer"),
    (3.0, "valid integer"),
    (0, "greater than or equal to 1"),
    (None, "valid integer"),
])
def test_units_must_be_a_real_positive_int(value, phrase):
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.parse_config(DENSE.Config, {"type": "dense", "units": value}, "layers[0] (dense)")
    assert err.value.problems[0].startswith("layers[0] (dense) -> units:")
    assert phrase in str(err.value)
    assert repr(value) in str(err.value)  # echoes what it received


def test_nan_and_infinity_are_not_numbers():
    leaky = nnplug.load_registry().get("leaky_relu")
    for value in (float("nan"), float("inf")):
        with pytest.raises(nnplug.ConfigError, match="alpha: Input should be a finite number"):
            nnplug.parse_config(leaky.Config, {"type": "leaky_relu", "alpha": value})


def test_unknown_keys_are_refused_by_name():
    with pytest.raises(nnplug.ConfigError, match="unit: unknown field"):
        nnplug.parse_config(DENSE.Config, {"type": "dense", "unit": 3})


def test_configs_are_frozen_and_survive_a_round_trip():
    config = nnplug.parse_config(DENSE.Config, {"type": "dense", "units": 3, "bias": False})
    with pytest.raises(Exception, match="frozen"):
        config.units = 4
    again = nnplug.parse_config(DENSE.Config, config.model_dump())
    assert again == config


def test_layer_accepts_a_mapping_or_a_config_and_knows_its_type_name():
    layer = DENSE({"units": 2})
    assert layer.config.units == 2 and DENSE.type_name() == "dense"
    assert DENSE(layer.config).config is layer.config
    with pytest.raises(nnplug.ConfigError, match="expects a DenseConfig"):
        DENSE(nnplug.load_registry().get("relu").Config())


def test_arrays_fill_tuples_and_names_must_be_identifiers():
    add = nnplug.load_registry().get("add")
    config = nnplug.parse_config(add.Config, {"type": "add", "inputs": ["a", "b"]})
    assert config.inputs == ("a", "b")
    with pytest.raises(nnplug.ConfigError, match="name"):
        nnplug.parse_config(add.Config, {"type": "add", "name": "has/slash"})
