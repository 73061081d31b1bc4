"""Layer configs: frozen, extra keys forbidden, strict JSON-like types."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
from pydantic import Field, ValidationInfo, field_validator, model_validator

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


class _Window(nnplug.LayerConfig):
    """A config with rules across its fields, as a plugin writes them."""

    type: str = "window"
    size: int = 2
    pad: int = 0

    @model_validator(mode="after")
    def _pad_fits(self) -> _Window:
        if self.pad > self.size // 2:
            raise ValueError(f"pad {self.pad} must be at most half of size {self.size}")
        if self.size >= 100:  # pydantic reports an AssertionError too (an `assert` would be rewritten here)
            raise AssertionError(f"size {self.size} is too large")
        return self


@pytest.mark.parametrize(("config", "words"), [({"pad": 2}, "pad 2 must be at most half of size 2"),
                                               ({"size": 200}, "size 200 is too large")])
def test_a_validators_message_comes_without_pydantics_prefix_or_the_whole_config(config, words):
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.parse_config(_Window, {"type": "window", **config}, "layers[0] (window)")
    assert err.value.problems == [f"layers[0] (window): {words}"]  # a rule across fields: no "-> (config)", no dump
    assert "Value error" not in str(err.value) and "Assertion failed" not in str(err.value)


def test_model_file_rules_across_fields_read_without_pydantics_prefix():
    description = {"input": [4], "layers": [{"type": "dense", "units": 2}], "loss": {"type": "mse"},
                   "data": {"source": "digits", "path": "x.npz"},
                   "train": {"optimizer": {"type": "adam", "momentum": 0.9}}}
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.Model.from_config(description)
    problems = err.value.problems
    assert "data: source digits takes no path" in problems, problems
    assert any(p.startswith("train -> optimizer: momentum: sgd settings, which adam does not take")
               for p in problems), problems
    assert not any("Value error" in p for p in problems), problems


class _BadDefaultConfig(nnplug.LayerConfig):
    type: Literal["bad_default"] = "bad_default"
    beta: float = Field(0.0, gt=0)  # the plugin's own default breaks its own rule


def test_an_invalid_default_is_the_plugins_fault_not_the_users():
    with pytest.raises(nnplug.PluginError, match=r"_BadDefaultConfig's own default for beta fails its validation"):
        nnplug.parse_config(_BadDefaultConfig, {}, "m.yaml: layers[0] (bad_default)")
    # a value the user wrote is still the user's: a ConfigError with its path
    with pytest.raises(nnplug.ConfigError, match=r"layers\[0\] \(bad_default\) -> beta: Input should be greater"):
        nnplug.parse_config(_BadDefaultConfig, {"beta": -1.0}, "m.yaml: layers[0] (bad_default)")


class _CropConfig(nnplug.LayerConfig):
    type: Literal["crop"] = "crop"
    size: int = 4
    margin: int = 1

    @field_validator("margin")
    @classmethod
    def _below_size(cls, value: int, info: ValidationInfo) -> int:
        if value >= info.data.get("size", value + 1):
            raise ValueError("margin must be below size")
        return value


def test_a_default_failing_only_beside_the_users_other_field_is_the_users_mistake():
    # margin's default 1 fails because the user wrote size: 1, not because the plugin is broken
    with pytest.raises(nnplug.ConfigError, match=r"-> margin: margin must be below size"):
        nnplug.parse_config(_CropConfig, {"size": 1}, "m.yaml: layers[0] (crop)")


def test_empty_inputs_list_says_a_node_name_is_needed_not_pydantics_tuple_wording():
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.parse_config(DENSE.Config, {"type": "dense", "units": 3, "inputs": []}, "layers[1] (dense)")
    message = str(err.value)
    assert message.startswith("layers[1] (dense) -> inputs: expected at least one node name")
    assert "Tuple" not in message and "()" not in message


def test_text_with_a_lone_surrogate_is_refused_naming_its_field():
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.parse_config(DENSE.Config, {"type": "dense", "units": 2, "name": "a\ud800"}, "layers[0] (dense)")
    assert str(err.value) == "layers[0] (dense) -> name: text with a lone surrogate ('a\\ud800') is not valid text"


def test_a_key_that_is_not_text_is_refused_as_a_key():
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.parse_config(DENSE.Config, {"type": "dense", "units": 3, ("a", "b"): 1}, "n")
    assert str(err.value) == "n -> (key): a tuple key (('a', 'b')) is not a field name"


def test_numpy_integers_are_taken_as_the_ints_they_hold():
    assert nnplug.parse_config(DENSE.Config, {"type": "dense", "units": np.int64(3)}).units == 3
