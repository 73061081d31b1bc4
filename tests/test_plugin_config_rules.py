"""What the registry requires of a plugin's config classes: unknown keys refused and configs
frozen at every depth, nested models validated as strictly as the node, one class per type."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

import nnplug
from nnplug.registry import contract_problem


class _Sub(BaseModel):  # pydantic's defaults: extra keys ignored, mutable
    k: float = 1.0


class _StrictSub(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    k: float = 1.0


class _ExtraAllowed(nnplug.LayerConfig):
    model_config = ConfigDict(extra="allow")
    type: Literal["loose"] = "loose"


class _Thawed(nnplug.LayerConfig):
    model_config = ConfigDict(frozen=False)
    type: Literal["loose"] = "loose"


class _HoldsLaxSub(nnplug.LayerConfig):
    type: Literal["loose"] = "loose"
    sub: _Sub = _Sub()


class _HoldsLaxSubs(nnplug.LayerConfig):
    type: Literal["loose"] = "loose"
    subs: list[_Sub] | None = None


class _StrictHoldingLax(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    inner: _Sub = _Sub()


class _HoldsLaxTwoDeep(nnplug.LayerConfig):
    type: Literal["loose"] = "loose"
    mid: _StrictHoldingLax = _StrictHoldingLax()


@pytest.mark.parametrize(("config", "phrase"), [
    (_ExtraAllowed, "Config sets extra='allow'"),
    (_Thawed, "Config sets frozen=False"),
    (_HoldsLaxSub, "Config field 'sub' holds _Sub, which must set"),
    (_HoldsLaxSubs, "Config field 'subs' holds _Sub"),
    (_HoldsLaxTwoDeep, "Config field 'mid.inner' holds _Sub"),
])
def test_a_config_relaxing_unknown_keys_or_frozenness_is_refused(config, phrase):
    # `extra="allow"` in a plugin's Config used to take `unitz: 5` in a model file as valid
    assert phrase in contract_problem(type("LooseLayer", (nnplug.Layer,), {"Config": config}))


class _NestedConfig(nnplug.LayerConfig):
    type: Literal["nested"] = "nested"
    sub: _StrictSub = _StrictSub()


def test_a_nested_model_is_validated_as_strictly_as_the_node():
    problem = contract_problem(type("Nested", (nnplug.Layer,), {"Config": _NestedConfig}))
    assert problem is None
    assert nnplug.parse_config(_NestedConfig, {"sub": {"k": 2}}).sub.k == 2.0
    with pytest.raises(nnplug.ConfigError, match=r"sub\.k"):  # "2" is not a number in a model file
        nnplug.parse_config(_NestedConfig, {"sub": {"k": "2"}})
    with pytest.raises(nnplug.ConfigError, match="extra"):
        nnplug.parse_config(_NestedConfig, {"sub": {"k": 2, "extra": 1}})


def test_a_type_claimed_twice_within_one_plugin_names_both_classes():
    def make(name: str) -> type:
        config = type(f"{name}Config", (nnplug.LayerConfig,),
                      {"__annotations__": {"type": Literal["twin"]}, "type": "twin", "__module__": __name__})
        return type(name, (nnplug.Layer,), {"Config": config, "__module__": __name__})

    first, second = make("FirstTwin"), make("SecondTwin")

    class Plugin:
        @nnplug.hookimpl
        def nnplug_register_layers(self) -> list[type]:
            return [first, second]

    registry = nnplug.Registry(plugins=[Plugin()], autoload=False, strict=False)
    assert "type 'twin' is claimed twice within the plugin, by FirstTwin and SecondTwin" in registry.plugins[-1].error


class _NoDefault(nnplug.LayerConfig):
    type: Literal["no_default"]


class _BadName(nnplug.LayerConfig):
    type: Literal["my layer"] = "my layer"


class _ThawedSub(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: float = 1.0


class _HoldsThawedSub(nnplug.LayerConfig):
    type: Literal["loose"] = "loose"
    sub: _ThawedSub = _ThawedSub()


@pytest.mark.parametrize(("config", "phrase"), [
    (_NoDefault, "Config.type must be Literal['name'] with that name as its default"),
    (_BadName, "type name 'my layer' is not an identifier"),
    (_HoldsThawedSub, "Config field 'sub' holds _ThawedSub, which must set"),
])
def test_a_config_without_a_named_identifier_type_or_with_a_mutable_nested_model_is_refused(config, phrase):
    assert phrase in contract_problem(type("Odd", (nnplug.Layer,), {"Config": config}))


def test_a_layer_whose_n_inputs_is_a_bool_is_refused():
    layer = type("BoolArity", (nnplug.Layer,), {"Config": _NestedConfig, "n_inputs": True})  # True == 1
    assert "n_inputs must be a positive int, got True" in contract_problem(layer)
