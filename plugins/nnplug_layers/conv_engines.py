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
    col2im_chunk,
    from_columns_layout,
    im2col,
    im2col_chunk,
    padded_batch_first,
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


# -- gemm: im2col + one BLAS product per correlation ----------------------------------------
#
# Two paths. The chunked one (the default) walks the batch a few images at a time so that a
# chunk's columns, ~:data:`CHUNK_BYTES` of them, are still in cache when the GEMM reads them
# and no batch-sized column buffer is allocated (a fresh one page-faults on every call); its
# backward rebuilds each chunk's columns from the cached padded input (a cheap, cached copy).
# The unchunked one (``cache_columns: true``) builds all columns at once and keeps them.

#: The chunked path's target size of one chunk's columns (C·kh·kw, nb·Ho·R), in bytes: about
#: what stays in this machine's caches between im2col's writes and the GEMM's reads.
CHUNK_BYTES = 2 * 1024**2
#: ...but at least this many columns per chunk: narrower GEMMs lose BLAS efficiency.
MIN_CHUNK_COLUMNS = 1024


@dataclass(frozen=True)
class GemmCache:
    """What gemm's backward needs: the columns (unchunked path) or the batch-first padded
    input (N, C, Hp(+1), Wp) to rebuild them chunk by chunk (chunked path)."""

    layout: ColumnLayout
    cols: np.ndarray | None
    xp: np.ndarray | None
    batch: int
    channels: int


def gemm_layout(geom: Window2D) -> ColumnLayout:
    """Flat contiguous taps for stride 1 when the junk columns stay under a quarter of the
    output; strided taps otherwise."""
    wo, wp = geom.out_hw[1], geom.padded_hw[1]
    return ColumnLayout(geom, flat=geom.stride == (1, 1) and 4 * (wp - wo) <= wo)


def chunk_size(batch: int, layout: ColumnLayout, rows: int, itemsize: int) -> int:
    """Images per chunk: the batch split evenly into the fewest chunks whose (rows, nb·Ho·R)
    columns stay within :data:`CHUNK_BYTES` (or :data:`MIN_CHUNK_COLUMNS` columns, whichever
    is more; one image at least). A function of shapes and dtype only."""
    per_chunk = max(MIN_CHUNK_COLUMNS, CHUNK_BYTES // (rows * itemsize))
    n_chunks = max(1, -(-batch * layout.n_cols_per_image // per_chunk))
    return -(-batch // min(n_chunks, batch))


def gemm_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geom: Window2D, *,
                 keep: Literal["columns", "input", "none"]) -> tuple[np.ndarray, GemmCache | None]:
    """y = W · cols + b: (F, C·kh·kw) @ (C·kh·kw, N·Ho·R), then back to (N, F, Ho, Wo).

    ``keep`` says what the cache holds for backward: all the columns (unchunked path), the
    padded input (chunked path; a batch that fits one chunk keeps its columns instead) or
    nothing (inference, chunked).
    """
    layout = gemm_layout(geom)
    n, c = x.shape[:2]
    w2 = w.reshape(w.shape[0], -1)  # (F, K)
    if keep == "input" and chunk_size(n, layout, w2.shape[1], x.dtype.itemsize) >= n:
        # The whole batch is one chunk: its columns are chunk-sized, so keeping them costs little
        # memory and saves rebuilding them in backward (measured ~20% faster on the digits CNN).
        keep = "columns"
    if keep == "columns":
        cols = im2col(padded_channels_first(x, layout), layout)  # (K, N·Ho·R)
        y2 = w2 @ cols  # (F, N·Ho·R)
        if b is not None:  # on the contiguous product: ~3x cheaper than fused into the transpose
            y2 += b[:, None]
        return from_columns_layout(y2, layout, n), GemmCache(layout, cols, None, n, c)
    xp = padded_batch_first(x, layout)  # (N, C, Hp(+1), Wp)
    (ho, wo), per_image = geom.out_hw, layout.n_cols_per_image
    nb = chunk_size(n, layout, w2.shape[1], x.dtype.itemsize)
    col_buf = np.empty(w2.shape[1] * nb * per_image, dtype=x.dtype)
    y_buf = np.empty((w2.shape[0], nb * per_image), dtype=x.dtype)
    y = np.empty((n, w2.shape[0], ho, wo), dtype=x.dtype)
    for n0 in range(0, n, nb):
        m = min(nb, n - n0)
        y2 = np.matmul(w2, im2col_chunk(xp[n0:n0 + m], layout, col_buf), out=y_buf[:, :m * per_image])
        if b is not None:
            y2 += b[:, None]
        # (F, m·Ho·R) -> (m, F, Ho, Wo), junk columns dropped
        y[n0:n0 + m] = y2.reshape(-1, m, ho, layout.row_len)[..., :wo].transpose(1, 0, 2, 3)
    return y, (None if keep == "none" else GemmCache(layout, None, xp, n, c))


def gemm_backward(w: np.ndarray, cache: GemmCache, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """∂L/∂w = δ · colsᵀ and ∂L/∂x = col2im(Wᵀ · δ), each one BLAS product (per chunk on the
    chunked path); ∂L/∂b = Σ δ over batch and pixels."""
    if cache.cols is None:
        return _gemm_backward_chunked(w, cache, dy)
    f = w.shape[0]
    d2 = to_columns_layout(dy, cache.layout)  # (F, N·Ho·R), zeros in junk columns
    dw = (d2 @ cache.cols.T).reshape(w.shape)  # (F, N·L) @ (N·L, K)
    dcols = w.reshape(f, -1).T @ d2  # (K, F) @ (F, N·L): BLAS reads the transpose in place
    dx = col2im(dcols, cache.layout, cache.channels, cache.batch)
    return dx, dw, d2.sum(axis=1)  # junk columns hold zeros


def _gemm_backward_chunked(w: np.ndarray, cache: GemmCache, dy: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per chunk: columns rebuilt from the padded input, dw += δ · colsᵀ, dx = col2im(Wᵀ · δ)."""
    layout, xp = cache.layout, cache.xp
    if xp is None:
        raise ValueError("gemm cache holds neither the columns nor the padded input")
    g, n = layout.geom, cache.batch
    (ho, wo), per_image = g.out_hw, layout.n_cols_per_image
    w2 = w.reshape(w.shape[0], -1)  # (F, K)
    f, k = w2.shape
    nb = chunk_size(n, layout, k, dy.dtype.itemsize)
    col_buf = np.empty(k * nb * per_image, dtype=dy.dtype)
    dcol_buf = np.empty((k, nb * per_image), dtype=dy.dtype)
    d2_buf = np.zeros((f, nb, ho, layout.row_len), dtype=dy.dtype)  # junk columns stay 0
    dxp = np.empty((nb, *xp.shape[1:]), dtype=dy.dtype)  # one chunk of ∂L/∂xp
    dw, dw_part = np.zeros((f, k), dtype=dy.dtype), np.empty((f, k), dtype=dy.dtype)
    dx = np.empty((n, cache.channels, *g.in_hw), dtype=dy.dtype)
    for n0 in range(0, n, nb):
        m = min(nb, n - n0)
        d2_buf[:, :m, :, :wo] = dy[n0:n0 + m].transpose(1, 0, 2, 3)
        d2 = d2_buf[:, :m].reshape(f, m * per_image)  # (F, m·Ho·R)
        cols = im2col_chunk(xp[n0:n0 + m], layout, col_buf)  # (K, m·Ho·R)
        dw += np.matmul(d2, cols.T, out=dw_part)
        dcols = np.matmul(w2.T, d2, out=dcol_buf[:, :m * per_image])  # (K, m·Ho·R)
        dxp[:m] = 0
        col2im_chunk(dcols, layout, dxp[:m])
        dx[n0:n0 + m] = g.crop(dxp[:m, :, :g.padded_hw[0]])
    return dx, dw.reshape(w.shape), dy.sum(axis=(0, 2, 3))


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
