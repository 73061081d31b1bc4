"""conv2d: 2-D cross-correlation over (N, C, H, W) images, laid out as PyTorch's Conv2d."""

from __future__ import annotations

from typing import Any, Literal, cast

import numpy as np
from pydantic import Field

import nnplug
from nnplug_layers import conv_engines as engines
from nnplug_layers import conv_scipy
from nnplug_layers.geometry import PaddingSpec, SizeSpec, Window2D, as_pair, checked_images, window_geometry
from nnplug_layers.init import Initializer, draw_weights


class Conv2DConfig(nnplug.LayerConfig):
    type: Literal["conv2d"] = "conv2d"
    filters: int = Field(..., ge=1, description="number of output channels F")
    kernel_size: SizeSpec = Field(..., description="kh, kw: an int or a pair")
    stride: SizeSpec = Field(1, description="sh, sw: an int or a pair, >= 1")
    padding: PaddingSpec = Field(
        0, description='an int or (h, w) pair per side, "valid" (none) or "same" (TensorFlow rules)')
    bias: bool = True
    engine: Literal["auto", "gemm", "scipy"] = Field(
        "auto", description="scipy: the reference; gemm: im2col + BLAS; auto: picked per shape")
    kernel_initializer: Initializer = "glorot_uniform"
    cache_columns: bool = Field(
        False, description="gemm: build all im2col columns at once and keep them for the weight "
                           "gradient (memory ~ C·kh·kw times the output) instead of walking the "
                           "batch in cache-sized chunks and rebuilding each chunk's columns in "
                           "backward (the default: less memory, measured as fast or faster)")


class Conv2D(nnplug.Layer):
    """y[n, f] = b[f] + Σ_c x[n, c] ⋆ w[f, c] (cross-correlation, stride and padding applied).

    x: (N, C, H, W) -> y: (N, F, Ho, Wo); w: (F, C, kh, kw), b: (F,), with
    Ho = (H + pad_top + pad_bottom - kh) // sh + 1 (likewise Wo).

    Backward: ∂L/∂w[f, c] = Σ_n xp[n, c] ⋆ δ̃[n, f]; ∂L/∂x = crop(Σ_f pad(δ̃[n, f]) ⋆ rot180(w[f, c]));
    ∂L/∂b[f] = Σ_{n,i,j} δ[n, f, i, j]; δ̃ is δ dilated by the stride. ``engine`` chooses how
    these are computed (see :mod:`nnplug_layers.conv_engines`); all agree to rounding.
    """

    Config = Conv2DConfig
    config: Conv2DConfig

    # -- shapes ----------------------------------------------------------------------------

    def geometry(self, in_shape: tuple[int, ...]) -> Window2D:
        """The window geometry over an input of shape (C, H, W)."""
        if len(in_shape) != 3:
            raise nnplug.ShapeError(f"conv2d expects images (C, H, W), received shape {tuple(in_shape)}")
        # "same" pads less than the kernel, which the parameter budget bounds and blames better.
        sized = None if self.config.padding == "same" else in_shape[0]
        return window_geometry((in_shape[1], in_shape[2]), self.config.kernel_size, self.config.stride,
                               self.config.padding, what="conv2d kernel", channels=sized)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.config.filters, *self.geometry(in_shape).out_hw)

    def param_shapes(self, in_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        self.geometry(in_shape)
        kh, kw = as_pair(self.config.kernel_size)
        shapes: dict[str, tuple[int, ...]] = {"w": (self.config.filters, in_shape[0], kh, kw)}
        if self.config.bias:
            shapes["b"] = (self.config.filters,)
        return shapes

    def init_params(self, in_shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
        shapes = self.param_shapes(in_shape)
        kh, kw = as_pair(self.config.kernel_size)
        fan_in, fan_out = in_shape[0] * kh * kw, self.config.filters * kh * kw
        params = {"w": draw_weights(self.config.kernel_initializer, shapes["w"], fan_in, fan_out, rng)}
        if self.config.bias:
            params["b"] = np.zeros(shapes["b"])
        return params

    def engine_for(self, x_shape: tuple[int, ...], w_shape: tuple[int, ...], dtype: Any) -> str:
        """The engine that runs for this input: the configured one, or ``auto``'s choice."""
        if self.config.engine != "auto":
            return self.config.engine
        return engines.choose_engine(x_shape, w_shape, self.geometry(x_shape[1:]), np.dtype(dtype))

    def _checked(self, params: dict[str, np.ndarray], x: np.ndarray) -> tuple[Window2D, np.ndarray]:
        checked_images(x, "conv2d")
        w = params["w"]
        if w.shape[1] != x.shape[1]:
            raise nnplug.ShapeError(
                f"conv2d weights w{w.shape} expect {w.shape[1]} input channels, "
                f"received {x.shape[1]} (input shape {x.shape})")
        if w.shape[2:] != as_pair(self.config.kernel_size) or w.shape[0] != self.config.filters:
            raise nnplug.ShapeError(
                f"conv2d expects w of shape ({self.config.filters}, C, "
                f"{', '.join(map(str, as_pair(self.config.kernel_size)))}), received {w.shape}")
        return self.geometry(x.shape[1:]), w.astype(x.dtype, copy=False)  # keep the input's dtype

    # -- passes ----------------------------------------------------------------------------

    def forward(self, params: dict[str, np.ndarray], x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        geom, w = self._checked(params, x)
        if not len(x):  # an empty batch: nothing to correlate (the engines walk at least one image)
            return np.zeros((0, self.config.filters, *geom.out_hw), x.dtype), ("empty", geom, x.shape)
        engine = self.engine_for(x.shape, w.shape, x.dtype)
        state: Any
        b = params["b"].astype(x.dtype, copy=False) if self.config.bias else None
        if engine == "scipy":
            y, state = conv_scipy.scipy_forward(x, w, b, geom)
        else:
            keep: Literal["columns", "input", "none"] = (
                "none" if not training else "columns" if self.config.cache_columns else "input")
            y, state = engines.gemm_forward(x, w, b, geom, keep=keep)
        return y, (engine, geom, state)

    def backward(self, params: dict[str, np.ndarray], cache: Any, dy: np.ndarray
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        dx, grads = self._gradients(params, cache, dy, input_grad=True)
        return cast(np.ndarray, dx), grads  # asked for, so never None

    def param_grads(self, params: dict[str, np.ndarray], cache: Any, dy: np.ndarray) -> dict[str, np.ndarray]:
        """∂L/∂w and ∂L/∂b without ∂L/∂x: no Wᵀ·δ product and no col2im."""
        return self._gradients(params, cache, dy, input_grad=False)[1]

    def _gradients(self, params: dict[str, np.ndarray], cache: Any, dy: np.ndarray, *, input_grad: bool
                   ) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        engine, geom, state = cache
        w = params["w"].astype(dy.dtype, copy=False)
        if engine == "empty":  # state: the input's shape
            dx = np.zeros(state, dy.dtype) if input_grad else None
            dw, db = np.zeros_like(w), np.zeros(w.shape[0], dy.dtype)
        elif engine == "scipy":
            dx, dw, db = conv_scipy.scipy_backward(w, state, dy, geom, input_grad=input_grad)
        else:
            if state is None:
                raise nnplug.PluginError("conv2d backward needs a forward run with training=True")
            dx, dw, db = engines.gemm_backward(w, state, dy, input_grad=input_grad)
        grads = {"w": dw}
        if self.config.bias:
            grads["b"] = db
        return dx, grads

    # -- property-based checks -------------------------------------------------------------

    @classmethod
    def gradcheck_cases(cls) -> Any:
        from hypothesis import strategies as st

        from nnplug.testing import Case

        @st.composite
        def cases(draw: Any) -> Any:
            kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
            stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
            padding = draw(st.sampled_from(["valid", "same", "int", "pair"]))
            pad: Any = padding
            ph = pw = 0
            if padding == "int":
                ph = pw = draw(st.integers(0, 2))
                pad = ph
            elif padding == "pair":
                ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
                pad = [ph, pw]
            # Valid by construction: the padded input holds at least one window.
            h = max(1, kh - 2 * ph) + draw(st.integers(0, 4))
            w = max(1, kw - 2 * pw) + draw(st.integers(0, 4))
            config = {"filters": draw(st.integers(1, 3)), "kernel_size": [kh, kw],
                      "stride": [stride[0], stride[1]], "padding": pad,
                      "bias": draw(st.booleans()), "engine": draw(st.sampled_from(["scipy", "gemm"]))}
            return Case(config, ((draw(st.integers(1, 3)), h, w),))

        return cases()
