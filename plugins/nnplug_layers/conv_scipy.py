"""conv2d's ``scipy`` engine, the seed's formulation written with ``scipy.signal.correlate``:
the reference the ``gemm`` engine is tested against (notation and equations in
:mod:`nnplug_layers.conv_engines`), plus the two pieces both engines share, the bias
gradient and the stride dilation of δ."""

from __future__ import annotations

import numpy as np

from nnplug_layers.geometry import Window2D, batch_innermost


def bias_grad(dy: np.ndarray) -> np.ndarray:
    """∂L/∂b[f] = Σ_{n,i,j} δ[n, f, i, j], as sums of contiguous rows (4-5x faster than one
    reduction over the axes (0, 2, 3), which numpy walks strided): over the batch first,
    then each filter's row; or, for δ laid out batch innermost, (F, Ho, Wo, N) in memory,
    each filter's row at once (2.5-3x faster than summing the batch first there)."""
    if batch_innermost(dy):
        return dy.transpose(1, 2, 3, 0).reshape(dy.shape[1], -1).sum(axis=1)
    return dy.sum(axis=0).reshape(dy.shape[1], -1).sum(axis=1)


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


def scipy_backward(w: np.ndarray, xp: np.ndarray, dy: np.ndarray, geom: Window2D, *, input_grad: bool = True
                   ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(∂L/∂x or None unless ``input_grad``, ∂L/∂w, ∂L/∂b)."""
    dyd = dilate(dy, geom.stride)
    dx = scipy_input_grad(w, dyd, geom) if input_grad else None
    return dx, scipy_weight_grad(xp, dyd, geom.kernel), bias_grad(dy)
