"""What nnplug.gradcheck accepts as a layer's inputs."""

from __future__ import annotations

import numpy as np
import pytest

import nnplug


def test_a_multi_input_layer_given_one_batch_as_long_as_its_inputs_is_not_split_into_them():
    # a batch of two examples given to `add` was read as two inputs of scalar examples and
    # checked, silently, on that
    add = nnplug.load_registry().get("add")()
    x = np.random.default_rng(0).standard_normal((2, 3))
    with pytest.raises(nnplug.ShapeError, match=r"takes a tuple of 2 inputs, got ndarray of 2 .*shape \(2, 3\)"):
        nnplug.gradcheck(add, x)
    assert nnplug.gradcheck(add, (x, x + 1)).ok
    assert nnplug.gradcheck(add, [x, x + 1]).ok
