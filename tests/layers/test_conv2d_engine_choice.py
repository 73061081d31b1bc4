"""conv2d's ``engine``: a configured engine runs whatever ``auto`` would pick for the shape
(``scipy`` is the reference the other is checked against, so asking for it must get it)."""

from __future__ import annotations

import numpy as np
import pytest
from nnplug_layers.conv2d import Conv2D


@pytest.mark.parametrize("engine", ["scipy", "gemm"])
def test_a_configured_engine_runs_whatever_auto_would_pick(engine):
    layer = Conv2D({"filters": 2, "kernel_size": 3, "engine": engine})
    auto = Conv2D({"filters": 2, "kernel_size": 3})
    x_shape, w_shape = (2, 1, 6, 6), (2, 1, 3, 3)
    assert auto.engine_for(x_shape, w_shape, np.float64) == "gemm"  # what auto picks here
    assert layer.engine_for(x_shape, w_shape, np.float64) == engine
    params = layer.init_params((1, 6, 6), np.random.default_rng(0))
    _, cache = layer.forward(params, np.ones(x_shape), training=True)
    assert cache[0] == engine
