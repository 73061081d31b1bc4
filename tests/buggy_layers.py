"""A test-only plugin of layers with injected backward bugs, one typical mistake each.

Every class subclasses a real built-in layer under a distinct type name (``buggy_...``) and
overrides ``backward`` (and, for the conv and pooling bugs, wraps ``forward``'s cache) so that
shapes stay valid and only the numbers are wrong. ``WITNESSES`` gives each bug a case whose
shapes make the mistake visible (a transposed-then-reshaped matrix is right when it is a
column, a wrong pooling route is right for 1x1 windows). Register with
``nnplug.Registry(plugins=[buggy_layers])``.

The conv and pooling bugs are defined only when ``conv2d``, ``maxpool2d``, ``avgpool2d`` (and
``global_avgpool``) are registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import create_model

import nnplug
from nnplug.testing import Case

_REAL = nnplug.load_registry()

#: type name -> the mistake it carries
BUGS: dict[str, str] = {}
#: type name -> a case on which the mistake shows
WITNESSES: dict[str, Case] = {}
CLASSES: list[type] = []


def bug(base_type: str, type_name: str, description: str, witness: Case,
        forward: Callable[..., Any] | None = None) -> Callable[[Callable[..., Any]], type]:
    """Register ``backward`` (the decorated function) as a buggy variant of ``base_type``."""
    base = _REAL.get(base_type)

    def make(backward: Callable[..., Any]) -> type:
        config = create_model(f"{type_name}_config", __base__=base.Config,
                              type=(Literal[type_name], type_name))  # type: ignore[valid-type]
        # param_grads from the buggy backward: the base class's own override would disagree with
        # it and be flagged first, by the param_grads check rather than the gradient check.
        body: dict[str, Any] = {"Config": config, "backward": backward, "__doc__": description,
                                "__module__": __name__, "param_grads": nnplug.Layer.param_grads}
        if forward is not None:
            body["forward"] = forward
        cls = type("".join(p.title() for p in type_name.split("_")), (base,), body)
        CLASSES.append(cls)
        BUGS[type_name] = description
        WITNESSES[type_name] = witness
        return cls

    return make


# -- dense -----------------------------------------------------------------------------------

_DENSE = Case({"units": 3, "bias": True}, ((4,),))


@bug("dense", "buggy_dense_dx_reshaped", "dx = (w^T dy^T) reshaped to (N, in) instead of transposed",
     _DENSE)
def _dense_dx_reshaped(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
    x = cache
    grads = {"w": dy.T @ x, "b": dy.sum(axis=0)} if self.config.bias else {"w": dy.T @ x}
    return (params["w"].T @ dy.T).reshape(x.shape), grads  # (in, N) read as (N, in)


@bug("dense", "buggy_dense_bias_not_summed", "bias gradient averaged over the batch, not summed", _DENSE)
def _dense_bias_mean(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
    x = cache
    grads = {"w": dy.T @ x}
    if self.config.bias:
        grads["b"] = dy.mean(axis=0)
    return dy @ params["w"], grads


@bug("dense", "buggy_dense_dw_scaled", "weight gradient divided by the batch size", _DENSE)
def _dense_dw_scaled(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
    x = cache
    grads = {"w": dy.T @ x / x.shape[0]}
    if self.config.bias:
        grads["b"] = dy.sum(axis=0)
    return dy @ params["w"], grads


# -- activations -----------------------------------------------------------------------------

_MAP = Case({}, ((3, 4),), values="off_zero")


@bug("relu", "buggy_relu_mask_ge", "mask y >= 0 lets the gradient through for negative inputs", _MAP)
def _relu_ge(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
    return dy * (cache >= 0), {}


@bug("leaky_relu", "buggy_leaky_relu_slopes_swapped", "slope alpha applied to x > 0 and 1 to x <= 0",
     Case({"alpha": 0.2}, ((3, 4),), values="off_zero"))
def _leaky_swapped(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
    return np.where(cache, self.config.alpha * dy, dy), {}


@bug("sigmoid", "buggy_sigmoid_derivative", "derivative sigma(y)(1 - sigma(y)) taken of the output",
     Case({}, ((3, 4),)))
def _sigmoid_wrong(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
    s = 1 / (1 + np.exp(-cache))
    return dy * s * (1 - s), {}


@bug("tanh", "buggy_tanh_derivative", "derivative 1 - y instead of 1 - y^2", Case({}, ((3, 4),)))
def _tanh_wrong(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
    return dy * (1 - cache), {}


# -- structure -------------------------------------------------------------------------------


@bug("flatten", "buggy_flatten_order", "dy reshaped back in Fortran order", Case({}, ((2, 3),)))
def _flatten_order(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
    shape, _ = cache  # (x's shape, whether x was batch-innermost)
    return dy.reshape(shape, order="F").copy(), {}


@bug("add", "buggy_add_halved", "the gradient split between the branches instead of copied to both",
     Case({}, ((2, 3), (2, 3))))
def _add_halved(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
    return (dy / 2, dy / 2), {}


@bug("concat", "buggy_concat_swapped", "dy split as if the inputs came in the other order",
     Case({"axis": 1}, ((2, 3), (2, 3))))
def _concat_swapped(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
    axis = self.config.axis
    first = dy.shape[axis] - cache  # the second input's size, used as the split point
    head, tail = np.split(dy, [first], axis=axis)
    return (tail.copy(), head.copy()), {}


# -- losses ----------------------------------------------------------------------------------


@bug("softmax_cross_entropy", "buggy_softmax_ce_no_mean", "gradient softmax - onehot without the 1/N",
     Case({}, ((4,),)))
def _sce_no_mean(self: Any, cache: Any) -> Any:
    log_softmax, onehot = cache
    return np.exp(log_softmax) - onehot


@bug("mse", "buggy_mse_factor", "gradient (pred - target) / size, the factor 2 dropped", Case({}, ((3,),)))
def _mse_factor(self: Any, cache: Any) -> Any:
    return cache * (1 / cache.size)


# -- conv2d and pooling (once they are registered) -------------------------------------------


def _keep_input(base: type) -> Callable[..., Any]:
    """A forward that also keeps its input in the cache, so a buggy backward can use it."""

    def forward(self: Any, params: Any, x: Any, *, training: bool) -> Any:
        y, cache = base.forward(self, params, x, training=training)
        return y, (x, cache)

    return forward


def _geometry(layer: Any, x: np.ndarray) -> Any:
    from nnplug_layers.geometry import window_geometry

    c = layer.config
    kernel = getattr(c, "kernel_size", None) or c.pool_size
    stride = c.stride if c.stride is not None else kernel
    return window_geometry(x.shape[2:], kernel, stride, c.padding, what="kernel")


def _conv_dx(w: np.ndarray, dy: np.ndarray, x: np.ndarray, geom: Any, step: tuple[int, int],
             shift: int = 0) -> np.ndarray:
    """dx by scattering every output cell's gradient over its window (a naive loop), with
    windows ``step`` apart and the crop shifted by ``shift`` cells: the bugs' building block."""
    (kh, kw), (ho, wo) = geom.kernel, geom.out_hw
    hp, wp = geom.padded_hw
    dxp = np.zeros((x.shape[0], x.shape[1], hp + shift, wp + shift), dtype=dy.dtype)
    for i in range(ho):
        for j in range(wo):
            r, c = i * step[0], j * step[1]
            dxp[:, :, r:r + kh, c:c + kw] += np.einsum("nf,fckl->nckl", dy[:, :, i, j], w)
    top, left = geom.pad_h[0] + shift, geom.pad_w[0] + shift
    return dxp[:, :, top:top + x.shape[2], left:left + x.shape[3]].copy()  # (N, C, H, W)


if {"conv2d", "maxpool2d", "avgpool2d"} <= set(_REAL.types):
    _CONV, _POOL, _AVG = (_REAL.get(t) for t in ("conv2d", "maxpool2d", "avgpool2d"))
    _CONV_CASE = Case({"filters": 2, "kernel_size": 3, "stride": 1, "padding": 1}, ((2, 5, 5),))

    @bug("conv2d", "buggy_conv2d_dx_unrotated", "input gradient correlates dy with the kernel "
         "itself, not the kernel rotated by 180 degrees", _CONV_CASE, forward=_keep_input(_CONV))
    def _conv_unrotated(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
        _, inner = cache
        _, grads = _CONV.backward(self, params, inner, dy)
        flipped = {**params, "w": params["w"][..., ::-1, ::-1].copy()}
        dx, _ = _CONV.backward(self, flipped, inner, dy)
        return dx, grads

    @bug("conv2d", "buggy_conv2d_dw_rotated", "weight gradient rotated by 180 degrees", _CONV_CASE,
         forward=_keep_input(_CONV))
    def _conv_dw_rotated(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
        dx, grads = _CONV.backward(self, params, cache[1], dy)
        return dx, {**grads, "w": grads["w"][..., ::-1, ::-1].copy()}

    @bug("conv2d", "buggy_conv2d_stride_off_by_one", "input gradient scattered with windows s - 1 "
         "apart instead of s", Case({"filters": 2, "kernel_size": 2, "stride": 2}, ((1, 6, 6),)),
         forward=_keep_input(_CONV))
    def _conv_stride(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
        x, inner = cache
        _, grads = _CONV.backward(self, params, inner, dy)
        geom = _geometry(self, x)
        step = (geom.stride[0] - 1, geom.stride[1] - 1)
        return _conv_dx(params["w"], dy, x, geom, step), grads

    @bug("conv2d", "buggy_conv2d_padding_off_by_one", "input gradient cropped from the padded "
         "gradient one cell off (as if padded p + 1)", _CONV_CASE, forward=_keep_input(_CONV))
    def _conv_padding(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
        x, inner = cache
        _, grads = _CONV.backward(self, params, inner, dy)
        geom = _geometry(self, x)
        return _conv_dx(params["w"], dy, x, geom, geom.stride, shift=1), grads

    def _pool_forward_argmin(self: Any, params: Any, x: Any, *, training: bool) -> Any:
        y, _ = _POOL.forward(self, params, x, training=training)
        _, routes_to_min = _POOL.forward(self, params, -x, training=training)
        return y, routes_to_min

    @bug("maxpool2d", "buggy_maxpool2d_wrong_cell", "gradient routed to each window's minimum, not "
         "its maximum", Case({"pool_size": 2}, ((1, 4, 4),), values="distinct"), forward=_pool_forward_argmin)
    def _pool_wrong_cell(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
        return _POOL.backward(self, params, cache, dy)

    @bug("avgpool2d", "buggy_avgpool2d_no_mean", "gradient not divided by the window size k",
         Case({"pool_size": 2}, ((1, 4, 4),)))
    def _avg_no_mean(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
        dx, grads = _AVG.backward(self, params, cache, dy)
        kh, kw = (self.config.pool_size, self.config.pool_size) if isinstance(self.config.pool_size, int) \
            else self.config.pool_size
        return dx * (kh * kw), grads


if "global_avgpool" in _REAL.types:

    @bug("global_avgpool", "buggy_global_avgpool_no_mean", "gradient not divided by H * W",
         Case({}, ((2, 3, 3),)))
    def _global_no_mean(self: Any, params: Any, cache: Any, dy: np.ndarray) -> Any:
        return np.broadcast_to(dy[:, :, None, None], cache).copy(), {}  # (N, C) -> (N, C, H, W)


@nnplug.hookimpl
def nnplug_register_layers() -> list[type]:
    return CLASSES
