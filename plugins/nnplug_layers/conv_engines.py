"""The engines behind conv2d: ``gemm`` (im2col + BLAS), here with the ``auto`` rule that picks
between it and ``scipy`` (the reference, :mod:`nnplug_layers.conv_scipy`).

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

from nnplug_layers.columns import ColumnLayout, col2im, crop_images, fill_grad, fill_images, im2col
from nnplug_layers.conv_scipy import bias_grad, dilate
from nnplug_layers.geometry import Window2D, batch_innermost, images_like, window_geometry
from nnplug_layers.scratch import workspace
from nnplug_layers.workers import MIN_OP_ELEMENTS, blas_threads, run_parts, split_batch

Engine = Literal["scipy", "gemm"]


# -- gemm: im2col + one BLAS product per correlation ----------------------------------------
#
# The batch is walked a few images at a time: a chunk's columns, about :data:`CHUNK_BYTES` of
# them, are still in cache when the GEMM reads them, and no batch-sized column buffer is
# allocated (a fresh one page-faults on every call). Large work is also split into one part
# of the batch per BLAS thread (``workers``), each walking its own chunks with a
# single-threaded BLAS, so that the copies around the GEMMs run on every core too; smaller
# work runs on the calling thread with BLAS's threads inside the GEMMs. Backward rebuilds each
# chunk's columns from the input (a cheap, cached copy) unless forward kept them
# (``cache_columns: true``). Buffers that live only inside one call (the padded images, the
# columns, the products) are the calling thread's scratch (:mod:`nnplug_layers.scratch`),
# reused from call to call: allocated afresh, their pages were faulted in on every call.

#: The target size of one chunk's columns (C·kh·kw, nb·S), in bytes: about what stays in this
#: machine's caches between im2col's writes and the GEMM's reads.
CHUNK_BYTES = 2 * 1024**2
#: ...but at least this many columns per chunk: narrower GEMMs lose BLAS efficiency.
MIN_CHUNK_COLUMNS = 1024


@dataclass(frozen=True)
class GemmCache:
    """What gemm's backward needs: the input (a reference, not a copy), the parts the batch
    was split into, and each chunk's columns by first image when forward kept them."""

    layout: ColumnLayout
    x: np.ndarray
    parts: tuple[tuple[int, int], ...]
    columns: dict[int, np.ndarray] | None


def gemm_layout(geom: Window2D) -> ColumnLayout:
    """The column layout gemm uses for this geometry (see :mod:`nnplug_layers.columns`)."""
    return ColumnLayout.for_geometry(geom)


def chunk_size(batch: int, layout: ColumnLayout, rows: int, itemsize: int) -> int:
    """Images per chunk: the batch split evenly into the fewest chunks whose (rows, nb·S)
    columns stay within :data:`CHUNK_BYTES` (or :data:`MIN_CHUNK_COLUMNS` columns, whichever
    is more; one image at least). A function of shapes and dtype only."""
    per_chunk = max(MIN_CHUNK_COLUMNS, CHUNK_BYTES // (rows * itemsize))
    n_chunks = max(1, -(-batch * layout.n_cols_per_image // per_chunk))
    return -(-batch // min(n_chunks, batch))


def batch_parts(batch: int, layout: ColumnLayout, channels: int, rows: int, itemsize: int
                ) -> list[tuple[int, int]]:
    """The parts of the batch run on separate threads: one per BLAS thread, no more than there
    are chunks, and only while a tap's copy of a chunk (C · nb·S elements) stays large enough
    to pay for the threads (:data:`~nnplug_layers.workers.MIN_OP_ELEMENTS`)."""
    nb = chunk_size(batch, layout, rows, itemsize)
    if channels * nb * layout.n_cols_per_image < MIN_OP_ELEMENTS:
        return [(0, batch)]
    return split_batch(batch, min(blas_threads(), -(-batch // nb)))


def gemm_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geom: Window2D, *,
                 keep: Literal["columns", "input", "none"]) -> tuple[np.ndarray, GemmCache | None]:
    """y = W · cols + b: (F, K) @ (K, nb·S) per chunk (K = C·kh·kw), back to (N, F, Ho, Wo).

    ``keep`` says what the cache holds for backward: every chunk's columns, the input (backward
    rebuilds the columns in scratch: cheaper than faulting in fresh pages to keep them, even
    for a batch that is a single chunk) or nothing (inference).
    """
    layout = gemm_layout(geom)
    n, k, itemsize = x.shape[0], w[0].size, x.dtype.itemsize
    w2 = layout.weight_matrix(w)  # (F, K) in the columns' row order
    parts = batch_parts(n, layout, x.shape[1], k, itemsize)
    keep_columns = keep == "columns"
    # batch_inner's products are (F, Ho, Wo, m): y laid out so, they are copied without a transpose.
    y = images_like(layout.mode == "batch_inner", (n, w2.shape[0], *geom.out_hw), x.dtype)
    kept = run_parts(lambda start, stop: _forward_chunks(
        x[start:stop], w2, b, layout, y[start:stop], keep_columns, start), parts)
    if keep == "none":
        return y, None
    columns = {first: cols for part in kept for first, cols in part.items()} if keep_columns else None
    return y, GemmCache(layout, x, tuple(parts), columns)


def _forward_chunks(x: np.ndarray, w2: np.ndarray, b: np.ndarray | None, layout: ColumnLayout,
                    y: np.ndarray, keep_columns: bool, offset: int) -> dict[int, np.ndarray]:
    """y (n, F, Ho, Wo) of images x (n, C, H, W), a chunk at a time; returns the columns of
    each chunk by its first image (counted from ``offset``) when ``keep_columns``."""
    (n, c), (f, k), per_image = x.shape[:2], w2.shape, layout.n_cols_per_image
    nb = chunk_size(n, layout, k, x.dtype.itemsize)
    kept = {}
    for n0 in range(0, n, nb):
        m = min(nb, n - n0)
        images = fill_images(x[n0:n0 + m], layout, layout.image_buffer(c, m, x.dtype))
        span = m * per_image
        out = np.empty(k * span, x.dtype) if keep_columns else workspace("conv columns", k * span, x.dtype)
        cols = im2col(images, layout, c, m, out)  # (K, m·S)
        y2 = np.matmul(w2, cols, out=workspace("conv products", f * span, x.dtype).reshape(f, span))  # (F, m·S)
        if b is not None:  # on the contiguous product: ~3x cheaper than fused into the transpose
            y2 += b[:, None]
        y[n0:n0 + m] = layout.outputs(y2, m)
        if keep_columns:
            kept[offset + n0] = cols
    return kept


def gemm_backward(w: np.ndarray, cache: GemmCache, dy: np.ndarray, *, input_grad: bool = True
                  ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """∂L/∂w = δ · colsᵀ and ∂L/∂x = col2im(Wᵀ · δ) (None unless ``input_grad``), one BLAS
    product each per chunk, over the parts forward used; the parts' ∂L/∂w are summed in a
    fixed order. ∂L/∂b = Σ δ."""
    x, columns, layout = cache.x, cache.columns, cache.layout
    w2 = layout.weight_matrix(w)  # (F, K) in the columns' row order
    dx = images_like(batch_innermost(x), x.shape, dy.dtype) if input_grad else None
    dws = run_parts(lambda start, stop: _backward_chunks(
        w2, x[start:stop], dy[start:stop], layout, None if dx is None else dx[start:stop], columns, start),
        cache.parts)
    dw = dws[0]
    for part in dws[1:]:
        dw += part
    return dx, layout.weight_grad(dw, w.shape), bias_grad(dy)


def _backward_chunks(w2: np.ndarray, x: np.ndarray, dy: np.ndarray, layout: ColumnLayout, dx: np.ndarray | None,
                     columns: dict[int, np.ndarray] | None, offset: int) -> np.ndarray:
    """Per chunk: the columns (kept, or rebuilt from x), dw += δ · colsᵀ, dx = col2im(Wᵀ · δ).
    Writes dx (n, C, H, W) unless it is None, and returns this part's dw (F, K)."""
    (n, c), (f, k), per_image = x.shape[:2], w2.shape, layout.n_cols_per_image
    nb, dtype = chunk_size(n, layout, k, dy.dtype.itemsize), dy.dtype

    def columns_of(n0: int, m: int) -> np.ndarray:  # (K, m·S): kept by forward, or rebuilt
        if columns is not None:
            return columns[offset + n0]
        images = fill_images(x[n0:n0 + m], layout, layout.image_buffer(c, m, dtype))
        return im2col(images, layout, c, m, workspace("conv columns", k * m * per_image, dtype))

    d2_buf = layout.grad_buffer(f, nb, dtype)  # junk columns stay 0
    dw, dw_part = np.zeros((f, k), dtype=dtype), np.empty((f, k), dtype=dtype)
    for n0 in range(0, n, nb):
        m = min(nb, n - n0)
        d2 = fill_grad(dy[n0:n0 + m], layout, d2_buf)  # (F, m·S)
        dw += np.matmul(d2, columns_of(n0, m).T, out=dw_part)
        if dx is None:
            continue
        # Wᵀ·δ may overwrite rebuilt columns: the weight gradient has read them already.
        dcols = np.matmul(w2.T, d2, out=workspace("conv columns", k * m * per_image, dtype).reshape(k, -1))
        dx_images = workspace("conv image grads", c * m * layout.image_size + layout.slack, dtype)
        dx[n0:n0 + m] = crop_images(col2im(dcols, layout, c, m, dx_images), layout, c, m)
    return dw


def gemm_input_grad_full_correlation(w: np.ndarray, dy: np.ndarray, geom: Window2D) -> np.ndarray:
    """∂L/∂x as the seed writes it, through the gemm forward itself: the padded, dilated δ
    correlated with rot180(w), filters and channels swapped. Equal to col2im's result (a
    test proves it); kept to measure against col2im, the faster in every shape measured."""
    dyd = dilate(dy, geom.stride)
    n, _, hd, wd = dyd.shape
    c, (kh, kw) = w.shape[1], geom.kernel
    full = window_geometry((hd, wd), (kh, kw), 1, (kh - 1, kw - 1), what="kernel")
    w_rot = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, F, kh, kw)
    dfull, _ = gemm_forward(dyd, w_rot, None, full, keep="none")  # (N, C, Hd + kh - 1, Wd + kw - 1)
    hp, wp = geom.padded_hw
    dxp = np.zeros((n, c, hp, wp), dtype=dy.dtype)
    dxp[:, :, :hd + kh - 1, :wd + kw - 1] = dfull
    return np.ascontiguousarray(geom.crop(dxp))


# -- auto: which engine runs -----------------------------------------------------------------

#: auto runs gemm unless its column buffer would exceed this many bytes.
GEMM_BUFFER_LIMIT = 2 * 1024**3


def columns_nbytes(x_shape: tuple[int, ...], geom: Window2D, itemsize: int) -> int:
    """Bytes of the gemm engine's columns (C·kh·kw, N·S) of a whole input (N, C, H, W)."""
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
