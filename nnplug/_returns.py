"""What a plugin's forward and backward return, checked where nnplug receives it (the executor,
``gradcheck``): a contract violation is a :class:`~nnplug.PluginError` naming ``who`` and what
came back, rather than an unpacking error or a numpy traceback further on."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from nnplug.errors import PluginError


def pair(who: str | Callable[[], str], method: str, result: Any, expected: str) -> tuple[Any, Any]:
    """``(a, b)`` from a method that must return a pair, such as forward's ``(y, cache)``.
    ``who`` may be a function giving the name: the executor's names cost a format per call."""
    if not isinstance(result, tuple) or len(result) != 2:
        name = who if isinstance(who, str) else who()
        raise PluginError(f"{name}: {method} returned {type(result).__name__}, expected a pair {expected}")
    return result[0], result[1]


def loss_value(who: str, value: Any) -> float:
    """A loss forward's value as a float: it must be a real scalar (the mean over the batch)."""
    if isinstance(value, (float, np.floating)):  # the usual answer, once per training step: no more checks
        return float(value)
    if isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0 or not np.isrealobj(value):
        shown = f"an array of shape {np.shape(value)}" if np.ndim(value) else repr(value)
        raise PluginError(f"{who}: forward returned {shown} as the loss value, expected a real "
                          "scalar (the mean loss over the batch)")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"{who}: forward returned {value!r} as the loss value, expected a real scalar") from exc


def array(who: str, what: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``value``, which must be a numpy array of ``shape``."""
    if not isinstance(value, np.ndarray):
        raise PluginError(f"{who}: {what} is {type(value).__name__}, expected an array of shape {shape}")
    if value.shape != shape:
        raise PluginError(f"{who}: {what} has shape {value.shape}, expected {shape}")
    return value


def gradients(who: str, grads: Any, names: Collection[str]) -> Mapping[str, Any]:
    """backward's ``{name: gradient}``: a dict with one entry per parameter, no more."""
    if not isinstance(grads, Mapping):
        raise PluginError(f"{who}: backward returned {type(grads).__name__} as its gradients, "
                          "expected {name: gradient}")
    if set(grads) != set(names):
        raise PluginError(f"{who}: backward returned gradients for {sorted(map(str, grads))}, "
                          f"the parameters are {sorted(names)}")
    return grads


def checked_gradient(who: Callable[[], str], method: str, what: str, g: Any, shape: tuple[int, ...],
                     dtype: np.dtype) -> None:
    """One gradient a layer handed the executor: an array of ``shape`` in the model's ``dtype``."""
    if not isinstance(g, np.ndarray):  # a numpy scalar too: what a sum over a 0-d array gives
        raise PluginError(f"{who()}: {method} returned {what} as {type(g).__name__}, expected an array "
                          f"of shape {tuple(shape)}" + (" (np.asarray makes one of a scalar)" if not shape else ""))
    if g.shape != tuple(shape):
        raise PluginError(f"{who()}: {method} returned {what} of shape {g.shape}, expected {tuple(shape)}")
    if g.dtype != dtype:
        raise PluginError(f"{who()}: {method} returned {what} as {g.dtype} in a {dtype} model")


def checked_param_grads(who: Callable[[], str], method: str, grads: Any, own: Mapping[str, np.ndarray],
                        dtype: np.dtype) -> dict[str, np.ndarray]:
    """A layer's ``{name: gradient}`` as the executor receives it: one per parameter it holds
    (``own``), each of that parameter's shape and the model's dtype."""
    if not isinstance(grads, Mapping) or set(grads) != set(own):
        got = sorted(grads) if isinstance(grads, Mapping) else type(grads).__name__
        raise PluginError(f"{who()}: {method} returned gradients for {got}, expected {sorted(own)}")
    for name, g in grads.items():
        checked_gradient(who, method, f"gradient of {name}", g, own[name].shape, dtype)
    return dict(grads)
