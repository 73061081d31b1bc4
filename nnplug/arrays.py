"""Arrays handed in by users (model inputs, gradcheck tensors), checked before any layer sees
them: a ragged list or a string array is named here, not deep inside numpy; and the read-only
views the executor hands to plugins."""

from __future__ import annotations

from typing import Any

import numpy as np

from nnplug.errors import ShapeError


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


def read_only_params(own: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A fresh dict of read-only views: a plugin can neither write into the model's weights
    nor add names to them."""
    return {name: read_only(a) for name, a in own.items()}
