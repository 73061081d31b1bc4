"""Built-in layers called directly, not through a model (which casts its input and refuses an
empty batch): an empty batch gives empty outputs and zero gradients; integer images are
refused where they would be computed in, not truncated."""

from __future__ import annotations

import numpy as np
import pytest

import nnplug

REGISTRY = nnplug.load_registry()
IMAGE_LAYERS = [("conv2d", {"filters": 2, "kernel_size": 3, "engine": "gemm"}),
                ("conv2d", {"filters": 2, "kernel_size": 3, "engine": "scipy", "padding": 1}),
                ("conv2d", {"filters": 2, "kernel_size": 3, "stride": 2}),
                ("maxpool2d", {"pool_size": 2}), ("avgpool2d", {"pool_size": 3, "padding": "same"}),
                ("global_avgpool", {})]


def _layer(type_name, config):
    layer = REGISTRY.get(type_name)(config)
    return layer, layer.init_params((3, 8, 8), np.random.default_rng(0))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("type_name", "config"), IMAGE_LAYERS)
def test_an_empty_batch_gives_empty_outputs_and_zero_parameter_gradients(type_name, config, dtype):
    layer, params = _layer(type_name, config)
    params = {k: v.astype(dtype) for k, v in params.items()}
    x = np.zeros((0, 3, 8, 8), dtype)
    y, cache = layer.forward(params, x, training=True)
    assert y.shape == (0, *layer.output_shape((3, 8, 8))) and y.dtype == dtype
    dx, grads = layer.backward(params, cache, np.zeros(y.shape, dtype))
    assert dx.shape == x.shape and dx.dtype == dtype
    assert {k: (g.shape, g.dtype, float(np.abs(g).sum())) for k, g in grads.items()} == {
        k: (v.shape, np.dtype(dtype), 0.0) for k, v in params.items()}


@pytest.mark.parametrize("engine", ["gemm", "scipy"])
def test_conv2d_refuses_integer_images_instead_of_casting_its_weights_to_int(engine):
    layer, params = _layer("conv2d", {"filters": 2, "kernel_size": 3, "engine": engine})
    with pytest.raises(nnplug.ShapeError, match=r"conv2d expects floating-point images .*received dtype int64"):
        layer.forward(params, np.ones((2, 3, 8, 8), dtype=np.int64), training=False)


def test_avgpool2d_refuses_integer_images_instead_of_truncating_their_means():
    layer, params = _layer("avgpool2d", {"pool_size": 2})
    with pytest.raises(nnplug.ShapeError, match=r"avgpool2d expects floating-point images .*received dtype int32"):
        layer.forward(params, np.ones((2, 3, 8, 8), dtype=np.int32), training=False)


def test_conv2d_given_a_list_names_what_it_received():
    layer, params = _layer("conv2d", {"filters": 2, "kernel_size": 3})
    with pytest.raises(nnplug.ShapeError, match=r"conv2d expects a numpy array of images .*received list"):
        layer.forward(params, np.ones((1, 3, 8, 8)).tolist(), training=False)
