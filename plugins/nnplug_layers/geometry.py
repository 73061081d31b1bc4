"""Window geometry shared by conv2d and the pooling layers: pairs, padding, output sizes,
window taps and the im2col / col2im transforms.

Conventions (as TensorFlow/Keras and PyTorch):

* ``padding="valid"`` pads nothing; an int or pair pads both sides of each axis equally.
* ``padding="same"`` gives an output of ``ceil(size / stride)`` and pads
  ``total = max((out - 1) * stride + kernel - size, 0)`` split as ``total // 2`` before and
  the rest after, so an even kernel gets its extra row/column at the bottom/right.
* out = (size + pad_before + pad_after - kernel) // stride + 1.

A *tap* ``(a, b)`` is one position inside the window: the view of the padded input holding,
for every output cell ``(i, j)``, the value at ``(i * sh + a, j * sw + b)``. Loops in the
layers run over taps (``kh * kw`` of them, few), never over batch or channels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

import nnplug

Pair = tuple[int, int]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
#: The config type of kernel sizes and strides: an int or an (h, w) pair, each >= 1.
SizeSpec = PositiveInt | tuple[PositiveInt, PositiveInt]
#: The config type of padding: an int or (h, w) pair >= 0, or "valid" / "same".
PaddingSpec = NonNegativeInt | tuple[NonNegativeInt, NonNegativeInt] | Literal["valid", "same"]


def as_pair(value: int | tuple[int, int]) -> Pair:
    """``3 -> (3, 3)``; a pair is returned as a tuple of ints."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    h, w = value
    return int(h), int(w)


def same_padding(size: int, kernel: int, stride: int) -> Pair:
    """TensorFlow's "same" padding of one axis: (before, after), the extra cell after."""
    out = -(-size // stride)  # ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class Window2D:
    """The geometry of a 2-D sliding window over an (H, W) input.

    Attributes:
        in_hw: (H, W) of the unpadded input.
        kernel: (kh, kw).
        stride: (sh, sw).
        pad_h: (top, bottom) padding.
        pad_w: (left, right) padding.
        out_hw: (Ho, Wo).
    """

    in_hw: Pair
    kernel: Pair
    stride: Pair
    pad_h: Pair
    pad_w: Pair
    out_hw: Pair

    @property
    def padded_hw(self) -> Pair:
        return self.in_hw[0] + sum(self.pad_h), self.in_hw[1] + sum(self.pad_w)

    @property
    def has_padding(self) -> bool:
        return any(self.pad_h) or any(self.pad_w)

    @property
    def n_taps(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def non_overlapping(self) -> bool:
        """Stride equal to the kernel and no padding: every input cell is in at most one window."""
        return self.stride == self.kernel and not self.has_padding

    def pad(self, x: np.ndarray, value: float = 0.0) -> np.ndarray:
        """(..., H, W) -> (..., Hp, Wp), filled with ``value``; ``x`` itself when unpadded."""
        if not self.has_padding:
            return x
        hp, wp = self.padded_hw
        out = np.full((*x.shape[:-2], hp, wp), value, dtype=x.dtype)
        out[..., self.pad_h[0]:self.pad_h[0] + self.in_hw[0],
            self.pad_w[0]:self.pad_w[0] + self.in_hw[1]] = x
        return out

    def crop(self, xp: np.ndarray) -> np.ndarray:
        """(..., Hp, Wp) -> (..., H, W): the view of the unpadded cells."""
        (top, _), (left, _) = self.pad_h, self.pad_w
        return xp[..., top:top + self.in_hw[0], left:left + self.in_hw[1]]

    def tap(self, xp: np.ndarray, a: int, b: int) -> np.ndarray:
        """The view (..., Ho, Wo) of padded ``xp`` at window position (a, b); no copy."""
        (ho, wo), (sh, sw) = self.out_hw, self.stride
        return xp[..., a:a + (ho - 1) * sh + 1:sh, b:b + (wo - 1) * sw + 1:sw]

    def taps(self) -> Iterator[tuple[int, int, int]]:
        """(k, a, b) for every window position, k = a * kw + b (row-major window order)."""
        kh, kw = self.kernel
        for a in range(kh):
            for b in range(kw):
                yield a * kw + b, a, b

    def valid_taps(self, a: int, b: int) -> np.ndarray | None:
        """(Ho, Wo) mask: where tap (a, b) lands on a real (unpadded) cell; None if everywhere."""
        if not self.has_padding:
            return None
        (ho, wo), (sh, sw) = self.out_hw, self.stride
        rows = np.arange(ho) * sh + a - self.pad_h[0]
        cols = np.arange(wo) * sw + b - self.pad_w[0]
        return ((rows >= 0) & (rows < self.in_hw[0]))[:, None] & ((cols >= 0) & (cols < self.in_hw[1]))[None, :]

    def real_counts(self) -> np.ndarray:
        """(Ho, Wo): how many real (unpadded) cells each window covers."""
        (ho, wo), (sh, sw), (kh, kw) = self.out_hw, self.stride, self.kernel
        top = np.arange(ho) * sh - self.pad_h[0]
        left = np.arange(wo) * sw - self.pad_w[0]
        rows = np.minimum(top + kh, self.in_hw[0]) - np.maximum(top, 0)
        cols = np.minimum(left + kw, self.in_hw[1]) - np.maximum(left, 0)
        return rows[:, None] * cols[None, :]


def window_geometry(in_hw: Pair, kernel: int | Pair, stride: int | Pair,
                    padding: int | Pair | str, *, what: str) -> Window2D:
    """Resolve the padding and output size of a window over ``in_hw``.

    Raises:
        ShapeError: when the kernel is larger than the padded input (``what`` names the window).
    """
    kh, kw = as_pair(kernel)
    sh, sw = as_pair(stride)
    h, w = in_hw
    if padding == "same":
        pad_h, pad_w = same_padding(h, kh, sh), same_padding(w, kw, sw)
    elif padding == "valid":
        pad_h, pad_w = (0, 0), (0, 0)
    else:
        ph, pw = as_pair(padding)  # type: ignore[arg-type]
        pad_h, pad_w = (ph, ph), (pw, pw)
    hp, wp = h + sum(pad_h), w + sum(pad_w)
    if kh > hp or kw > wp:
        raise nnplug.ShapeError(
            f"{what} {(kh, kw)} is larger than the padded input {(hp, wp)} "
            f"(input {(h, w)}, padding {padding!r})"
        )
    out = ((hp - kh) // sh + 1, (wp - kw) // sw + 1)
    return Window2D((h, w), (kh, kw), (sh, sw), pad_h, pad_w, out)


# -- im2col / col2im ---------------------------------------------------------------------
#
# Columns are laid out (C, kh, kw, N, Ho, R): rows are (channel, tap), the columns (image,
# output row, output column), so one (F, K) @ (K, N·Ho·R) product is a whole correlation and
# each tap is filled by one copy of a (C, N, ...) block. With stride 1 the input is padded
# with one spare row and seen flat per image: tap (a, b) is then the *contiguous* run
# starting at a * Wp + b, and every output row carries R = Wp columns of which the last
# kw - 1 are junk (they straddle two rows). The junk costs (Wp / Wo - 1) extra work but turns
# thousands of short strided copies into a few long contiguous ones; the callers drop the
# junk columns of outputs and feed zeros in the junk columns of gradients.


@dataclass(frozen=True)
class ColumnLayout:
    """How im2col laid out its columns: ``row_len`` columns per output row (Wo, or Wp flat)."""

    geom: Window2D
    flat: bool

    @property
    def row_len(self) -> int:
        return self.geom.padded_hw[1] if self.flat else self.geom.out_hw[1]

    @property
    def n_cols_per_image(self) -> int:
        return self.geom.out_hw[0] * self.row_len


def padded_channels_first(x: np.ndarray, layout: ColumnLayout) -> np.ndarray:
    """(N, C, H, W) -> zero-padded (C, N, Hp + spare, Wp), one copy; spare = 1 row if flat."""
    g = layout.geom
    n, c = x.shape[:2]
    hp, wp = g.padded_hw
    xp = np.zeros((c, n, hp + int(layout.flat), wp), dtype=x.dtype)
    xp[:, :, g.pad_h[0]:g.pad_h[0] + g.in_hw[0], g.pad_w[0]:g.pad_w[0] + g.in_hw[1]] = x.transpose(1, 0, 2, 3)
    return xp


def _channel_first(xp: np.ndarray, batch_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """Views of a padded array as (C, N, Hp(+1), Wp) and, flattened, (C, N, (Hp(+1))·Wp).

    Both are views (the last two axes stay contiguous), so writes go through to ``xp``."""
    if batch_first:
        n, c = xp.shape[:2]
        return xp.transpose(1, 0, 2, 3), xp.reshape(n, c, -1).transpose(1, 0, 2)
    c, n = xp.shape[:2]
    return xp, xp.reshape(c, n, -1)


def _gather_taps(xp4: np.ndarray, xp_flat: np.ndarray, layout: ColumnLayout, cols: np.ndarray) -> None:
    """cols[c, a, b] = the input seen by window position (a, b): the im2col loop over kh·kw taps.

    ``cols`` is (C, kh, kw, N, Ho·R); with the flat layout each tap is one contiguous run of the
    flattened padded image (the junk columns between rows included)."""
    g = layout.geom
    if layout.flat:
        wp, span = xp4.shape[3], g.out_hw[0] * xp4.shape[3]
        for _, a, b in g.taps():
            start = a * wp + b
            cols[:, a, b] = xp_flat[:, :, start:start + span]
    else:
        view = cols.reshape(*cols.shape[:4], g.out_hw[0], layout.row_len)
        for _, a, b in g.taps():
            view[:, a, b] = g.tap(xp4, a, b)


def _scatter_taps(blocks: np.ndarray, dxp4: np.ndarray, dxp_flat: np.ndarray, layout: ColumnLayout) -> None:
    """The transpose of :func:`_gather_taps`: adds each tap's block back where it was read
    (overlapping windows accumulate)."""
    g = layout.geom
    if layout.flat:
        wp, span = dxp4.shape[3], g.out_hw[0] * dxp4.shape[3]
        for _, a, b in g.taps():
            start = a * wp + b
            dxp_flat[:, :, start:start + span] += blocks[:, a, b]
    else:
        c, n = dxp4.shape[:2]
        for _, a, b in g.taps():
            g.tap(dxp4, a, b)[...] += blocks[:, a, b].reshape(c, n, g.out_hw[0], layout.row_len)


def im2col(xp: np.ndarray, layout: ColumnLayout) -> np.ndarray:
    """Padded (C, N, Hp(+1), Wp) -> columns (C·kh·kw, N·Ho·R), one contiguous buffer."""
    c, n = xp.shape[:2]
    (kh, kw) = layout.geom.kernel
    cols = np.empty((c, kh, kw, n, layout.n_cols_per_image), dtype=xp.dtype)
    _gather_taps(*_channel_first(xp, batch_first=False), layout, cols)
    return cols.reshape(c * kh * kw, n * layout.n_cols_per_image)


def col2im(dcols: np.ndarray, layout: ColumnLayout, channels: int, batch: int) -> np.ndarray:
    """The transpose of :func:`im2col`: columns (C·kh·kw, N·Ho·R) -> (N, C, H, W), the
    padding cropped away."""
    g = layout.geom
    (kh, kw), (hp, wp) = g.kernel, g.padded_hw
    blocks = dcols.reshape(channels, kh, kw, batch, layout.n_cols_per_image)
    dxp = np.zeros((channels, batch, hp + int(layout.flat), wp), dtype=dcols.dtype)
    _scatter_taps(blocks, *_channel_first(dxp, batch_first=False), layout)
    cropped = g.crop(dxp[:, :, :hp])  # (C, N, H, W)
    return np.ascontiguousarray(cropped.transpose(1, 0, 2, 3))


# Chunked variants: the batch-first padded input (N, C, Hp(+1), Wp) is cut into chunks of a
# few images whose columns (C·kh·kw, nb·Ho·R) fit in cache, so im2col's writes are still
# cached when the GEMM reads them, and the buffers are reused across chunks.


def padded_batch_first(x: np.ndarray, layout: ColumnLayout) -> np.ndarray:
    """(N, C, H, W) -> zero-padded (N, C, Hp + spare, Wp), no transpose; spare = 1 row if flat."""
    g = layout.geom
    hp, wp = g.padded_hw
    xp = np.zeros((*x.shape[:2], hp + int(layout.flat), wp), dtype=x.dtype)
    xp[:, :, g.pad_h[0]:g.pad_h[0] + g.in_hw[0], g.pad_w[0]:g.pad_w[0] + g.in_hw[1]] = x
    return xp


def im2col_chunk(xp: np.ndarray, layout: ColumnLayout, out: np.ndarray) -> np.ndarray:
    """Batch-first padded (nb, C, Hp(+1), Wp) -> columns (C·kh·kw, nb·Ho·R) written into ``out``
    (a buffer of at least that many elements); returns the filled 2-D view."""
    nb, c = xp.shape[:2]
    (kh, kw) = layout.geom.kernel
    cols = out.reshape(-1)[:c * kh * kw * nb * layout.n_cols_per_image].reshape(
        c, kh, kw, nb, layout.n_cols_per_image)
    _gather_taps(*_channel_first(xp, batch_first=True), layout, cols)
    return cols.reshape(c * kh * kw, nb * layout.n_cols_per_image)


def col2im_chunk(dcols: np.ndarray, layout: ColumnLayout, dxp: np.ndarray) -> None:
    """The transpose of :func:`im2col_chunk`: adds columns (C·kh·kw, nb·Ho·R) into the
    batch-first padded gradient ``dxp`` (nb, C, Hp(+1), Wp), which the caller zeroed."""
    nb, c = dxp.shape[:2]
    (kh, kw) = layout.geom.kernel
    blocks = dcols.reshape(c, kh, kw, nb, layout.n_cols_per_image)
    _scatter_taps(blocks, *_channel_first(dxp, batch_first=True), layout)


def to_columns_layout(y: np.ndarray, layout: ColumnLayout) -> np.ndarray:
    """(N, F, Ho, Wo) -> (F, N·Ho·R), zeros in the junk columns (a gradient fed to the GEMMs)."""
    n, f, ho, wo = y.shape
    if layout.row_len == wo:
        return np.ascontiguousarray(y.transpose(1, 0, 2, 3)).reshape(f, -1)
    out = np.empty((f, n, ho, layout.row_len), dtype=y.dtype)
    out[..., :wo] = y.transpose(1, 0, 2, 3)
    out[..., wo:] = 0
    return out.reshape(f, -1)


def from_columns_layout(y: np.ndarray, layout: ColumnLayout, batch: int) -> np.ndarray:
    """(F, N·Ho·R) -> (N, F, Ho, Wo), dropping the junk columns; one copy."""
    ho, wo = layout.geom.out_hw
    view = y.reshape(y.shape[0], batch, ho, layout.row_len)[..., :wo]
    return np.ascontiguousarray(view.transpose(1, 0, 2, 3))


def index_dtype(n_taps: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds a window index in [0, n_taps)."""
    return np.dtype(np.min_scalar_type(max(n_taps - 1, 0)))
