"""im2col and col2im over a chunk of a few images: the column layout of conv2d's gemm engine.

A chunk of ``m`` images is first copied, zero-padded and channels first, into a buffer
``xc`` of shape (C, m·Hp·Wp + slack). Its columns are (C, kh, kw, m·S): rows are (channel,
tap), so one (F, C·kh·kw) @ (C·kh·kw, m·S) product is a whole correlation, and each tap is
filled by one copy.

*Flat* layout (stride 1): every cell of every padded image is an output position, S = Hp·Wp,
and tap (a, b) of every image at once is the single contiguous run ``xc[:, a·Wp + b:][:m·S]``,
so im2col is kh·kw copies of C long rows and col2im kh·kw adds of them. Output positions past
row Ho or column Wo of an image are junk (their windows straddle two rows or two images):
callers drop them from outputs and feed zeros there in gradients. ``slack`` = (kh-1)·Wp + kw-1
zero cells after the last image keep the last junk windows inside the buffer.

*Strided* layout (stride > 1, or when the junk would pass :data:`FLAT_JUNK_LIMIT`): S = Ho·Wo,
no junk, and tap (a, b) is a strided view of the (C, m, Hp, Wp) images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnplug_layers.geometry import Window2D

#: The flat layout is used while its columns are at most this many times the real outputs.
FLAT_JUNK_LIMIT = 1.6


@dataclass(frozen=True)
class ColumnLayout:
    """How the columns of one image are laid out: ``rows`` × ``row_len`` output positions."""

    geom: Window2D
    flat: bool

    @classmethod
    def for_geometry(cls, geom: Window2D) -> ColumnLayout:
        (ho, wo), (hp, wp) = geom.out_hw, geom.padded_hw
        return cls(geom, flat=geom.stride == (1, 1) and hp * wp <= FLAT_JUNK_LIMIT * ho * wo)

    @property
    def rows(self) -> int:
        return self.geom.padded_hw[0] if self.flat else self.geom.out_hw[0]

    @property
    def row_len(self) -> int:
        return self.geom.padded_hw[1] if self.flat else self.geom.out_hw[1]

    @property
    def n_cols_per_image(self) -> int:
        return self.rows * self.row_len

    @property
    def image_size(self) -> int:
        """Cells of one padded image in the chunk buffer."""
        return self.geom.padded_hw[0] * self.geom.padded_hw[1]

    @property
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


def im2col(buf: np.ndarray, layout: ColumnLayout, m: int, out: np.ndarray) -> np.ndarray:
    """Columns (C·kh·kw, m·S) of the first ``m`` images of a chunk buffer, written into ``out``
    (at least that many elements); returns the filled 2-D view."""
    g, c, span = layout.geom, buf.shape[0], m * layout.n_cols_per_image
    (kh, kw), wp = g.kernel, g.padded_hw[1]
    cols = out.reshape(-1)[:c * kh * kw * span].reshape(c, kh, kw, span)
    if layout.flat:
        for _, a, b in g.taps():
            start = a * wp + b
            cols[:, a, b] = buf[:, start:start + span]
    else:
        images, ho, wo = layout.images(buf, m), *g.out_hw
        for _, a, b in g.taps():
            cols[:, a, b].reshape(c, m, ho, wo)[...] = g.tap(images, a, b)
    return cols.reshape(c * kh * kw, span)


def col2im(dcols: np.ndarray, layout: ColumnLayout, m: int, buf: np.ndarray) -> np.ndarray:
    """The transpose of :func:`im2col`: adds columns (C·kh·kw, m·S) back where each tap read
    them (overlapping windows accumulate) into a chunk buffer, which is zeroed first."""
    g, c, span = layout.geom, buf.shape[0], m * layout.n_cols_per_image
    (kh, kw), wp = g.kernel, g.padded_hw[1]
    blocks = dcols.reshape(c, kh, kw, span)
    buf[:, :m * layout.image_size + layout.slack] = 0
    if layout.flat:
        for _, a, b in g.taps():
            start = a * wp + b
            buf[:, start:start + span] += blocks[:, a, b]
    else:
        images, ho, wo = layout.images(buf, m), *g.out_hw
        for _, a, b in g.taps():
            g.tap(images, a, b)[...] += blocks[:, a, b].reshape(c, m, ho, wo)
    return buf
