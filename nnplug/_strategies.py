"""Cases, value kinds and hypothesis strategies for layer tests (re-exported by nnplug.testing).

A layer's ``gradcheck_cases()`` returns a strategy of :class:`Case`: a config and the input
shapes (no batch axis). The checker draws the batch and the values; ``Case.values`` names
how values are drawn so that they stay off the layer's kinks.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nnplug.errors import ConfigError, PluginError, exception_text
from nnplug.layer import Layer, Loss

Shape = tuple[int, ...]
ValueKind = Callable[[Shape, np.random.Generator], np.ndarray]

#: How a case's input values are drawn, by name (see :func:`draw_values`).
VALUE_KINDS: dict[str, ValueKind] = {}

#: The margin kept around 0 by ``off_zero`` values: far above the finite-difference step.
KINK_MARGIN = 0.1


def _value_kind(name: str) -> Callable[[ValueKind], ValueKind]:
    def register(fn: ValueKind) -> ValueKind:
        VALUE_KINDS[name] = fn
        return fn

    return register


@_value_kind("normal")
def _normal(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Standard normal values: for smooth layers."""
    return rng.standard_normal(shape)


@_value_kind("off_zero")
def _off_zero(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Normal values pushed at least ``KINK_MARGIN`` away from 0: for ReLU-like kinks at 0."""
    z = rng.standard_normal(shape)
    return np.sign(z) * (np.abs(z) + KINK_MARGIN) + (z == 0) * KINK_MARGIN


@_value_kind("distinct")
def _distinct(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of evenly spaced values in [-2, 2): every pair differs by at least
    4 / size, far more than the finite-difference step, so max-like windows have no near-ties.
    The grid is shifted off 0 by a third of its spacing: no value is 0 and no two have the same
    magnitude (a max of |x| would tie -0.8 with 0.8)."""
    return _distinct_grid(rng.permutation(int(np.prod(shape, dtype=np.int64))), shape)


def _distinct_grid(order: Any, shape: Shape) -> np.ndarray:
    size = int(np.prod(shape, dtype=np.int64))
    spacing = 4.0 / max(size, 1)
    return ((np.asarray(order, dtype=np.float64) + 1 / 3) * spacing - 2.0).reshape(shape)


@_value_kind("wide")
def _wide(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Normal values four times as spread (a third beyond ±4): for branches far from 0, such as
    ReLU6's cap at 6, which standard normal values almost never reach."""
    return 4.0 * rng.standard_normal(shape)


#: How a check sets a case's parameters (see :attr:`Case.params`).
PARAM_KINDS = ("perturbed", "init")


def case_params(kind: str, params: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``init_params``' values as float64, moved off them unless ``kind`` is ``init``: each
    entry by about 10% of itself and away from zero by about 0.01 more, keeping its sign (so a
    gate initialised at 1e-6 moves to about 0.01, and a positive scale stays positive); an
    entry of 0 by about 0.1 either way. Standard normal steps."""
    exact = {k: v.astype(np.float64) for k, v in params.items()}
    if kind == "init":
        return exact
    moved = {}
    for k, v in exact.items():
        relative, lift, either_way = (rng.standard_normal(v.shape) for _ in range(3))
        moved[k] = np.where(v == 0, 0.1 * either_way, v * (1 + 0.1 * relative) + np.sign(v) * 0.01 * np.abs(lift))
    return moved


def draw_values(kind: str, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Values of ``shape`` drawn the way ``kind`` names: ``normal`` (standard normal, unbounded),
    ``wide`` (normal × 4), ``off_zero`` or ``distinct``."""
    try:
        fn = VALUE_KINDS[kind]
    except KeyError:
        raise ConfigError(
            f"unknown value kind {kind!r}; available: {', '.join(sorted(VALUE_KINDS))}"
        ) from None
    return fn(shape, rng)


@dataclass(frozen=True)
class Case:
    """One gradient-check case: a layer config (a dict, without ``type``), the input shapes
    without the batch axis (one per input), and how values are drawn.

    Its ``repr`` is valid Python, so a failing case can be pasted back as it is printed.
    """

    config: dict[str, Any]
    in_shapes: tuple[Shape, ...]
    values: str = field(default="normal")
    #: ``perturbed``: the checker moves every parameter off ``init_params``' values (by about
    #: 10%, away from zero by about 0.01 more, keeping its sign; zeros by about 0.1), so that a
    #: parameter drawn as 0, 1e-6 or 1 cannot hide a wrong gradient; ``init``: exactly
    #: ``init_params``' values, for parameters that must stay where they are drawn (a positive
    #: scale initialised near 0, say).
    params: str = field(default="perturbed")

    def __post_init__(self) -> None:
        if not isinstance(self.config, dict):
            raise ConfigError(f"Case.config must be a dict, got {self.config!r}")
        shapes_ok = isinstance(self.in_shapes, (tuple, list)) and len(self.in_shapes) > 0 and all(
            isinstance(s, (tuple, list))
            and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in s)
            for s in self.in_shapes
        )
        if not shapes_ok:
            raise ConfigError(
                "Case.in_shapes must be a tuple of shapes (tuples of positive ints, no batch axis), "
                f"one per input, e.g. ((3, 8, 8),); got {self.in_shapes!r}"
            )
        if self.values not in VALUE_KINDS:
            raise ConfigError(
                f"Case.values: unknown value kind {self.values!r}; "
                f"available: {', '.join(sorted(VALUE_KINDS))}"
            )
        if self.params not in PARAM_KINDS:
            raise ConfigError(f"Case.params: expected one of {', '.join(PARAM_KINDS)}, got {self.params!r}")
        # Normalise lists (and numpy ints) so that repr and equality are the plain tuple forms.
        object.__setattr__(self, "in_shapes", tuple(tuple(int(d) for d in s) for s in self.in_shapes))
        largest = max(math.prod(s) for s in self.in_shapes)
        if largest > MAX_CASE_VALUES:  # (10**6, 10**6) would ask for terabytes once a batch is drawn
            raise ConfigError(f"Case.in_shapes: {largest:,} values per example is more than a "
                              f"finite-difference check takes ({MAX_CASE_VALUES:,}); got {self.in_shapes!r}")


#: Values of one input of one example a Case may ask for: a check draws a batch of 2-5 and
#: evaluates the layer a few hundred times.
MAX_CASE_VALUES = 1 << 22


# -- strategies ------------------------------------------------------------------------------


def shapes(min_dims: int = 1, max_dims: int = 3, min_side: int = 1, max_side: int = 5) -> st.SearchStrategy[Shape]:
    """Small array shapes (no batch axis)."""
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


def image_shapes(max_channels: int = 3, min_side: int = 1, max_side: int = 6) -> st.SearchStrategy[Shape]:
    """Image shapes ``(C, H, W)`` without the batch axis."""
    return st.tuples(st.integers(1, max_channels), st.integers(min_side, max_side),
                     st.integers(min_side, max_side))


def arrays(shape: Shape, values: str = "normal") -> st.SearchStrategy[np.ndarray]:
    """float64 arrays of ``shape`` kept off kinks as ``values`` names.

    * ``normal``: finite values in [-3, 3];
    * ``wide``: finite values in [-12, 12] (branches far from 0);
    * ``off_zero``: |x| >= ``KINK_MARGIN`` (ReLU-like layers);
    * ``distinct``: a permutation of evenly spaced values, so any two differ by at least
      4 / size (max-like layers: the top two values of a window never nearly tie), and so do
      their magnitudes; none is 0.
    """
    if values in ("normal", "wide"):
        bound = 3 if values == "normal" else 12
        return hnp.arrays(np.float64, shape, elements=st.floats(-bound, bound))
    if values == "off_zero":
        return hnp.arrays(np.float64, shape, elements=st.floats(KINK_MARGIN, 3) | st.floats(-3, -KINK_MARGIN))
    if values == "distinct":
        size = int(np.prod(shape, dtype=np.int64))
        return st.permutations(range(size)).map(lambda p: _distinct_grid(p, shape))
    raise ConfigError(f"unknown value kind {values!r}; available: {', '.join(sorted(VALUE_KINDS))}")


@dataclass(frozen=True)
class Geometry:
    """A 2-D window geometry valid by construction: the (padded) input holds at least one window.

    ``in_shape`` is ``(C, H, W)``; ``kernel``, ``stride`` and ``padding`` are ``(rows, cols)``;
    ``out_hw`` is the output's ``(H_out, W_out)`` = ``(H + 2p - k) // s + 1`` per axis.
    """

    in_shape: Shape
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]

    @property
    def out_hw(self) -> tuple[int, int]:
        h, w = self.in_shape[1:]
        return ((h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1,
                (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1)

    def config(self, kernel_key: str = "kernel_size") -> dict[str, Any]:
        """The geometry as config entries (``kernel_size``/``pool_size``, ``stride``, ``padding``)."""
        return {kernel_key: list(self.kernel), "stride": list(self.stride), "padding": list(self.padding)}


@st.composite
def _geometry(draw: Any, max_channels: int, max_kernel: int, max_stride: int, max_padding: int,
              max_out: int, pool: bool) -> Geometry:
    c = draw(st.integers(1, max_channels), label="channels")
    kernel, stride, padding, side = [], [], [], []
    for axis in ("rows", "cols"):
        k = draw(st.integers(1, max_kernel), label=f"kernel {axis}")
        s = draw(st.integers(1, max_stride), label=f"stride {axis}")
        # Pooling pads at most half a window (PyTorch's rule): a window never lies in padding only.
        p = draw(st.integers(0, min(max_padding, k // 2) if pool else max_padding), label=f"padding {axis}")
        out = draw(st.integers(1, max_out), label=f"output {axis}")
        # The smallest input giving ``out`` windows, plus up to s - 1 rows the windows skip.
        low = max(1, (out - 1) * s + k - 2 * p)
        n = draw(st.integers(low, low + s - 1), label=f"input {axis}")
        kernel.append(k)
        stride.append(s)
        padding.append(p)
        side.append(n)
    return Geometry((c, side[0], side[1]), (kernel[0], kernel[1]), (stride[0], stride[1]),
                    (padding[0], padding[1]))


def conv_geometry(max_channels: int = 3, max_kernel: int = 3, max_stride: int = 2,
                  max_padding: int = 2, max_out: int = 4) -> st.SearchStrategy[Geometry]:
    """Convolution geometries whose padded input always holds at least one window."""
    return _geometry(max_channels, max_kernel, max_stride, max_padding, max_out, pool=False)


def pool_geometry(max_channels: int = 3, max_pool: int = 3, max_stride: int = 3,
                  max_padding: int = 1, max_out: int = 4) -> st.SearchStrategy[Geometry]:
    """Pooling geometries: valid windows, padding at most half the pool size."""
    return _geometry(max_channels, max_pool, max_stride, max_padding, max_out, pool=True)


def labels(n: int, classes: int) -> st.SearchStrategy[np.ndarray]:
    """``(n,)`` integer class labels in ``[0, classes)`` (softmax-cross-entropy targets)."""
    return hnp.arrays(np.int64, (n,), elements=st.integers(0, classes - 1))


def one_hot(n: int, classes: int) -> st.SearchStrategy[np.ndarray]:
    """``(n, classes)`` float64 one-hot rows."""
    return labels(n, classes).map(lambda t: np.eye(classes)[t])


def cases_for(cls_or_type: Any, registry: Any = None) -> st.SearchStrategy[Case]:
    """The ``gradcheck_cases()`` strategy of a layer or loss class, or of a registered type name.

    Raises:
        PluginError: if the type is unknown or offers no cases.
    """
    from nnplug._harness import resolve

    name, cls = resolve(cls_or_type, registry)
    if inspect.isfunction(inspect.getattr_static(cls, "gradcheck_cases", None)):  # no @classmethod
        raise PluginError(f"{name} ({cls.__module__}.{cls.__qualname__}): gradcheck_cases must be a "
                          "classmethod; decorate it with @classmethod")
    try:
        strategy = cls.gradcheck_cases()
    except Exception as exc:
        raise PluginError(f"{name} ({cls.__module__}.{cls.__qualname__}): gradcheck_cases() raised "
                          f"{exception_text(exc)}") from exc
    if strategy is None:
        base = inspect.getattr_static(Layer, "gradcheck_cases")  # Loss shares it
        overridden = inspect.getattr_static(cls, "gradcheck_cases") is not base
        what = ("gradcheck_cases() returned None; it must return a hypothesis strategy of nnplug.testing.Case "
                "(a missing `return`?)") if overridden else "offers no gradcheck_cases()"
        raise PluginError(f"{name} ({cls.__module__}.{cls.__qualname__}) {what}")
    if not isinstance(strategy, st.SearchStrategy):
        raise PluginError(f"{name}.gradcheck_cases() must return a hypothesis strategy of "
                          f"nnplug.testing.Case, got {type(strategy).__name__}")
    return strategy


def is_checkable(cls: type[Layer] | type[Loss]) -> bool:
    """Whether a class offers ``gradcheck_cases()``; one that raises counts as offering them,
    so that its error is reported when the cases are drawn."""
    try:
        return cls.gradcheck_cases() is not None
    except Exception:
        return True
