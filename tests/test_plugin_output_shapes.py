"""What a plugin's ``output_shape`` may return: a non-empty tuple (or list) of positive ints.
Anything else is refused at build naming the node, its plugin and what it returned, before a
zero-sized or malformed activation reaches a layer; and the conformance harness takes and
refuses the same, so a layer that passes it builds."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest

import nnplug
import nnplug.testing


class _ShapedConfig(nnplug.LayerConfig):
    type: Literal["test_shaped"] = "test_shaped"


class _Shaped(nnplug.Layer):
    """Returns whatever the test puts in ``returns`` as its output shape."""

    Config = _ShapedConfig
    returns: Any = (3,)

    def output_shape(self, in_shape: tuple[int, ...]) -> Any:
        return type(self).returns

    def forward(self, params: dict[str, np.ndarray], x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        return np.zeros((len(x), *type(self).returns)), None

    def backward(self, params: dict[str, np.ndarray], cache: Any, dy: np.ndarray) -> tuple[Any, Any]:
        raise NotImplementedError


class _Plugin:
    @nnplug.hookimpl
    def nnplug_register_layers(self) -> list[type]:
        return [_Shaped]


def _build() -> nnplug.Model:
    return nnplug.Model.from_config(
        {"input": [4], "layers": [{"type": "test_shaped", "name": "odd"}], "loss": {"type": "mse"}},
        registry=nnplug.Registry(plugins=[_Plugin(), "nnplug_layers"]))


@pytest.mark.parametrize("returned", [(0,), (3, 0), (), (-1,), (2.0,), (True,), "3", None])
def test_an_output_shape_that_is_not_positive_ints_is_refused_naming_the_node(
        returned: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Shaped, "returns", returned)
    with pytest.raises(nnplug.ShapeError) as info:
        _build()
    message = str(info.value)
    assert "'odd'" in message and "output_shape returned" in message and repr(returned) in message
    assert "expected a non-empty tuple of positive ints" in message


@pytest.mark.parametrize("returned", [(3,), [3], (np.int64(3),)])
def test_a_tuple_list_or_numpy_ints_are_taken_as_the_shape_they_mean(
        returned: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Shaped, "returns", returned)
    node = _build().node("odd")
    assert node.out_shape == (3,) and all(type(d) is int for d in node.out_shape)


class _Copy(_Shaped):
    """y = x for inputs of shape (3,), whatever form of (3,) ``returns`` gives."""

    def forward(self, params: dict[str, np.ndarray], x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        return x.copy(), None

    def backward(self, params: dict[str, np.ndarray], cache: Any, dy: np.ndarray) -> tuple[Any, Any]:
        return dy.copy(), {}


@pytest.mark.parametrize("returned", [(0,), (3, 0), (), (-1,), (2.0,), (True,), "3", None])
def test_the_conformance_harness_refuses_what_a_model_refuses(returned: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # a layer passing layer_test with output_shape () would be refused by every model it is put in
    monkeypatch.setattr(_Shaped, "returns", returned)
    with pytest.raises(nnplug.testing.ConformanceError, match="output_shape broken") as info:
        nnplug.testing.check_layer(_Copy, nnplug.testing.Case({}, ((3,),)))
    assert "expected a non-empty tuple of positive ints" in str(info.value)


@pytest.mark.parametrize("returned", [(3,), [3], (np.int64(3),)])
def test_the_conformance_harness_takes_what_a_model_takes(returned: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Shaped, "returns", returned)
    assert nnplug.testing.check_layer(_Copy, nnplug.testing.Case({}, ((3,),))).report.ok
