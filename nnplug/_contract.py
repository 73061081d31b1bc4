"""The conformance harness's building blocks: its error, its result, and the property checks
shared by ``check_layer`` and ``check_loss`` (shapes, mutation, aliasing, determinism)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from nnplug._strategies import Case
from nnplug.arrays import frozen
from nnplug.errors import ConfigError, GradientCheckError, PluginError, exception_text
from nnplug.gradcheck import GradcheckReport
from nnplug.layer import Layer, Loss, parse_config
from nnplug.registry import Registry, load_registry


class ConformanceError(GradientCheckError):
    """A layer or loss broke its contract on one case.

    Attributes:
        check: the property that broke (``"output_shape"``, ``"mutation"``, ``"gradient"``, ...).
        type_name, case, seed: what reproduces it with ``check_layer``/``check_loss``.
        report: the :class:`~nnplug.GradcheckReport` when the gradient check failed.
    """

    def __init__(self, message: str, *, check: str, type_name: str, case: Case, seed: int,
                 report: GradcheckReport | None = None) -> None:
        super().__init__(message, report)
        self.report: GradcheckReport | None = report
        self.check = check
        self.type_name = type_name
        self.case = case
        self.seed = seed


@dataclass
class CheckResult:
    """A passed check: the gradient report of the last draw and how many draws met a kink."""

    type_name: str
    case: Case
    seed: int
    batch: int
    report: GradcheckReport
    redraws: int
    n_forward: int  # forward evaluations of the gradient checks, all draws together


def resolve(cls_or_type: Any, registry: Registry | None = None) -> tuple[str, type[Layer] | type[Loss]]:
    """``(type name, class)`` for a registered type name or a Layer/Loss class."""
    if isinstance(cls_or_type, str):
        cls = (registry if registry is not None else load_registry()).get(cls_or_type)
    elif isinstance(cls_or_type, type) and issubclass(cls_or_type, (Layer, Loss)):
        cls = cls_or_type
    else:
        raise PluginError(f"expected a registered type name or a Layer/Loss class, got {cls_or_type!r}")
    return cls.type_name(), cls


@dataclass
class _Context:
    """What a failure message names: the type, the case, the batch and the seed."""

    type_name: str
    case: Case
    seed: int
    batch: int

    def fail(self, check: str, detail: str, report: GradcheckReport | None = None) -> NoReturn:
        where = (f"  config {self.case.config!r}, input shapes {self.case.in_shapes} "
                 f"(batch {self.batch}), values {self.case.values!r}, params {self.case.params!r}, seed {self.seed}")
        raise ConformanceError(f"{self.type_name}: {check} broken: {detail}\n{where}", check=check,
                               type_name=self.type_name, case=self.case, seed=self.seed, report=report)


def _build(cls: Any, name: str, ctx: _Context) -> Any:
    """The layer for the case's config, after checking that the config survives a round trip."""
    if not isinstance(ctx.case, Case):
        raise ConfigError(f"{name}: expected a nnplug.testing.Case, got {ctx.case!r}")
    try:
        config = parse_config(cls.Config, {"type": name, **ctx.case.config}, where=f"{name} case config")
    except ConfigError as exc:
        ctx.fail("case config", f"gradcheck_cases() drew a config the layer refuses: {exc}")
    try:
        # by alias: a model file gives an aliased field by its alias, and only so
        text = json.dumps(config.model_dump(mode="json", by_alias=True))
        again = parse_config(cls.Config, json.loads(text))
    except (ConfigError, TypeError, ValueError) as exc:
        ctx.fail("config round trip", f"model_dump -> parse_config failed: {exc}")
    if again != config:
        ctx.fail("config round trip", f"{config!r} came back as {again!r}")
    return cls(config)


def _call(ctx: _Context, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ConformanceError:
        raise
    except Exception as exc:
        if isinstance(exc, ValueError) and "read-only" in str(exc):  # inputs, params and dy come read-only
            ctx.fail("mutation", f"{what} wrote into an array it was given ({exc}); the contract forbids "
                                 "editing inputs, params or dy: return new arrays")
        ctx.fail(what, f"{what} raised {exception_text(exc)}")


def _pair(ctx: _Context, what: str, result: Any, expected: str) -> tuple[Any, Any]:
    """A method's ``(a, b)`` result, or a failure naming what it returned instead."""
    if not (isinstance(result, tuple) and len(result) == 2):
        ctx.fail(what, f"{what} returned {type(result).__name__}, expected a pair {expected}")
    return result[0], result[1]


def _snapshot(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


def _unchanged(ctx: _Context, stage: str, before: dict[str, np.ndarray], now: dict[str, Any]) -> None:
    for key, old in before.items():
        new = now[key]
        if np.shape(new) != old.shape or not np.array_equal(new, old, equal_nan=True):
            ctx.fail("mutation", f"{stage} modified {key} in place")


def _same_attrs(ctx: _Context, stage: str, layer: Any, before: dict[str, Any]) -> None:
    now = vars(layer)
    changed = sorted(set(now) ^ set(before) | {k for k in before if k in now and now[k] is not before[k]})
    if changed:
        ctx.fail("layer state", f"{stage} changed the layer's attributes {changed}; "
                                "whatever backward needs belongs in the returned cache")


def _no_aliasing(ctx: _Context, grads: dict[str, np.ndarray], dy: np.ndarray | None,
                 input_grads: frozenset[str] = frozenset()) -> None:
    """Parameter gradients share memory with nothing else backward returned, nor with ``dy``:
    the executor hands them to the caller as they are, to edit in place (clipping, an
    optimizer). Input gradients (``input_grads``) may be ``dy`` itself or share memory with each
    other (an identity, an add returning ``(dy, dy)``): the contract forbids editing, not
    returning, what a layer was given, and the executor never adds into such an array nor
    hands it back uncopied."""
    items = list(grads.items())
    for i, (name, g) in enumerate(items):
        if dy is not None and name not in input_grads and np.shares_memory(g, dy):
            ctx.fail("aliasing", f"{name} shares memory with dy; return a new array")
        for other, h in items[i + 1:]:
            if not (name in input_grads and other in input_grads) and np.shares_memory(g, h):
                ctx.fail("aliasing", f"{name} and {other} share memory")


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    return [k for k in a if not np.array_equal(a[k], b[k], equal_nan=True)]


def as_batch_innermost(a: np.ndarray) -> np.ndarray:
    """``a``'s values and shape over batch-innermost memory, ``(N, C, H, W)`` behind
    ``(C, H, W, N)``: the order conv2d hands its output on in a model, on small images."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 0, -1)), -1, 0)


def _layout_agrees(layer: Any, ctx: _Context, p: dict[str, np.ndarray], xs: tuple[np.ndarray, ...],
                   dy: np.ndarray, expected: dict[str, np.ndarray], dx_names: list[str]) -> None:
    """Inputs and ``dy`` in batch-innermost memory give ``expected`` (C order's y, input
    gradients and gradients) to rounding: a layer whose strides or buffers assume C order
    passes every C-ordered check and still computes wrong numbers behind a conv2d."""
    multi = layer.n_inputs > 1
    moved = tuple(frozen(as_batch_innermost(a)) for a in xs)
    y, cache = _pair(ctx, "forward", _call(ctx, "forward", layer.forward, p, moved if multi else moved[0],
                                           training=True), "(y, cache)")
    dx, grads = _pair(ctx, "backward", _call(ctx, "backward", layer.backward, p, cache,
                                             frozen(as_batch_innermost(dy))), "(dx, {name: gradient})")
    dxs = tuple(dx) if multi and isinstance(dx, (tuple, list)) else (dx,)
    got = {"y": y, **dict(zip(dx_names, dxs))}
    got |= {f"gradient {k!r}": grads[k] for k in p if isinstance(grads, dict) and k in grads}
    # the same numbers up to summation order (a BLAS product may add up another way)
    scale = max([float(np.max(np.abs(v), initial=0.0)) for v in expected.values()] + [1e-300])
    off = {k: float(np.max(np.abs(np.asarray(got[k], dtype=np.float64) - v), initial=0.0))
           if k in got and np.shape(got[k]) == v.shape else float("inf") for k, v in expected.items()}
    bad = [k for k, d in off.items() if not d <= 1e-9 * scale]  # NaN counts as different
    if bad:
        ctx.fail("memory layout", f"inputs and dy laid out batch-innermost (the memory order conv2d hands on "
                                  f"small images, behind the same shapes) changed {', '.join(bad)} (by up to "
                                  f"{max(off[k] for k in bad):.3g}): the layer assumes C-contiguous arrays; call "
                                  "np.ascontiguousarray on what it needs in C order")
