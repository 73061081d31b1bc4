"""Padding for the naive-loop references, written from the TensorFlow/Keras formula rather
than taken from the plugin under test."""

from __future__ import annotations

import math


def keras_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after): output ceil(size / stride), the odd cell after (bottom/right)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def naive_pads(h, w, k, s, padding):
    """((top, bottom), (left, right)) for a padding given as "same", "valid", an int or a pair."""
    if padding == "same":
        return keras_same_padding(h, k[0], s[0]), keras_same_padding(w, k[1], s[1])
    if padding == "valid":
        return (0, 0), (0, 0)
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    return (p[0], p[0]), (p[1], p[1])
