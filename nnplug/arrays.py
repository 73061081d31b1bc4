"""Arrays handed in by users (model inputs and params, gradcheck tensors), checked before any
layer sees them: a ragged list or a string array is named here, not deep inside numpy; and
the read-only views the executor hands to plugins."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from nnplug.errors import ShapeError

if TYPE_CHECKING:
    from nnplug.build import Node
    from nnplug.layer import Shape

Params = dict[str, dict[str, np.ndarray]]


def real_array(value: Any, what: str) -> np.ndarray:
    """``value`` as an array of real numbers (float, int, uint or bool), not copied when it
    already is one; a ``ShapeError`` starting with ``what`` otherwise."""
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise ShapeError(f"{what}: not an array ({exc})") from None
    if array.dtype.kind not in "fiub":
        raise ShapeError(f"{what}: expected real numbers, got dtype {array.dtype}")
    return array


def read_only(array: np.ndarray) -> np.ndarray:
    """A view of ``array`` that cannot be written through. The executor hands plugins their
    inputs, params and ``dy`` so: the contract forbids editing them (another node may read the
    same array), and a plugin that does fails at the write instead of corrupting a result."""
    view = array.view()
    view.flags.writeable = False
    return view


def frozen(array: np.ndarray) -> np.ndarray:
    """``array`` itself made read-only, for one the caller owns (a copy it made, a node's
    output the executor now holds): a flag, cheaper than :func:`read_only`'s view."""
    array.flags.writeable = False
    return array


def read_only_params(own: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A fresh dict of read-only views: a plugin can neither write into the model's weights
    nor add names to them."""
    return {name: read_only(a) for name, a in own.items()}


def model_input(x: Any, input_shape: Shape, dtype: np.dtype) -> np.ndarray:
    """A batch for a model: real numbers of shape (N, *input_shape), N ≥ 1, in ``dtype``
    (not copied when it already is)."""
    array = real_array(x, "model input")
    if array.shape[1:] != input_shape or array.ndim != len(input_shape) + 1:
        raise ShapeError(f"model input: expected shape (N, {', '.join(map(str, input_shape))}), got {array.shape}")
    if array.shape[0] == 0:
        raise ShapeError(f"model input: the batch is empty (shape {array.shape})")
    return array.astype(dtype, copy=False)


def loss_target(target: Any, dtype: np.dtype) -> Any:
    """A target as the loss receives it: a float array (regression values, one-hot rows) in the
    predictions' ``dtype``, as the model's inputs are cast (a float64 target would otherwise
    promote a float32 loss); integer labels and anything else exactly as given."""
    if isinstance(target, np.ndarray) and target.dtype.kind == "f" and target.dtype != dtype:
        return target.astype(dtype)
    return target


def model_params(params: Any, nodes: Sequence[Node], node_names: Set[str],
                 declared: Mapping[str, dict[str, Shape] | None], dtype: np.dtype) -> Params:
    """Params a caller passes a model, checked against what the layers declare: the names and
    shapes of every node's parameters, real numbers, cast to ``dtype`` where they are another
    float type (as inputs are). A shape a layer would broadcast silently, or a name it would
    miss, is named here rather than blamed on the plugin."""
    if not isinstance(params, Mapping):
        raise ShapeError(f"params: expected {{node: {{name: array}}}}, got {type(params).__name__}")
    if not params.keys() <= node_names:  # a typo, or another model's weights
        unknown = sorted(map(str, params.keys() - node_names))
        names = [n.name for n in nodes]
        listed = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        raise ShapeError(f"params: no node named {', '.join(map(repr, unknown[:5]))}"
                         f"{' ...' if len(unknown) > 5 else ''} in this model; nodes: {listed}")
    recast: Params | None = None
    for node in nodes:
        own = params.get(node.name, {})
        if not isinstance(own, Mapping):
            raise ShapeError(f"params[{node.name!r}]: expected {{name: array}}, got {type(own).__name__}")
        expected = declared.get(node.name)
        if expected is not None and own.keys() != expected.keys():
            raise ShapeError(f"params[{node.name!r}] ({node.type}): holds {sorted(own)}, expected {sorted(expected)}")
        for name, a in own.items():
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
                got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
                raise ShapeError(f"params[{node.name!r}][{name!r}]: expected an array of real numbers, got {got}")
            if expected is not None and a.shape != expected[name]:
                raise ShapeError(f"params[{node.name!r}][{name!r}] ({node.type}): shape {a.shape}, "
                                 f"expected {expected[name]}")
            if a.dtype != dtype:
                recast = recast if recast is not None else {n: dict(p) for n, p in params.items()}
                recast[node.name][name] = a.astype(dtype)
    return cast(Params, params) if recast is None else recast
