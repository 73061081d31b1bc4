"""Window geometry shared by conv2d and the pooling layers: pairs, padding, output sizes and
window taps (conv2d's column layout is in :mod:`nnplug_layers.columns`).

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
from functools import cached_property, lru_cache
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
#: The most values one example's padded input (C, Hp, Wp) may hold: the executor's cap on a
#: node's output (``nnplug.build.MAX_ACTIVATION``, kept equal by a test), since conv2d and the
#: poolings allocate the padded input as they do an output.
MAX_PADDED_VALUES = 2**31


def checked_images(x: object, layer: str) -> np.ndarray:
    """``x`` if it is a batch of floating-point images (N, C, H, W); else a ShapeError naming
    ``layer``. Integers are refused, not computed in: a layer keeps its input's dtype, so its
    weights would be cast to int and its means truncated without a word (a model casts its
    input to its float dtype before any layer sees it)."""
    if not isinstance(x, np.ndarray):
        raise nnplug.ShapeError(f"{layer} expects a numpy array of images (N, C, H, W), received {type(x).__name__}")
    if x.ndim != 4:
        raise nnplug.ShapeError(f"{layer} expects a batch of images (N, C, H, W), received shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise nnplug.ShapeError(f"{layer} expects floating-point images (float32 or float64), received dtype "
                                f"{x.dtype}: cast them first, x.astype(np.float32)")
    return x


def batch_innermost(a: np.ndarray) -> bool:
    """Whether images a (N, C, H, W) lie in memory as (C, H, W, N): the batch innermost, as
    conv2d's *batch_inner* layout returns its outputs (see ``columns``)."""
    return a.ndim == 4 and a.shape[0] > 1 and a.strides[0] == a.itemsize and not a.flags.c_contiguous


def images_like(batch_inner: bool, shape: tuple[int, ...], dtype: np.dtype, *, zeroed: bool = False) -> np.ndarray:
    """A new (N, C, H, W) array, laid out in memory batch innermost, (C, H, W, N), when
    ``batch_inner`` (the layout of the images it stands for, :func:`batch_innermost`), in C
    order otherwise. Layers that keep the batch innermost from layer to layer, outputs and
    gradients alike, keep numpy's inner loops N long on small images instead of W (a 2×2
    max-pool of 4×4 and 8×8 images ran 1.6-1.8x faster so), and hand the next conv2d its
    buffers' order."""
    make = np.zeros if zeroed else np.empty
    if batch_inner and len(shape) == 4:
        return make((*shape[1:], shape[0]), dtype).transpose(3, 0, 1, 2)
    return make(shape, dtype)


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

    @cached_property  # read in every tap loop
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
                    padding: int | Pair | str, *, what: str, channels: int | None = None) -> Window2D:
    """Resolve the padding and output size of a window over ``in_hw``; with ``channels`` (the
    input's channel count), also size-check the padded input.

    Memoised (layers resolve their geometry on every call, and the result is immutable).

    Raises:
        ShapeError: when the kernel is larger than the padded input (``what`` names the window),
            or, given ``channels``, when the padded input (channels, Hp, Wp) passes
            :data:`MAX_PADDED_VALUES` while neither the input nor the output does.
    """
    pad = padding if isinstance(padding, str) else as_pair(padding)
    return _window_geometry((int(in_hw[0]), int(in_hw[1])), as_pair(kernel), as_pair(stride), pad, what,
                            repr(padding), None if channels is None else int(channels))


@lru_cache(maxsize=512)
def _window_geometry(in_hw: Pair, kernel: Pair, stride: Pair, padding: Pair | str, what: str,
                     padding_shown: str, channels: int | None) -> Window2D:
    (kh, kw), (sh, sw) = kernel, stride
    h, w = in_hw
    if padding == "same":
        pad_h, pad_w = same_padding(h, kh, sh), same_padding(w, kw, sw)
    elif isinstance(padding, str):  # "valid"
        pad_h, pad_w = (0, 0), (0, 0)
    else:
        pad_h, pad_w = (padding[0], padding[0]), (padding[1], padding[1])
    hp, wp = h + sum(pad_h), w + sum(pad_w)
    if kh > hp or kw > wp:
        raise nnplug.ShapeError(
            f"{what} {(kh, kw)} is larger than the padded input {(hp, wp)} "
            f"(input {(h, w)}, padding {padding_shown})"
        )
    out = ((hp - kh) // sh + 1, (wp - kw) // sw + 1)
    if channels is not None and channels * hp * wp > MAX_PADDED_VALUES >= channels * max(h * w, out[0] * out[1]):
        # The layers materialise the padded input, while their output can stay small (a large
        # stride or window), out of reach of the executor's check of outputs. An input or an
        # output past the cap is left to that check, which blames the node that made it.
        raise nnplug.ShapeError(
            f"{what} {(kh, kw)} with padding {padding_shown} pads the input {(channels, h, w)} to "
            f"{(channels, hp, wp)}: {channels * hp * wp:,} values per example, more than "
            f"{MAX_PADDED_VALUES:,}; reduce the padding or the window"
        )
    return Window2D((h, w), (kh, kw), (sh, sw), pad_h, pad_w, out)


def index_dtype(n_taps: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds a window index in [0, n_taps)."""
    return np.dtype(np.min_scalar_type(max(n_taps - 1, 0)))
