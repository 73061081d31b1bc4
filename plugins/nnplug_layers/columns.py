"""im2col and col2im over a chunk of a few images: the column layout of conv2d's gemm engine.

A chunk of ``m`` images is first copied, zero-padded and channels first, into a buffer
``xc`` of shape (C, m·Hp·Wp + slack). Its columns are (C, kh, kw, m·S): rows are (channel,
tap), so one (F, C·kh·kw) @ (C·kh·kw, m·S) product is a whole correlation, and each tap is
filled by one copy.

Three layouts, the first whose junk stays within :data:`FLAT_JUNK_LIMIT` (stride 1 only for
the first two):

* *chunk*: every cell of every padded image is an output position, S = Hp·Wp, and tap (a, b)
  of every image at once is the single contiguous run ``xc[:, a·Wp + b:][:m·S]``, so im2col
  is kh·kw copies of C long rows and col2im kh·kw adds of them.
* *rows*: the first Ho rows of each padded image are output rows, S = Ho·Wp: per tap, one
  run of Ho·Wp cells per image (less junk than *chunk* when Ho is much smaller than Hp).
* *strided*: S = Ho·Wo, no junk, and tap (a, b) is a strided view of the (C, m, Hp, Wp)
  images (short inner loops: the slowest copies, used for strides and tiny images).

In the first two, output positions past row Ho or column Wo of an image are junk (their
windows straddle two rows or two images): callers drop them from outputs and feed zeros there
in gradients. ``slack`` = (kh-1)·Wp + kw-1 zero cells after the last image keep the last junk
windows inside the buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from nnplug_layers.geometry import Window2D

#: The flat layout is used while its columns are at most this many times the real outputs.
FLAT_JUNK_LIMIT = 1.6


Mode = Literal["chunk", "rows", "strided"]


@dataclass(frozen=True)
class ColumnLayout:
    """How the columns of one image are laid out: ``rows`` × ``row_len`` output positions.
    (Derived sizes are cached: they are read in every tap loop.)"""

    geom: Window2D
    mode: Mode

    @classmethod
    def for_geometry(cls, geom: Window2D) -> ColumnLayout:
        (ho, wo), (hp, wp) = geom.out_hw, geom.padded_hw
        if geom.stride == (1, 1) and hp * wp <= FLAT_JUNK_LIMIT * ho * wo:
            return cls(geom, "chunk")
        if geom.stride == (1, 1) and wp <= FLAT_JUNK_LIMIT * wo:
            return cls(geom, "rows")
        return cls(geom, "strided")

    @cached_property
    def flat(self) -> bool:
        """Taps are contiguous runs of the padded images (the chunk and rows layouts)."""
        return self.mode != "strided"

    @cached_property
    def rows(self) -> int:
        return self.geom.padded_hw[0] if self.mode == "chunk" else self.geom.out_hw[0]

    @cached_property
    def row_len(self) -> int:
        return self.geom.padded_hw[1] if self.flat else self.geom.out_hw[1]

    @cached_property
    def n_cols_per_image(self) -> int:
        return self.rows * self.row_len

    @cached_property
    def image_size(self) -> int:
        """Cells of one padded image in the chunk buffer."""
        return self.geom.padded_hw[0] * self.geom.padded_hw[1]

    @cached_property
    def slack(self) -> int:
        (kh, kw), wp = self.geom.kernel, self.geom.padded_hw[1]
        return (kh - 1) * wp + kw - 1 if self.flat else 0

    def image_buffer(self, channels: int, images: int, dtype: np.dtype) -> np.ndarray:
        """A zeroed (C, images·Hp·Wp + slack) buffer for :func:`fill_images`: its padding cells
        are never written, so they stay zero from chunk to chunk."""
        return np.zeros((channels, images * self.image_size + self.slack), dtype=dtype)

    def images(self, buf: np.ndarray, m: int) -> np.ndarray:
        """The (C, m, Hp, Wp) view of the first ``m`` padded images of a chunk buffer."""
        return buf[:, :m * self.image_size].reshape(buf.shape[0], m, *self.geom.padded_hw)

    def outputs(self, y2: np.ndarray, m: int) -> np.ndarray:
        """(F, m·S) product -> the (m, F, Ho, Wo) view of its real outputs (junk dropped)."""
        ho, wo = self.geom.out_hw
        return y2.reshape(y2.shape[0], m, self.rows, self.row_len)[:, :, :ho, :wo].transpose(1, 0, 2, 3)

    def grad_buffer(self, filters: int, images: int, dtype: np.dtype) -> np.ndarray:
        """A zeroed (F, images, rows, row_len) buffer for :func:`fill_grad`; junk stays zero."""
        return np.zeros((filters, images, self.rows, self.row_len), dtype=dtype)


def fill_images(x: np.ndarray, layout: ColumnLayout, buf: np.ndarray) -> np.ndarray:
    """Copy images x (m, C, H, W) into a chunk buffer, inside their padding; returns the buffer."""
    g = layout.geom
    (top, _), (left, _) = g.pad_h, g.pad_w
    layout.images(buf, x.shape[0])[:, :, top:top + g.in_hw[0], left:left + g.in_hw[1]] = x.transpose(1, 0, 2, 3)
    return buf


def crop_images(buf: np.ndarray, layout: ColumnLayout, m: int) -> np.ndarray:
    """The (m, C, H, W) view of the real cells of the first ``m`` images of a chunk buffer."""
    return layout.geom.crop(layout.images(buf, m)).transpose(1, 0, 2, 3)


def fill_grad(dy: np.ndarray, layout: ColumnLayout, buf: np.ndarray) -> np.ndarray:
    """δ (m, F, Ho, Wo) into the (F, m·S) column layout of a :meth:`~ColumnLayout.grad_buffer`."""
    m, f, ho, wo = dy.shape
    buf[:, :m, :ho, :wo] = dy.transpose(1, 0, 2, 3)
    return buf[:, :m].reshape(f, m * layout.n_cols_per_image)


def _tap_view(buf: np.ndarray, layout: ColumnLayout, m: int, a: int, b: int) -> np.ndarray:
    """What tap (a, b) sees of the first ``m`` images of a chunk buffer, shaped as one block of
    the columns: (C, m·S) in the chunk layout, (C, m, Ho·Wp) in rows, (C, m, Ho, Wo) in strided."""
    g = layout.geom
    if layout.mode == "strided":
        return g.tap(layout.images(buf, m), a, b)
    start, size = a * g.padded_hw[1] + b, layout.image_size
    if layout.mode == "chunk":
        return buf[:, start:start + m * size]
    # Each image's run of Ho·Wp cells; the last image's ends in the slack.
    return buf[:, start:start + m * size].reshape(buf.shape[0], m, size)[:, :, :layout.n_cols_per_image]


def im2col(buf: np.ndarray, layout: ColumnLayout, m: int, out: np.ndarray) -> np.ndarray:
    """Columns (C·kh·kw, m·S) of the first ``m`` images of a chunk buffer, written into ``out``
    (at least that many elements); returns the filled 2-D view."""
    g, c, span = layout.geom, buf.shape[0], m * layout.n_cols_per_image
    (kh, kw) = g.kernel
    cols = out.reshape(-1)[:c * kh * kw * span].reshape(c, kh, kw, span)
    for _, a, b in g.taps():
        view = _tap_view(buf, layout, m, a, b)
        cols[:, a, b].reshape(view.shape)[...] = view
    return cols.reshape(c * kh * kw, span)


def col2im(dcols: np.ndarray, layout: ColumnLayout, m: int, buf: np.ndarray) -> np.ndarray:
    """The transpose of :func:`im2col`: adds columns (C·kh·kw, m·S) back where each tap read
    them (overlapping windows accumulate) into a chunk buffer, which is zeroed first."""
    g, c, span = layout.geom, buf.shape[0], m * layout.n_cols_per_image
    (kh, kw) = g.kernel
    blocks = dcols.reshape(c, kh, kw, span)
    buf[:, :m * layout.image_size + layout.slack] = 0
    for _, a, b in g.taps():
        view = _tap_view(buf, layout, m, a, b)
        view += blocks[:, a, b].reshape(view.shape)
    return buf
