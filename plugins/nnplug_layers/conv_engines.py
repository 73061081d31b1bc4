"""The engines behind conv2d: ``scipy`` (the reference), ``gemm`` (im2col + BLAS) and the
``auto`` rule that picks between them.

Notation: x (N, C, H, W), w (F, C, kh, kw), y (N, F, Ho, Wo), xp the padded input, δ = ∂L/∂y
and δ̃ the stride-dilated δ (δ̃[i·sh, j·sw] = δ[i, j], zeros between). Every engine computes

    y[n, f]  = Σ_c (xp[n, c] ⋆ w[f, c])[::sh, ::sw]                (valid cross-correlation)
    ∂L/∂w[f, c] = Σ_n xp[n, c] ⋆ δ̃[n, f]                            (valid, first kh × kw lags)
    ∂L/∂xp[n, c] = Σ_f pad(δ̃[n, f]) ⋆ rot180(w[f, c])               (full correlation)

and ∂L/∂x is ∂L/∂xp with the forward padding cropped away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from nnplug_layers.geometry import (
    ColumnLayout,
    Window2D,
    col2im,
    from_columns_layout,
    im2col,
    padded_channels_first,
    to_columns_layout,
    window_geometry,
)

Engine = Literal["scipy", "gemm"]

# -- scipy: the seed's formulation, written with scipy.signal.correlate ----------------------


def dilate(dy: np.ndarray, stride: tuple[int, int]) -> np.ndarray:
    """(N, F, Ho, Wo) -> (N, F, (Ho-1)·sh+1, (Wo-1)·sw+1) with δ on the stride grid, zeros between."""
    sh, sw = stride
    if (sh, sw) == (1, 1):
        return dy
    n, f, ho, wo = dy.shape
    out = np.zeros((n, f, (ho - 1) * sh + 1, (wo - 1) * sw + 1), dtype=dy.dtype)
    out[:, :, ::sh, ::sw] = dy
    return out


def scipy_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geom: Window2D
                  ) -> tuple[np.ndarray, np.ndarray]:
    """y and the padded input kept for backward.

    One ``correlate`` per (filter, channel) pair over the whole batch: the kernel is given a
    batch axis of length 1, so each example is correlated separately (FFT, the fastest here).
    """
    from scipy import signal  # imported on first use: it adds ~0.5 s to every command's start

    xp = geom.pad(x)  # (N, C, Hp, Wp)
    n, f = x.shape[0], w.shape[0]
    (ho, wo), (sh, sw) = geom.out_hw, geom.stride
    y = np.zeros((n, f, ho, wo), dtype=x.dtype)
    for fi in range(f):
        for c in range(x.shape[1]):
            full = signal.correlate(xp[:, c], w[fi, c][None], mode="valid", method="fft")
            y[:, fi] += full[:, :(ho - 1) * sh + 1:sh, :(wo - 1) * sw + 1:sw]
    if b is not None:
        y += b[:, None, None]
    return y, xp


def scipy_weight_grad(xp: np.ndarray, dyd: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """∂L/∂w[f, c] = Σ_n xp[n, c] ⋆ δ̃[n, f], one ``correlate`` per pair.

    The batch is stacked vertically into one tall image per tensor (a free reshape of xp): the
    wanted lags are below kh, so a window of δ̃ never reaches into the next example, and the
    2-D valid correlation sums over the batch by itself. ``method="direct"`` is the faster here
    because only kh × kw lags are wanted.
    """
    from scipy import signal

    n, c, hp, wp = xp.shape
    f, hd = dyd.shape[1], dyd.shape[2]
    kh, kw = kernel
    tall_x = xp.reshape(n, c, hp, wp).transpose(1, 0, 2, 3).reshape(c, n * hp, wp)  # (C, N·Hp, Wp)
    # δ̃ padded at the bottom to Hp rows per example, stacked the same way, last rows dropped.
    tall_d = np.zeros((f, n, hp, dyd.shape[3]), dtype=dyd.dtype)
    tall_d[:, :, :hd] = dyd.transpose(1, 0, 2, 3)
    tall_d = tall_d.reshape(f, n * hp, -1)[:, :(n - 1) * hp + hd]  # (F, (N-1)·Hp + Hd, Wd)
    dw = np.empty((f, c, kh, kw), dtype=xp.dtype)
    for fi in range(f):
        for ci in range(c):
            dw[fi, ci] = signal.correlate(tall_x[ci], tall_d[fi], mode="valid", method="direct")[:kh, :kw]
    return dw


def scipy_input_grad(w: np.ndarray, dyd: np.ndarray, geom: Window2D) -> np.ndarray:
    """∂L/∂x: the full correlation of δ̃ with rot180(w), summed over filters, then cropped."""
    from scipy import signal

    n, f, hd, wd = dyd.shape
    c, (kh, kw) = w.shape[1], geom.kernel
    hp, wp = geom.padded_hw
    dxp = np.zeros((n, c, hp, wp), dtype=dyd.dtype)
    rotated = w[:, :, ::-1, ::-1]  # rot180 of every kernel
    for ci in range(c):
        for fi in range(f):
            # (N, Hd + kh - 1, Wd + kw - 1); rows past it were in no window: gradient 0.
            dxp[:, ci, :hd + kh - 1, :wd + kw - 1] += signal.correlate(
                dyd[:, fi], rotated[fi, ci][None], mode="full", method="fft")
    return np.ascontiguousarray(geom.crop(dxp))


def scipy_backward(w: np.ndarray, xp: np.ndarray, dy: np.ndarray, geom: Window2D
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(∂L/∂x, ∂L/∂w, ∂L/∂b)."""
    dyd = dilate(dy, geom.stride)
    return scipy_input_grad(w, dyd, geom), scipy_weight_grad(xp, dyd, geom.kernel), dy.sum(axis=(0, 2, 3))


# -- gemm: one im2col buffer, one BLAS product per correlation -------------------------------


@dataclass(frozen=True)
class GemmCache:
    """What gemm's backward needs: the columns (or the padded input to rebuild them)."""

    layout: ColumnLayout
    cols: np.ndarray | None
    xp: np.ndarray | None
    batch: int
    channels: int

    def columns(self) -> np.ndarray:
        if self.cols is not None:
            return self.cols
        if self.xp is None:
            raise ValueError("gemm cache holds neither the columns nor the padded input")
        return im2col(self.xp, self.layout)  # cache_columns=false: rebuilt, the memory saved


def gemm_layout(geom: Window2D) -> ColumnLayout:
    """Flat contiguous taps for stride 1 when the junk columns stay under a quarter of the
    output; strided taps otherwise."""
    wo, wp = geom.out_hw[1], geom.padded_hw[1]
    return ColumnLayout(geom, flat=geom.stride == (1, 1) and 4 * (wp - wo) <= wo)


def gemm_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geom: Window2D, *,
                 keep: Literal["columns", "input", "none"]) -> tuple[np.ndarray, GemmCache | None]:
    """y = W · cols + b: (F, C·kh·kw) @ (C·kh·kw, N·Ho·R), then back to (N, F, Ho, Wo).

    ``keep`` says what the cache holds for backward: the columns (fastest), the padded
    input (columns rebuilt in backward: less memory) or nothing (inference).
    """
    layout = gemm_layout(geom)
    n, c = x.shape[:2]
    xp = padded_channels_first(x, layout)  # (C, N, Hp(+1), Wp)
    cols = im2col(xp, layout)  # (K, N·Ho·R)
    y2 = w.reshape(w.shape[0], -1) @ cols  # (F, N·Ho·R)
    if b is not None:  # on the contiguous product: ~3x cheaper than fused into the transpose
        y2 += b[:, None]
    y = from_columns_layout(y2, layout, n)
    if keep == "none":
        return y, None
    return y, GemmCache(layout, cols if keep == "columns" else None,
                        xp if keep == "input" else None, n, c)


def gemm_backward(w: np.ndarray, cache: GemmCache, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """∂L/∂w = δ · colsᵀ and ∂L/∂x = col2im(Wᵀ · δ), each one BLAS product; ∂L/∂b = row sums of δ."""
    f = w.shape[0]
    w2 = w.reshape(f, -1)  # (F, K)
    d2 = to_columns_layout(dy, cache.layout)  # (F, N·Ho·R), zeros in junk columns
    dw = (d2 @ cache.columns().T).reshape(w.shape)  # (F, N·L) @ (N·L, K)
    dcols = np.ascontiguousarray(w2.T) @ d2  # (K, F) @ (F, N·L)
    dx = col2im(dcols, cache.layout, cache.channels, cache.batch)
    return dx, dw, d2.sum(axis=1)  # junk columns hold zeros


def gemm_input_grad_full_correlation(w: np.ndarray, dy: np.ndarray, geom: Window2D) -> np.ndarray:
    """∂L/∂x as the seed writes it, in one GEMM: im2col of the padded, dilated δ against
    rot180(w) with filters and channels swapped. Equal to col2im's result (a test proves it);
    kept to measure against col2im, which is the faster in every shape measured."""
    dyd = dilate(dy, geom.stride)
    n, _, hd, wd = dyd.shape
    c, (kh, kw) = w.shape[1], geom.kernel
    full = window_geometry((hd, wd), (kh, kw), 1, (kh - 1, kw - 1), what="kernel")
    layout = gemm_layout(full)
    cols = im2col(padded_channels_first(dyd, layout), layout)  # (F·kh·kw, N·L')
    w_rot = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1)  # (C, F·kh·kw)
    dfull = from_columns_layout(w_rot @ cols, layout, n)  # (N, C, Hd + kh - 1, Wd + kw - 1)
    hp, wp = geom.padded_hw
    dxp = np.zeros((n, c, hp, wp), dtype=dy.dtype)
    dxp[:, :, :hd + kh - 1, :wd + kw - 1] = dfull
    return np.ascontiguousarray(geom.crop(dxp))


# -- auto: which engine runs -----------------------------------------------------------------

#: auto runs gemm unless its column buffer would exceed this many bytes.
GEMM_BUFFER_LIMIT = 2 * 1024**3


def columns_nbytes(x_shape: tuple[int, ...], geom: Window2D, itemsize: int) -> int:
    """Bytes of the gemm engine's column buffer (C·kh·kw, N·Ho·R) for an input (N, C, H, W)."""
    n, c = x_shape[:2]
    return c * geom.n_taps * n * gemm_layout(geom).n_cols_per_image * itemsize


def choose_engine(x_shape: tuple[int, ...], w_shape: tuple[int, ...], geom: Window2D,
                  dtype: np.dtype) -> Engine:
    """The engine ``auto`` runs: a pure function of the shapes and dtype (deterministic).

    gemm, whose forward + backward measured 3-50x faster than scipy's on every shape tried
    (one to 64 channels, kernels 3x3 to 31x31, images 16 to 128 wide; README "Convolution
    and pooling"). scipy's weight gradient needs only kh x kw lags, so FFTs do not pay and
    its direct correlation grows with the kernel as gemm's work does, without BLAS. scipy
    runs only when gemm's column buffer would pass :data:`GEMM_BUFFER_LIMIT` bytes, since it
    needs memory of the input's size only.
    """
    if columns_nbytes(x_shape, geom, np.dtype(dtype).itemsize) > GEMM_BUFFER_LIMIT:
        return "scipy"
    return "gemm"


def describe_choice(x_shape: tuple[int, ...], w_shape: tuple[int, ...], geom: Window2D,
                    dtype: Any) -> str:
    """One line saying what ``auto`` picks and why (for summaries and debugging)."""
    nbytes = columns_nbytes(x_shape, geom, np.dtype(dtype).itemsize)
    engine = choose_engine(x_shape, w_shape, geom, np.dtype(dtype))
    relation = "over" if nbytes > GEMM_BUFFER_LIMIT else "within"
    return (f"auto -> {engine} (gemm columns {nbytes / 2**20:.1f} MiB, {relation} the "
            f"{GEMM_BUFFER_LIMIT / 2**20:.0f} MiB limit)")
