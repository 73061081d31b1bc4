"""The batch-innermost memory order: conv2d's batch_inner layout returns it, the layers after it
keep it (outputs and input gradients alike), and no result depends on it; and the chunk
layout's image buffer holds every cell its taps read."""

from __future__ import annotations

import numpy as np
import pytest
from nnplug_layers import columns
from nnplug_layers.columns import ColumnLayout
from nnplug_layers.geometry import batch_innermost, images_like, window_geometry

import nnplug

REGISTRY = nnplug.load_registry()


def batch_inner_copy(x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) with the same values, laid out (C, H, W, N) in memory."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)


def test_images_like_lays_out_batch_innermost_only_when_asked():
    a = images_like(True, (3, 2, 4, 5), np.float32)
    assert a.shape == (3, 2, 4, 5) and batch_innermost(a)
    assert not batch_innermost(images_like(False, (3, 2, 4, 5), np.float32))
    assert images_like(True, (3, 2, 4, 5), np.float64, zeroed=True).sum() == 0
    assert not batch_innermost(np.ones((1, 2, 4, 5)))  # one image: no order to keep
    assert images_like(True, (3, 7), np.float32).flags.c_contiguous  # not images: C order


def test_conv2d_on_small_images_returns_its_output_batch_innermost():
    layer = REGISTRY.get("conv2d")({"filters": 4, "kernel_size": 3, "padding": 1})
    assert ColumnLayout.for_geometry(layer.geometry((2, 5, 5))).mode == "batch_inner"
    params = layer.init_params((2, 5, 5), np.random.default_rng(0))
    y, _ = layer.forward(params, np.random.default_rng(1).standard_normal((6, 2, 5, 5)), training=True)
    assert y.shape == (6, 4, 5, 5) and batch_innermost(y)


def _layers():
    return [
        ("conv2d", {"filters": 3, "kernel_size": 3, "padding": 1}, (2, 6, 5)),
        ("conv2d", {"filters": 3, "kernel_size": 3, "stride": 2}, (2, 7, 7)),
        ("maxpool2d", {"pool_size": 2}, (3, 6, 4)),
        ("maxpool2d", {"pool_size": 3, "stride": 1, "padding": 1}, (3, 5, 5)),
        ("avgpool2d", {"pool_size": 2}, (3, 6, 4)),
        ("avgpool2d", {"pool_size": 3, "stride": 2, "padding": 1}, (3, 5, 5)),
        ("relu", {}, (3, 4, 4)),
        ("flatten", {}, (3, 4, 4)),
    ]


@pytest.mark.parametrize(("type_name", "config", "in_shape"), _layers())
def test_results_do_not_depend_on_the_input_memory_order(type_name, config, in_shape):
    layer = REGISTRY.get(type_name)(config)
    rng = np.random.default_rng(3)
    params = layer.init_params(in_shape, rng)
    x = rng.standard_normal((5, *in_shape))
    y, cache = layer.forward(params, x, training=True)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(params, cache, dy)
    y2, cache2 = layer.forward(params, batch_inner_copy(x), training=True)
    dx2, grads2 = layer.backward(params, cache2, dy)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(dx2, dx)
    for name in grads:
        np.testing.assert_array_equal(grads2[name], grads[name])


@pytest.mark.parametrize(("type_name", "config", "in_shape"), _layers())
def test_gradients_do_not_depend_on_the_output_gradients_memory_order(type_name, config, in_shape):
    layer = REGISTRY.get(type_name)(config)
    rng = np.random.default_rng(6)
    params = layer.init_params(in_shape, rng)
    y, cache = layer.forward(params, rng.standard_normal((5, *in_shape)), training=True)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(params, cache, dy)
    dx2, grads2 = layer.backward(params, cache, batch_inner_copy(dy) if dy.ndim == 4 else dy)
    np.testing.assert_allclose(dx2, dx, rtol=1e-12, atol=1e-12)
    assert grads2.keys() == grads.keys()
    for name in grads:  # summed in another order (conv2d's bias): equal to rounding
        np.testing.assert_allclose(grads2[name], grads[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("type_name", "config", "in_shape"), _layers())
def test_the_input_gradient_keeps_the_inputs_memory_order(type_name, config, in_shape):
    layer = REGISTRY.get(type_name)(config)
    rng = np.random.default_rng(4)
    params = layer.init_params(in_shape, rng)
    for x in (rng.standard_normal((5, *in_shape)), batch_inner_copy(rng.standard_normal((5, *in_shape)))):
        y, cache = layer.forward(params, x, training=True)
        dx, _ = layer.backward(params, cache, np.ones_like(y))
        assert batch_innermost(dx) == batch_innermost(x)


@pytest.mark.parametrize("type_name", ["maxpool2d", "avgpool2d", "relu"])
def test_layers_after_a_conv_keep_its_outputs_memory_order(type_name):
    config = {"pool_size": 2} if type_name != "relu" else {}
    layer = REGISTRY.get(type_name)(config)
    x = batch_inner_copy(np.random.default_rng(5).standard_normal((4, 3, 4, 4)))
    y, _ = layer.forward({}, x, training=True)
    assert batch_innermost(y)


@pytest.mark.parametrize(("in_hw", "kernel", "padding"), [
    ((15, 14), (3, 3), 1), ((16, 18), (2, 4), (1, 0)), ((20, 20), (5, 5), 2), ((16, 16), (1, 1), 0),
    ((17, 15), (4, 2), 0),
])
def test_the_chunk_layouts_last_tap_reads_nothing_past_its_image_buffer(in_hw, kernel, padding):
    layout = ColumnLayout.for_geometry(window_geometry(in_hw, kernel, 1, padding, what="kernel"))
    assert layout.mode == "chunk"
    (kh, kw), wp, (c, m) = kernel, layout.geom.padded_hw[1], (2, 3)
    n = c * m * layout.image_size + layout.slack  # the image buffer's length
    run = c * m * layout.n_cols_per_image
    assert (kh - 1) * wp + (kw - 1) + run <= n  # the last tap's run starts at (kh-1)·Wp + kw-1
    # and in practice: NaN just past the buffer never reaches the columns, junk ones included
    memory = np.full(n + 8, np.nan)
    buf = memory[:n]
    buf[:] = 0
    x = np.random.default_rng(7).standard_normal((m, c, *in_hw))
    cols = columns.im2col(columns.fill_images(x, layout, buf), layout, c, m,
                          np.empty(c * kh * kw * m * layout.n_cols_per_image))
    assert np.isfinite(cols).all()
