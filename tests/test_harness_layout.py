"""The conformance harness hands a layer its arrays in the memory order a model does: conv2d's
output on small images is batch-innermost behind the usual (N, C, H, W) shape."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import nnplug
from nnplug.testing import Case, ConformanceError, check_layer


class SumPoolConfig(nnplug.LayerConfig):
    type: Literal["test_sum_pool"] = "test_sum_pool"
    c_strides: bool = False


class SumPool(nnplug.Layer):
    """2×2 sum pooling. With ``c_strides``, its windows are strided views whose strides are
    computed for a C-contiguous input: right on C order, wrong on any other."""

    Config = SumPoolConfig

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = in_shape
        return (c, h // 2, w // 2)

    def forward(self, params: Any, x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        n, c, h, w = x.shape
        if self.config.c_strides:
            it = x.itemsize
            windows = as_strided(x, shape=(n, c, h // 2, w // 2, 2, 2),
                                 strides=(c * h * w * it, h * w * it, 2 * w * it, 2 * it, w * it, it))
        else:
            windows = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
        return windows.sum(axis=(4, 5)), x.shape

    def backward(self, params: Any, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        h, w = cache[2:]
        dx = np.zeros(cache, dy.dtype)
        dx[:, :, :h // 2 * 2, :w // 2 * 2] = np.repeat(np.repeat(dy, 2, axis=2), 2, axis=3)
        return dx, {}


CASE = Case({"c_strides": True}, ((2, 4, 6),))


def test_a_layer_that_assumes_c_order_fails_on_the_memory_layout_a_model_hands_it():
    with pytest.raises(ConformanceError, match=r"memory layout broken: .*batch-innermost") as caught:
        check_layer(SumPool, CASE, seed=0)
    assert caught.value.check == "memory layout"


def test_a_layer_indifferent_to_memory_order_passes():
    check_layer(SumPool, Case({"c_strides": False}, ((2, 4, 6),)), seed=0)
