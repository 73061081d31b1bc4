"""im2col and col2im over a chunk of a few images: the column layout of conv2d's gemm engine.

A chunk of ``m`` images is first copied, zero-padded and channels first, into one flat buffer,
and the columns hold one row per (channel, tap) and one column per output position, so one
(F, C·kh·kw) @ (C·kh·kw, m·S) product is a whole correlation. Three layouts:

* *chunk* (stride 1, images of at least :data:`CHUNK_MIN_OUTPUTS` outputs, used while S is
  at most :data:`CHUNK_JUNK_LIMIT` times the real outputs): channel c of image n starts at
  cell (c·m + n)·Hp·Wp of the buffer, and every cell is an output position (S = Hp·Wp per
  image), so tap (a, b) of every channel of every image at once is the single contiguous run
  starting at cell a·Wp + b. im2col is one numpy copy from a strided (kh, kw, run) view of
  those runs, and col2im one sum over the taps of a strided view of the columns: numpy walks
  the runs, long and contiguous, and Python calls it once instead of kh·kw times. Output
  positions past row Ho or column Wo of an image are junk (their windows straddle two rows,
  images or channels): callers drop them from outputs and feed zeros there in gradients;
  ``slack`` = (kh-1)·Wp + kw-1 zero cells after the last image keep the last junk windows
  inside.
* *batch_inner* (small images, where *chunk* would be mostly junk; any stride whose windows
  cover every cell): the buffer is (C, Hp, Wp, m), the batch innermost, and the columns
  (S = Ho·Wo, no junk) are ordered (Ho, Wo, m). Tap (a, b) of a channel is then Ho runs of
  Wo·m contiguous cells at stride 1, m at larger strides: long inner loops even on 4×4
  images, where the other layouts' loops are a few cells long. On the digits CNN's second
  convolution (4×4, padded to 6×6) and LeNet's (12×12, k5) forward + backward ran 35-40%
  faster than in *chunk*; on 28×28 images, 10-20% slower. Its outputs are returned with
  the same memory order, (F, Ho, Wo, N) behind the (N, F, Ho, Wo) shape, and the layers
  after it keep that order (``geometry.images_like``), so the next convolution fills its
  buffer without a transpose.
* *strided*: S = Ho·Wo, no junk, and tap (a, b) is a strided view of the (C, m, Hp, Wp)
  images: short inner loops, but nothing copied that no window reads (a 1×1 kernel at
  stride 2 ran twice as fast as in *batch_inner*).

Rows are ordered tap-major, (kh, kw, C), in the first two layouts (one contiguous block of C
rows per tap), channel-major, (C, kh, kw), in *strided*.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import as_strided

from nnplug_layers.geometry import Window2D
from nnplug_layers.scratch import scratch

#: The *chunk* layout is used while its columns are at most this many times the real outputs
#: (the digits CNN's second convolution, 4×4 padded to 6×6, 2.25×, ran 35% slower in *chunk*
#: than in *batch_inner*)...
CHUNK_JUNK_LIMIT = 1.6
#: ...and images have at least this many outputs: forward + backward (16 channels, k3, pad 1)
#: ran 18% and 7% faster in *batch_inner* on 10×10 and 12×12 outputs, 7% slower on 16×16.
CHUNK_MIN_OUTPUTS = 14 * 14

Mode = Literal["chunk", "strided", "batch_inner"]


@dataclass(frozen=True)
class ColumnLayout:
    """How the columns of one image are laid out: ``rows`` × ``row_len`` output positions.
    (Derived sizes are cached: they are read in every tap loop.)"""

    geom: Window2D
    mode: Mode

    @classmethod
    def for_geometry(cls, geom: Window2D) -> ColumnLayout:
        """The layout for a geometry (memoised: the cached sizes then live across calls)."""
        return _layout_for(geom, CHUNK_JUNK_LIMIT, CHUNK_MIN_OUTPUTS)

    @classmethod
    def _choose(cls, geom: Window2D) -> ColumnLayout:
        (ho, wo), (hp, wp), (kh, kw), (sh, sw) = geom.out_hw, geom.padded_hw, geom.kernel, geom.stride
        if (sh, sw) == (1, 1) and hp * wp <= CHUNK_JUNK_LIMIT * ho * wo and ho * wo >= CHUNK_MIN_OUTPUTS:
            return cls(geom, "chunk")
        if kh >= sh and kw >= sw:  # the windows read every cell that is copied
            return cls(geom, "batch_inner")
        return cls(geom, "strided")

    @cached_property
    def tap_major(self) -> bool:
        """Rows ordered (kh, kw, C): one contiguous block of C rows per tap."""
        return self.mode in ("chunk", "batch_inner")

    @cached_property
    def flat(self) -> bool:
        """Taps are contiguous runs of the padded images (the chunk layout)."""
        return self.mode == "chunk"

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
        """Cells of one channel of one padded image in the chunk buffer."""
        return self.geom.padded_hw[0] * self.geom.padded_hw[1]

    @cached_property
    def slack(self) -> int:
        (kh, kw), wp = self.geom.kernel, self.geom.padded_hw[1]
        return (kh - 1) * wp + kw - 1 if self.flat else 0

    # -- buffers ---------------------------------------------------------------------------

    def image_buffer(self, channels: int, images: int, dtype: np.dtype) -> np.ndarray:
        """The calling thread's flat buffer for exactly ``channels`` × ``images`` padded
        images (:mod:`~nnplug_layers.scratch`, reused across calls). Its padding and slack
        cells are zero: it is keyed by everything that places them, and
        :func:`fill_images` writes only the real cells."""
        return scratch(("conv images", self, channels, images),
                       channels * images * self.image_size + self.slack, dtype, zeroed=True)

    def images(self, buf: np.ndarray, channels: int, m: int) -> np.ndarray:
        """The (C, m, Hp, Wp) view of the first ``m`` padded images of a chunk buffer (laid
        out (C, Hp, Wp, m) in memory in the *batch_inner* layout)."""
        cells = buf[:channels * m * self.image_size]
        if self.mode == "batch_inner":
            return cells.reshape(channels, *self.geom.padded_hw, m).transpose(0, 3, 1, 2)
        return cells.reshape(channels, m, *self.geom.padded_hw)

    def grad_buffer(self, filters: int, images: int, dtype: np.dtype) -> np.ndarray:
        """The calling thread's (F, images, rows, row_len) buffer for :func:`fill_grad`
        (reused across calls): its junk cells are zero and are never written."""
        return scratch(("conv grad", self, filters, images), (filters, images, self.rows, self.row_len),
                       dtype, zeroed=True)

    # -- weights in the row order of the columns -------------------------------------------

    def weight_matrix(self, w: np.ndarray) -> np.ndarray:
        """w (F, C, kh, kw) as the (F, K) matrix whose columns follow the rows of the columns."""
        if self.tap_major:
            return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)
        return w.reshape(w.shape[0], -1)

    def weight_grad(self, dw2: np.ndarray, w_shape: tuple[int, ...]) -> np.ndarray:
        """The (F, K) gradient of :meth:`weight_matrix` back in w's shape (F, C, kh, kw)."""
        if self.tap_major:
            f, c, kh, kw = w_shape
            return np.ascontiguousarray(dw2.reshape(f, kh, kw, c).transpose(0, 3, 1, 2))
        return dw2.reshape(w_shape)

    def outputs(self, y2: np.ndarray, m: int) -> np.ndarray:
        """(F, m·S) product -> the (m, F, Ho, Wo) view of its real outputs (junk dropped)."""
        ho, wo = self.geom.out_hw
        if self.mode == "batch_inner":
            return y2.reshape(y2.shape[0], ho, wo, m).transpose(3, 0, 1, 2)
        return y2.reshape(y2.shape[0], m, self.rows, self.row_len)[:, :, :ho, :wo].transpose(1, 0, 2, 3)


@lru_cache(maxsize=512)
def _layout_for(geom: Window2D, *limits: float) -> ColumnLayout:  # the limits key the cache
    return ColumnLayout._choose(geom)


def fill_images(x: np.ndarray, layout: ColumnLayout, buf: np.ndarray) -> np.ndarray:
    """Copy images x (m, C, H, W) into the real cells of a chunk buffer laid out for exactly
    m images (:meth:`~ColumnLayout.image_buffer`); its padding cells are left as they are
    (zero). Returns the buffer."""
    g, (m, c) = layout.geom, x.shape[:2]
    (top, _), (left, _) = g.pad_h, g.pad_w
    layout.images(buf, c, m)[:, :, top:top + g.in_hw[0], left:left + g.in_hw[1]] = x.transpose(1, 0, 2, 3)
    return buf


def crop_images(buf: np.ndarray, layout: ColumnLayout, channels: int, m: int) -> np.ndarray:
    """The (m, C, H, W) view of the real cells of the first ``m`` images of a chunk buffer."""
    return layout.geom.crop(layout.images(buf, channels, m)).transpose(1, 0, 2, 3)


def fill_grad(dy: np.ndarray, layout: ColumnLayout, buf: np.ndarray) -> np.ndarray:
    """δ (m, F, Ho, Wo) into the (F, m·S) column layout of a :meth:`~ColumnLayout.grad_buffer`."""
    m, f, ho, wo = dy.shape
    if layout.mode == "batch_inner":  # (F, Ho, Wo, m), no junk: any prefix of the buffer will do
        d2 = buf.reshape(-1)[:f * ho * wo * m].reshape(f, ho, wo, m)
        d2[...] = dy.transpose(1, 2, 3, 0)
        return d2.reshape(f, ho * wo * m)
    buf[:, :m, :ho, :wo] = dy.transpose(1, 0, 2, 3)
    return buf[:, :m].reshape(f, m * layout.n_cols_per_image)


def _tap_views(buf: np.ndarray, layout: ColumnLayout, channels: int, m: int, cols: np.ndarray
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(what tap k sees of the chunk buffer, tap k's block of the columns), same shapes, for
    every tap in window order; ``cols`` is (K, m·S) in the layout's row order. (The *chunk*
    layout walks its taps in one strided view instead, :func:`_runs` and :func:`_runs_back`,
    as *batch_inner*'s im2col does, :func:`_batch_inner_taps`: one numpy call, not kh·kw.)"""
    g, span = layout.geom, m * layout.n_cols_per_image
    kh, kw = g.kernel
    if layout.mode == "batch_inner":  # tap-major; per channel and output row, one run of Wo·m cells
        (ho, wo), (sh, sw) = g.out_hw, g.stride
        images = layout.images(buf, channels, m).transpose(0, 2, 3, 1)  # (C, Hp, Wp, m): its memory order
        blocks6 = cols.reshape(kh, kw, channels, ho, wo, m)
        return [(images[:, a:a + (ho - 1) * sh + 1:sh, b:b + (wo - 1) * sw + 1:sw], blocks6[a, b])
                for _, a, b in g.taps()]
    blocks = cols.reshape(channels, kh, kw, span)
    images, (ho, wo) = layout.images(buf, channels, m), g.out_hw
    return [(g.tap(images, a, b), blocks[:, a, b].reshape(channels, m, ho, wo)) for _, a, b in g.taps()]


def _runs(buf: np.ndarray, layout: ColumnLayout, run: int) -> np.ndarray:
    """*chunk* layout: the read-only (kh, kw, run) view of a chunk buffer whose [a, b] is tap
    (a, b)'s run ``buf[a·Wp + b :][:run]``."""
    (kh, kw), wp, size = layout.geom.kernel, layout.geom.padded_hw[1], buf.itemsize
    return as_strided(buf, shape=(kh, kw, run), strides=(wp * size, size, size), writeable=False)


def _batch_inner_taps(buf: np.ndarray, layout: ColumnLayout, channels: int, m: int) -> np.ndarray:
    """*batch_inner* layout: the read-only (kh, kw, C, Ho, Wo, m) view of a chunk buffer whose
    [a, b] is what tap (a, b) reads, in the order of the columns' rows and columns."""
    g, size = layout.geom, buf.itemsize
    (hp, wp), (sh, sw) = g.padded_hw, g.stride
    row, cell = wp * m * size, m * size
    return as_strided(buf, shape=(*g.kernel, channels, *g.out_hw, m),
                      strides=(row, cell, hp * row, sh * row, sw * cell, size), writeable=False)


def _runs_back(dcols: np.ndarray, layout: ColumnLayout, run: int) -> np.ndarray:
    """*chunk* layout: the read-only (kh, kw, run) view of columns (K, m·S), K = kh·kw·C, whose
    [a, b, z] is what tap (a, b) adds to cell z of the chunk buffer, ``dcols[a, b][z - a·Wp - b]``
    with the blocks flattened. Cells a tap does not reach (z < a·Wp + b) read the previous
    block's last ``a·Wp + b`` columns instead: the trailing junk of its last image, which is at
    least :attr:`~ColumnLayout.slack` long and zero whenever δ's junk columns are."""
    (kh, kw), wp, size = layout.geom.kernel, layout.geom.padded_hw[1], dcols.itemsize
    return as_strided(dcols, shape=(kh, kw, run), strides=((kw * run - wp) * size, (run - 1) * size, size),
                      writeable=False)


def im2col(buf: np.ndarray, layout: ColumnLayout, channels: int, m: int, out: np.ndarray) -> np.ndarray:
    """Columns (K, m·S) of the first ``m`` images of a chunk buffer, in the layout's row
    order, written into ``out`` (at least that many elements); returns the filled 2-D view."""
    span = m * layout.n_cols_per_image
    cols = out.reshape(-1)[:channels * layout.geom.n_taps * span].reshape(-1, span)
    if layout.flat:  # every tap in one call: numpy's loop over the taps instead of Python's
        (kh, kw), run = layout.geom.kernel, channels * span
        np.copyto(cols.reshape(kh, kw, run), _runs(buf, layout, run))
        return cols
    if layout.mode == "batch_inner":  # likewise, with runs of Wo·m cells (m at strides > 1)
        seen = _batch_inner_taps(buf, layout, channels, m)
        np.copyto(cols.reshape(seen.shape), seen)
        return cols
    for seen, block in _tap_views(buf, layout, channels, m, cols):
        block[...] = seen
    return cols


def col2im(dcols: np.ndarray, layout: ColumnLayout, channels: int, m: int, buf: np.ndarray) -> np.ndarray:
    """The transpose of :func:`im2col`: adds columns (K, m·S) back where each tap read them
    (overlapping windows accumulate) into a chunk buffer. In the *chunk* layout the columns
    must be C-contiguous with their junk columns zero (as Wᵀ·δ's are: :func:`fill_grad` leaves
    δ's junk zero), and every tap is summed in one call, in window order; cells past the
    images' runs are left as they were. Otherwise the buffer is zeroed first."""
    if layout.flat:
        run = channels * m * layout.n_cols_per_image
        np.sum(_runs_back(np.ascontiguousarray(dcols), layout, run), axis=(0, 1), out=buf[:run])
        return buf
    buf[:channels * m * layout.image_size + layout.slack] = 0
    for seen, block in _tap_views(buf, layout, channels, m, dcols):
        seen += block
    return buf
