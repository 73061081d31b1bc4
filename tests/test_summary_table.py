"""The summary table's layout and its note on the nodes the loss does not depend on, and the
parameter budget's boundary."""

from __future__ import annotations

from typing import Any

import pytest

import nnplug
from nnplug import build


def model(layers: list[dict[str, Any]], loss_input: str | None = None) -> nnplug.Model:
    loss: dict[str, Any] = {"type": "mse", **({"inputs": [loss_input]} if loss_input else {})}
    return nnplug.Model.from_config({"input": [4], "layers": layers, "loss": loss})


def test_the_parameter_column_is_right_aligned() -> None:
    rows = model([{"type": "dense", "name": "big", "units": 300}, {"type": "dense", "name": "small", "units": 1}]
                 ).summary().splitlines()
    big, small = (next(r for r in rows if r.startswith(name)) for name in ("big", "small"))
    assert big.endswith("1,500") and small.endswith("301") and len(big) == len(small)


def test_one_unused_node_is_named_as_it() -> None:
    table = model([{"type": "relu", "name": "side", "inputs": ["input"]}, {"type": "dense", "name": "out", "units": 2,
                   "inputs": ["input"]}], loss_input="out").summary()
    assert table.splitlines()[-1] == ("unused: 'side': the loss ('out') does not depend on it; never run nor trained")


def test_more_than_ten_unused_nodes_are_cut_short() -> None:
    side = [{"type": "relu", "name": f"s{k:02d}", "inputs": ["input"]} for k in range(11)]
    table = model([*side, {"type": "dense", "name": "out", "units": 2, "inputs": ["input"]}], "out").summary()
    assert table.splitlines()[-1] == (f"unused: {', '.join(repr(f's{k:02d}') for k in range(10))}, ...: the loss "
                                      "('out') does not depend on them; never run nor trained")


def test_a_model_one_parameter_over_the_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "MAX_PARAMETERS", 9)  # dense 4 -> 2: 10 parameters
    with pytest.raises(nnplug.ShapeError, match="the model would have 10 parameters, more than the budget of 9"):
        model([{"type": "dense", "units": 2}])
    monkeypatch.setattr(build, "MAX_PARAMETERS", 10)
    model([{"type": "dense", "units": 2}])
