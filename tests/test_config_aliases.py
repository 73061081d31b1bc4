"""A plugin config field with a pydantic alias: a model file gives it by its alias, and only so.

pydantic's JSON validation, which model files go through, ignores a field's own name where the
field has an alias instead of refusing it as an unknown key; nnplug refuses it, names the
alias, and the conformance harness round-trips such a config by alias."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

import nnplug
from nnplug.layer import parse_config
from nnplug.modelfile import load_model_file
from nnplug.testing import Case, check_layer


class _Bounds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    low: float = Field(-1.0, alias="low-end")


class _SlopeConfig(nnplug.LayerConfig):
    type: Literal["slope_for_tests"] = "slope_for_tests"
    slope: float = Field(1.0, alias="slope-factor", gt=0)
    bounds: _Bounds = _Bounds()


class _ByNameConfig(nnplug.LayerConfig):
    model_config = ConfigDict(populate_by_name=True)
    type: Literal["by_name_for_tests"] = "by_name_for_tests"
    slope: float = Field(1.0, alias="slope-factor")


class _ChoicesConfig(nnplug.LayerConfig):
    type: Literal["choices_for_tests"] = "choices_for_tests"
    slope: float = Field(1.0, validation_alias=AliasChoices("slope-factor", "k"))


class Slope(nnplug.Layer):
    """y = slope · x. Shape (N, ...) -> same."""

    Config = _SlopeConfig

    def output_shape(self, in_shape: Any) -> Any:
        return in_shape

    def forward(self, params: Any, x: Any, *, training: bool) -> Any:
        return x * x.dtype.type(self.config.slope), None

    def backward(self, params: Any, cache: Any, dy: Any) -> Any:
        return dy * dy.dtype.type(self.config.slope), {}


def _problems(config_cls: type[nnplug.LayerConfig], data: dict[str, Any]) -> list[str]:
    with pytest.raises(nnplug.ConfigError) as info:
        parse_config(config_cls, data, where="node")
    return info.value.problems


def test_an_aliased_field_given_by_its_alias_is_read() -> None:
    config = parse_config(_SlopeConfig, {"type": "slope_for_tests", "slope-factor": 0.5,
                                         "bounds": {"low-end": -3}})
    assert config.slope == pytest.approx(0.5) and config.bounds.low == pytest.approx(-3)


def test_an_aliased_field_given_by_its_own_name_is_refused_naming_the_alias() -> None:
    problems = _problems(_SlopeConfig, {"type": "slope_for_tests", "slope": 0.5})
    assert problems == ["node -> slope: unknown field; did you mean 'slope-factor'? "
                        "(the field's name in a model file) (got 0.5)"]


def test_a_nested_aliased_field_given_by_its_own_name_is_refused_with_the_other_errors() -> None:
    problems = _problems(_SlopeConfig, {"type": "slope_for_tests", "slope-factor": -1, "bounds": {"low": 2}})
    assert len(problems) == 2
    assert any(p.startswith("node -> slope-factor: Input should be greater than 0") for p in problems)
    assert any(p.startswith("node -> bounds.low: unknown field; did you mean 'low-end'?") for p in problems)


def test_a_misspelled_aliased_field_is_told_the_alias_not_the_python_name() -> None:
    problems = _problems(_SlopeConfig, {"type": "slope_for_tests", "slope-factr": 0.5})
    assert "did you mean 'slope-factor'?" in problems[0]


def test_a_config_populated_by_name_or_with_alias_choices_takes_each_name_it_accepts() -> None:
    assert parse_config(_ByNameConfig, {"type": "by_name_for_tests", "slope": 2}).slope == pytest.approx(2)
    assert parse_config(_ByNameConfig, {"type": "by_name_for_tests", "slope-factor": 3}).slope == pytest.approx(3)
    assert parse_config(_ChoicesConfig, {"type": "choices_for_tests", "k": 4}).slope == pytest.approx(4)
    assert "did you mean 'slope-factor'?" in _problems(_ChoicesConfig, {"type": "choices_for_tests", "slope": 4})[0]


def test_a_model_file_giving_an_aliased_field_by_its_own_name_is_refused(tmp_path: Path) -> None:
    class Plugin:
        @nnplug.hookimpl
        def nnplug_register_layers(self) -> list[type]:
            return [Slope]

    registry = nnplug.Registry(plugins=[Plugin(), "nnplug_layers"], autoload=False)
    path = tmp_path / "m.yaml"
    path.write_text("input: [3]\nlayers:\n  - {type: slope_for_tests, slope: 0.5}\nloss: {type: mse}\n")
    with pytest.raises(nnplug.ConfigError, match=r"slope: unknown field; did you mean 'slope-factor'"):
        load_model_file(path, registry)


def test_the_harness_passes_a_layer_whose_config_has_an_alias() -> None:
    result = check_layer(Slope, Case({"slope-factor": 0.5, "bounds": {"low-end": 0.0}}, ((3,),)), seed=0)
    assert result.report.ok
    assert np.isfinite(result.report.max_rel_error)
