"""Arrays handed in by users (model inputs, gradcheck tensors), checked before any layer sees
them: a ragged list or a string array is named here, not deep inside numpy."""

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
