"""How a config's validation errors read: one line per field, with what was received cut
short, a union's branches folded, a list's parent left out, and a misspelling's suggestion."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

import nnplug
from nnplug import parse_config

REGISTRY = nnplug.load_registry()
needs_conv2d = pytest.mark.skipif("conv2d" not in REGISTRY, reason="conv2d is not installed")


def problems(config_cls: type[nnplug.LayerConfig], data: dict[str, object], where: str = "here") -> list[str]:
    with pytest.raises(nnplug.ConfigError) as info:
        parse_config(config_cls, data, where)
    return info.value.problems


def test_a_long_received_value_is_cut_to_sixty_characters_with_an_ellipsis() -> None:
    [line] = problems(REGISTRY.get("dense").Config, {"type": "dense", "units": "x" * 100})
    assert line == f"here -> units: Input should be a valid integer (got '{'x' * 56}...)"


@needs_conv2d
def test_a_value_no_branch_of_a_union_takes_is_told_every_branch_on_one_line() -> None:
    conv = REGISTRY.get("conv2d").Config
    assert problems(conv, {"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": 1.5}) == [
        "here -> padding: expected one of: Input should be a valid integer; Input should be a valid array; "
        "Input should be 'valid' or 'same' (got 1.5)"]


@needs_conv2d
def test_a_pair_with_a_bad_item_is_told_at_the_item_not_again_at_the_pair() -> None:
    conv = REGISTRY.get("conv2d").Config
    assert problems(conv, {"type": "conv2d", "filters": 2, "kernel_size": [3, "a"]}) == [
        "here -> kernel_size.1: Input should be a valid integer (got 'a')"]


class _Near(nnplug.LayerConfig):
    type: Literal["near_for_tests"] = "near_for_tests"
    alpha: float = 1.0
    alphas: tuple[float, ...]


def test_a_misspelling_is_told_the_required_field_left_out_before_a_closer_optional_one() -> None:
    found = problems(_Near, {"type": "near_for_tests", "alphaz": [1.0]})
    assert "here -> alphaz: unknown field; did you mean 'alphas'? (got [1.0])" in found


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    size: int


class _Steps(nnplug.LayerConfig):
    type: Literal["steps_for_tests"] = "steps_for_tests"
    steps: tuple[_Step, ...] = ()


def test_a_misspelled_field_inside_a_list_item_is_told_the_items_field() -> None:
    found = problems(_Steps, {"type": "steps_for_tests", "steps": [{"size": 1}, {"sise": 2}]})
    assert "here -> steps.1.sise: unknown field; did you mean 'size'? (got 2)" in found
