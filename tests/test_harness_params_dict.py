"""A layer adding a name to, or taking one from, the params dict it is given breaks the
contract (it edits params), and the conformance harness says so, rather than blaming the
gradient names or a KeyError in the next forward pass."""

from __future__ import annotations

from typing import Any

import pytest
from numeric_layers import Bias

from nnplug.testing import Case, ConformanceError, check_layer


class _Pops(Bias):
    def forward(self, params: Any, x: Any, *, training: bool) -> Any:
        return x + params.pop("b"), None


class _Adds(Bias):
    def forward(self, params: Any, x: Any, *, training: bool) -> Any:
        params["scratch"] = x  # kept for backward, in the wrong place
        return x + params["b"], None


def test_the_reference_layer_passes() -> None:
    assert check_layer(Bias, Case({}, ((3,),))).report.ok


@pytest.mark.parametrize(("cls", "after"), [(_Pops, "[]"), (_Adds, "['b', 'scratch']")])
def test_a_layer_editing_the_names_of_its_params_dict_is_told_it_mutated_params(cls: type, after: str) -> None:
    with pytest.raises(ConformanceError, match="mutation broken: forward changed the names") as info:
        check_layer(cls, Case({}, ((3,),)))
    assert f"from ['b'] to {after}" in str(info.value)
