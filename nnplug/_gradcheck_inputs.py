"""What the gradient checker accepts, checked before any forward pass: its options (a count
of 0 directions or entries would pass any gradient) and the inputs and parameters it is
handed (real, finite, of the shapes the layer declares)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nnplug.arrays import real_array
from nnplug.errors import ConfigError, ShapeError
from nnplug.layer import Layer

#: (step h, rtol, atol) for the dtype the check runs in.
TOLERANCES: dict[str, tuple[float, float, float]] = {
    "float64": (1e-6, 1e-5, 1e-6),
    "float32": (1e-2, 2e-2, 2e-3),
}


def streams(seed: int | None) -> list[np.random.Generator]:
    """Three independent generators from ``seed`` (R; the entries sampled and fast mode's
    directions; full mode's directions and the bisections), none of them ``default_rng(seed)``
    itself, from which a caller may have drawn the inputs: a direction along x, or R equal to
    x, can hide a mistake (a layer norm is flat along its input)."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(3)]


def is_seed(value: Any) -> bool:
    """A seed numpy takes: a non-negative int (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value >= 0)


def check_options(subject: str, mode: Any, dtype: Any, seed: Any, eps: Any, rtol: Any, atol: Any,
                  max_entries: Any, n_directions: Any) -> None:
    """Refuse options that would check nothing, or not what was asked (a zero ``max_entries``
    or ``n_directions`` would pass any gradient)."""
    def bad(option: str, expected: str, got: Any) -> ConfigError:
        return ConfigError(f"gradcheck of {subject}: {option}: expected {expected}, got {got!r}")

    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_real(v: Any) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)

    if mode not in ("full", "fast"):
        raise bad("mode", "'full' or 'fast'", mode)
    if dtype not in TOLERANCES:
        raise bad("dtype", " or ".join(map(repr, TOLERANCES)), dtype)
    if seed is not None and not is_seed(seed):
        raise bad("seed", "None or a non-negative int", seed)
    if eps is not None and not (is_real(eps) and eps > 0):
        raise bad("eps", "a positive step", eps)
    for option, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (is_real(value) and value >= 0):
            raise bad(option, "a tolerance >= 0", value)
    for option, value in (("max_entries", max_entries), ("n_directions", n_directions)):
        if not (is_int(value) and value >= 1):
            raise bad(option, "an int >= 1 (0 would check nothing)", value)


def checked_array(subject: str, name: str, a: Any, dtype: str, *, batch: bool) -> np.ndarray:
    """A private ``dtype`` copy of input ``a``: real numbers, finite (finite differences of NaN
    are NaN), and with ``batch`` a batch axis of at least 2 examples (a bug coupling the
    examples would not show with one)."""
    array = real_array(a, f"gradcheck of {subject}: {name}")
    if batch and (array.ndim < 1 or array.shape[0] < 2):
        raise ShapeError(f"gradcheck of {subject}: {name} needs a batch of at least 2 examples "
                         f"(batch axis first), got shape {array.shape}")
    copy = np.array(array, dtype=dtype, copy=True)
    if not np.isfinite(copy).all():
        raise ShapeError(f"gradcheck of {subject}: {name} holds {int(np.size(copy) - np.isfinite(copy).sum())} "
                         "non-finite value(s); finite differences need finite values")
    return copy


def checked_params(subject: str, layer: Layer, params: Any, in_shape: Any, rng: np.random.Generator,
                   dtype: str) -> dict[str, np.ndarray]:
    """``params`` (or fresh ``init_params``) as private copies, with exactly the names and
    shapes the layer declares for ``in_shape``."""
    expected = layer.param_shapes(in_shape)
    if params is None:
        params = layer.init_params(in_shape, rng)
        drawn = params
    elif not isinstance(params, Mapping):
        raise ShapeError(f"gradcheck of {subject}: params must be a dict of named arrays, "
                         f"got {type(params).__name__}")
    elif expected is None:
        drawn = layer.init_params(in_shape, np.random.default_rng(0))
    if expected is None:  # undeclared: the names and shapes init_params draws
        expected = {k: np.shape(v) for k, v in drawn.items()}
    missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or extra:
        raise ShapeError(f"gradcheck of {subject}: params missing {missing or 'none'}, unexpected "
                         f"{extra or 'none'}; the layer takes {sorted(expected)}")
    out = {}
    for k, v in params.items():
        out[k] = checked_array(subject, f"params[{k!r}]", v, dtype, batch=False)
        if out[k].shape != tuple(expected[k]):
            raise ShapeError(f"gradcheck of {subject}: params[{k!r}] has shape {out[k].shape}, "
                             f"expected {tuple(expected[k])} for inputs of shape {in_shape}")
    return out
