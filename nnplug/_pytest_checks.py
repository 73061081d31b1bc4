"""The test ``nnplug.pytest_plugin`` collects with ``--nnplug-layers``, once per layer type."""

from __future__ import annotations

from functools import partial
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from nnplug.testing import _for_gradient_checks, cases_for, check, seeds


@partial(_for_gradient_checks, explain=False)  # nobody wraps this one in their own @settings
@given(data=st.data())
def test_layer_keeps_the_contract(nnplug_layer_type: str, nnplug_registry: Any, nnplug_check_mode: Any,
                                  data: Any) -> None:
    """Every case of the type's gradcheck_cases() keeps the layer contract and its gradients."""
    case = data.draw(cases_for(nnplug_layer_type, nnplug_registry), label="case")
    seed = data.draw(seeds(), label="seed")
    check(nnplug_layer_type, case, seed=seed, mode=nnplug_check_mode, registry=nnplug_registry)
