"""The conformance harness every layer and loss passes: ``check_layer`` and ``check_loss``.

Given a class (or a registered type name) and one :class:`~nnplug.testing.Case`, it builds the
layer, draws a batch of 2-5 examples, the values and the parameters (``Case.params``) from
``seed``, and checks the contract of DESIGN.md property by property, in float64 and float32,
then the float64 gradient of every input and parameter against finite differences. A case that
meets a kink is redrawn (and counted); anything else that breaks raises
:class:`ConformanceError` naming the property.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nnplug._contract import (
    CheckResult,
    ConformanceError,
    _build,
    _call,
    _Context,
    _layout_agrees,
    _no_aliasing,
    _pair,
    _same,
    _same_attrs,
    _snapshot,
    _unchanged,
    resolve,
)
from nnplug._gradcheck_inputs import is_seed
from nnplug._strategies import MAX_CASE_VALUES, Case, case_params, draw_values
from nnplug.arrays import frozen, loss_target
from nnplug.errors import ConfigError, PluginError, ShapeError, exception_text
from nnplug.gradcheck import GradcheckReport, Mode, gradcheck_layer, gradcheck_loss
from nnplug.layer import Layer, Loss, as_output_shape
from nnplug.registry import Registry

__all__ = ["MAX_REDRAWS", "CheckResult", "ConformanceError", "check", "check_layer", "check_loss", "resolve"]

#: How many times a case whose values met a kink is redrawn before the check gives up.
MAX_REDRAWS = 5
#: float32 results may differ from float64's by this fraction of the largest result or operand.
FLOAT32_AGREEMENT = 1e-3


def _layer_contract(layer: Any, ctx: _Context, params: dict[str, np.ndarray], xs: tuple[np.ndarray, ...],
                    out_shape: tuple[int, ...], dtype: Any, dy_seed: int) -> tuple[dict[str, np.ndarray], float]:
    """One forward and backward in ``dtype``: shapes, dtypes, mutation, aliasing, determinism,
    state kept outside the cache. Returns y, dx and the gradients by name, and the largest
    operand entry (x, params, dy)."""
    multi = layer.n_inputs > 1
    # read-only, as the executor hands them: a plugin that needs writable arrays (a C
    # extension without const buffers, say) finds out here, not inside a model
    p = {k: frozen(v.astype(dtype)) for k, v in params.items()}
    x_arrays = tuple(frozen(a.astype(dtype)) for a in xs)
    x = x_arrays if multi else x_arrays[0]
    inputs = {f"input {k}" if multi else "the input": a for k, a in enumerate(x_arrays)}
    before = {**_snapshot({f"param {k}": v for k, v in p.items()}), **_snapshot(inputs)}
    names = sorted(p)
    attrs = dict(vars(layer))
    current = {**{f"param {k}": v for k, v in p.items()}, **inputs}
    label = np.dtype(dtype).name

    y, cache = _pair(ctx, "forward", _call(ctx, "forward", layer.forward, p, x, training=True), "(y, cache)")
    if not isinstance(y, np.ndarray):
        ctx.fail("forward", f"forward returned {type(y).__name__}, expected a numpy array")
    if y.shape != (ctx.batch, *out_shape):
        ctx.fail("output_shape", f"forward gave {y.shape}, output_shape promised {(ctx.batch, *out_shape)}")
    if y.dtype != dtype:
        ctx.fail("dtype", f"{label} in gave {y.dtype} out of forward")
    if not np.isfinite(y).all():
        moved = " (its parameters were moved off init_params' values: Case(..., params='init') keeps them " \
            "as drawn, for parameters that must stay in a domain)" if p and ctx.case.params == "perturbed" else ""
        ctx.fail("forward", f"forward returned non-finite values on finite inputs{moved}")
    _unchanged(ctx, "forward", before, current)
    _same_names(ctx, "forward", p, names)

    dy = frozen(np.asarray(np.random.default_rng(dy_seed).standard_normal(y.shape), dtype=dtype))
    dy_before = dy.copy()
    dx, grads = _pair(ctx, "backward", _call(ctx, "backward", layer.backward, p, cache, dy), "(dx, {name: gradient})")
    if not isinstance(grads, dict):
        ctx.fail("backward", f"backward returned {type(grads).__name__} as its gradients, expected {{name: gradient}}")
    _unchanged(ctx, "backward", {**before, "dy": dy_before}, {**current, "dy": dy})
    _same_names(ctx, "backward", p, names)
    _same_attrs(ctx, "forward/backward", layer, attrs)
    if multi and not isinstance(dx, (tuple, list)):  # a stacked array is not split row by row
        ctx.fail("input gradients", f"backward returned {type(dx).__name__} as dx, expected a tuple of "
                 f"{len(x_arrays)} input gradients, one per input")
    dxs = tuple(dx) if multi else (dx,)
    if len(dxs) != len(x_arrays):
        ctx.fail("input gradients", f"backward returned {len(dxs)} input gradients for {len(x_arrays)} inputs")
    if set(grads) != set(p):
        ctx.fail("gradient names", f"backward returned gradients {sorted(grads)}, parameters are {sorted(p)}")
    dx_names = [f"dx[{k}]" for k in range(len(dxs))] if multi else ["dx"]
    named = dict(zip(dx_names, dxs)) | {f"gradient {k!r}": grads[k] for k in p}
    wanted = [a.shape for a in x_arrays] + [p[k].shape for k in p]
    for (name, g), shape in zip(named.items(), wanted):
        if not isinstance(g, np.ndarray):
            ctx.fail("gradient shapes", f"{name} is {type(g).__name__}, expected a numpy array")
        if g.shape != shape:
            ctx.fail("gradient shapes", f"{name} has shape {g.shape}, expected {shape}")
        if g.dtype != dtype:
            ctx.fail("dtype", f"{label} in gave {name} of dtype {g.dtype}")
    _no_aliasing(ctx, named, dy, frozenset(dx_names))

    # The same cache twice, and a fresh forward pass, give the same numbers. (Compared with
    # copies: a backward that edits its cache in place may have returned views of it.)
    first = {k: v.copy() for k, v in named.items()}
    dx2, grads2 = _call(ctx, "backward", layer.backward, p, cache, dy)
    again = dict(zip(dx_names, tuple(dx2) if multi else (dx2,)))
    again |= {f"gradient {k!r}": grads2[k] for k in p}
    if _same(first, again) or _same(first, named):
        changed = sorted(set(_same(first, again)) | set(_same(first, named)))
        ctx.fail("determinism", f"a second backward on the same cache changed {changed}: backward must "
                                "leave its cache as forward made it (several backwards may read one cache)")
    y3, _ = _pair(ctx, "forward", _call(ctx, "forward", layer.forward, p, x, training=True), "(y, cache)")
    if not np.array_equal(y, y3, equal_nan=True):
        ctx.fail("determinism", "two forward passes on the same input differ")
    # Several forwards may run before their backwards: another forward (the batch reversed)
    # must not change what backward makes of the first one's cache.
    reversed_batch = tuple(a[::-1].copy() for a in x_arrays)
    _pair(ctx, "forward", _call(ctx, "forward", layer.forward, p, reversed_batch if multi else reversed_batch[0],
                                training=True), "(y, cache)")
    dx4, grads4 = _call(ctx, "backward", layer.backward, p, cache, dy)
    later = dict(zip(dx_names, tuple(dx4) if multi else (dx4,))) | {f"gradient {k!r}": grads4[k] for k in p}
    if _same(first, later):
        ctx.fail("layer state", f"a forward on other inputs changed what backward computes from an earlier "
                                f"forward's cache ({', '.join(_same(first, later))}); keep what backward "
                                "needs in the cache, not in the layer or anywhere else")
    if type(layer).param_grads is not Layer.param_grads:
        _param_grads_agree(layer, ctx, p, cache, dy, {k: first[f"gradient {k!r}"] for k in p})
    if dtype == np.float64:  # float64 alone: its rounding leaves no doubt about a difference
        _layout_agrees(layer, ctx, p, x_arrays, dy, {"y": y, **first}, dx_names)
    return {"y": y, **first}, max(_largest(a) for a in [*current.values(), dy])


def _same_names(ctx: _Context, stage: str, p: dict[str, np.ndarray], names: list[str]) -> None:
    """The params dict keeps its names: a layer adding or removing one would otherwise be told
    its gradient names are wrong (the executor hands each call a fresh dict, where the edit
    goes unseen, but the contract forbids it)."""
    if sorted(p) != names:
        ctx.fail("mutation", f"{stage} changed the names in the params dict it was given, from {names} to "
                             f"{sorted(p)}; the contract forbids editing params: copy the dict to change it")


def _largest(a: np.ndarray) -> float:
    return float(np.max(np.abs(a), initial=0.0))


def _float32_agrees(ctx: _Context, f64: dict[str, np.ndarray], f32: dict[str, np.ndarray], operands: float) -> None:
    """float32 gives float64's numbers, up to what float32 can lose: the gradient itself is
    checked in float64 only, so a mistake on float32's path alone would pass unseen.

    The yardstick is the largest of the layer's results (y, dx, gradients) and ``operands``
    (x, params, dy), not each result's own size: a result that comes out of cancellation
    (batch norm's dx on a batch of two, a gradient or an output zero in exact arithmetic)
    carries float32's error at the size of the terms that cancelled. The limit, 0.1% of that
    size, is far above float32's own error (every built-in layer stays below 3e-7 of it, a
    batch norm on batches of two below 1e-5) and below a float32 path's mistake of a percent."""
    scale = max(operands, *map(_largest, f64.values()), 1e-30)
    for name, exact in f64.items():
        worst = _largest(f32[name].astype(np.float64) - exact) / scale
        if worst > FLOAT32_AGREEMENT:
            ctx.fail("float32", f"float32 in gives {name} differing from float64's by {worst:.3g} of the "
                                "largest result or operand (float32 rounding explains far less)")


def _param_grads_agree(layer: Any, ctx: _Context, p: dict[str, np.ndarray], cache: Any, dy: np.ndarray,
                       expected: dict[str, np.ndarray]) -> None:
    """An overridden ``param_grads`` gives backward's parameter gradients (to rounding)."""
    only = _call(ctx, "param_grads", layer.param_grads, p, cache, dy)
    if not isinstance(only, dict) or set(only) != set(p):
        got = sorted(only) if isinstance(only, dict) else type(only).__name__
        ctx.fail("param_grads", f"param_grads returned gradients for {got}, parameters are {sorted(p)}")
    rtol = 1e-10 if dy.dtype == np.float64 else 1e-4
    for k, g in only.items():
        if not isinstance(g, np.ndarray) or g.shape != expected[k].shape or g.dtype != expected[k].dtype:
            seen = (g.shape, g.dtype) if isinstance(g, np.ndarray) else type(g).__name__
            ctx.fail("param_grads", f"param_grads gave {k!r} as {seen}, backward as "
                                    f"{(expected[k].shape, expected[k].dtype)}")
        scale = max(float(np.max(np.abs(expected[k]), initial=0.0)), 1e-30)
        if not np.allclose(g, expected[k], rtol=rtol, atol=rtol * scale):
            worst = float(np.max(np.abs(g - expected[k])))
            ctx.fail("param_grads", f"param_grads gave {k!r} differing from backward's by {worst:.3g}")


def _gradient(ctx: _Context, run: Any, redraw: Any) -> tuple[GradcheckReport, int, int]:
    """Run the gradient check, redrawing values that met a kink; (report, redraws, forwards)."""
    redraws = forwards = 0
    while True:
        report: GradcheckReport = run()
        forwards += report.n_forward
        if report.failures:
            ctx.fail("gradient", str(report), report)
        if not report.kinks:
            return report, redraws, forwards
        if redraws == MAX_REDRAWS:
            ctx.fail("kink avoidance", f"every one of {redraws + 1} draws met a kink; gradcheck_cases() should "
                                 f"draw values off the kinks (Case.values)\n{report}", report)
        redraws += 1
        redraw()


def _begin(cls_or_type: Any, case: Case, seed: int, registry: Registry | None,
           kind: type) -> tuple[_Context, np.random.Generator, Any]:
    """Resolve the class, refuse the wrong kind, draw the batch size and build the object."""
    if registry is not None and not isinstance(registry, Registry):
        raise ConfigError(f"registry: expected an nnplug.Registry, got {type(registry).__name__} {registry!r}")
    if not is_seed(seed):
        raise ConfigError(f"seed: expected a non-negative int, got {seed!r}")
    name, cls = resolve(cls_or_type, registry)
    if not issubclass(cls, kind):
        other = "check_loss" if kind is Layer else "check_layer"
        raise PluginError(f"{name} is not a {kind.__name__.lower()}; check it with {other}")
    rng = np.random.default_rng(seed)
    ctx = _Context(name, case, seed, int(rng.integers(2, 6)))
    return ctx, rng, _build(cls, name, ctx)


def check_layer(cls_or_type: Any, case: Case, *, seed: int = 0, mode: Mode = "full",
                dtype: str = "float64", registry: Registry | None = None) -> CheckResult:
    """Check a layer on one case: every property of the layer contract, then its gradients.

    Args:
        cls_or_type: a Layer subclass or a registered type name (looked up in ``registry``,
            by default the installed plugins).
        case: the config and input shapes (no batch axis), as ``gradcheck_cases()`` draws them.
        seed: draws the batch size (2 to 5), the parameters, the values and ``R``.
        mode: ``"full"`` (every entry) or ``"fast"`` (directional derivatives first).
        dtype: the dtype of the finite-difference check.

    Raises:
        ConformanceError: (an AssertionError) naming the property that broke, the config and
            shapes.
    """
    ctx, rng, layer = _begin(cls_or_type, case, seed, registry, Layer)
    cls = type(layer)
    name = ctx.type_name
    attrs = dict(vars(layer))
    if len(case.in_shapes) != cls.n_inputs:
        ctx.fail("case shapes", f"{name} takes {cls.n_inputs} input(s), the case gives {len(case.in_shapes)}")
    multi = cls.n_inputs > 1
    in_shape = case.in_shapes if multi else case.in_shapes[0]
    try:
        out_shape = layer.output_shape(in_shape)
    except ShapeError as exc:  # the layer refusing shapes is its contract; the case is at fault
        ctx.fail("case shapes", f"{name} refuses the case's input shapes {in_shape}: {exc}")
    except Exception as exc:
        ctx.fail("output_shape", f"output_shape raised {exception_text(exc)}")
    shape = as_output_shape(out_shape)  # as a model takes it: a list or numpy ints too, never () or 0
    if shape is None:
        ctx.fail("output_shape", f"output_shape returned {out_shape!r}, expected a non-empty tuple of positive "
                                 "ints (a model refuses any other)")
    out_shape = shape
    declared = _call(ctx, "param_shapes", layer.param_shapes, in_shape)
    # a case's config may build a layer too large to check (units 3e8): refused before any
    # weight is drawn where param_shapes says, else as soon as init_params returns
    _within_case_size(ctx, "output values per example", math.prod(out_shape))
    if isinstance(declared, dict):
        _within_case_size(ctx, "parameters", sum(math.prod(int(d) for d in s) for s in declared.values()))

    def draw() -> tuple[dict[str, np.ndarray], tuple[np.ndarray, ...]]:
        params = _call(ctx, "init_params", layer.init_params, in_shape, rng)
        if not isinstance(params, dict) or not all(isinstance(v, np.ndarray) for v in params.values()):
            ctx.fail("init_params", f"init_params must return {{name: array}}, got {params!r}")
        _within_case_size(ctx, "parameters", sum(v.size for v in params.values()))
        xs = tuple(draw_values(case.values, (ctx.batch, *s), rng) for s in case.in_shapes)
        return case_params(case.params, params, rng), xs

    params, xs = draw()
    _same_attrs(ctx, "output_shape/init_params", layer, attrs)
    if declared is not None and declared != {k: v.shape for k, v in params.items()}:
        ctx.fail("param_shapes", f"param_shapes says {declared}, init_params gave "
                                 f"{ {k: v.shape for k, v in params.items()} }")
    again = _call(ctx, "init_params", layer.init_params, in_shape, np.random.default_rng(seed))
    first = _call(ctx, "init_params", layer.init_params, in_shape, np.random.default_rng(seed))
    if not isinstance(again, dict) or set(again) != set(first) or _same(first, again):
        ctx.fail("init_params", "two generators seeded alike gave different parameters: draw from the "
                                "rng passed in (not np.random's global state), so one seed gives one model")
    dy_seed = int(rng.integers(2**32))
    (f64, operands), (f32, _) = (_layer_contract(layer, ctx, params, xs, out_shape, dt, dy_seed)
                                 for dt in (np.float64, np.float32))
    _float32_agrees(ctx, f64, f32, operands)

    state: dict[str, Any] = {"params": params, "xs": xs}

    def run() -> GradcheckReport:
        xs_ = state["xs"]
        return gradcheck_layer(layer, xs_ if multi else xs_[0], state["params"], mode=mode, dtype=dtype,
                               seed=seed, raise_on_failure=False)

    def redraw() -> None:
        state["params"], state["xs"] = draw()

    report, redraws, forwards = _gradient(ctx, run, redraw)
    return CheckResult(name, case, seed, ctx.batch, report, redraws, forwards)


def _within_case_size(ctx: _Context, what: str, count: int) -> None:
    if count > MAX_CASE_VALUES:
        ctx.fail("case size", f"the case's config gives the layer {count:,} {what}, more than "
                              f"a finite-difference check takes ({MAX_CASE_VALUES:,}); draw smaller configs "
                              "in gradcheck_cases()")


def check_loss(cls_or_type: Any, case: Case, *, seed: int = 0, mode: Mode = "full",
               dtype: str = "float64", registry: Registry | None = None) -> CheckResult:
    """Check a loss on one case: a finite scalar value, ``dpred`` of the prediction's shape and
    dtype, no mutation, determinism, the config round trip, and the gradient; targets come from
    ``example_target``. Arguments and errors as :func:`check_layer`.
    """
    ctx, rng, loss = _begin(cls_or_type, case, seed, registry, Loss)
    if len(case.in_shapes) != 1:
        ctx.fail("case shapes", f"a loss takes one prediction shape, the case gives {len(case.in_shapes)}")
    shape = case.in_shapes[0]
    _call(ctx, "check_pred_shape", loss.check_pred_shape, shape)
    if type(loss).example_target is Loss.example_target:
        ctx.fail("example_target", "the loss offers gradcheck_cases() but defines no example_target(pred_shape, "
                                   "rng), which draws the targets it is checked with")

    def draw() -> tuple[np.ndarray, Any]:
        pred = draw_values(case.values, (ctx.batch, *shape), rng)
        return pred, _call(ctx, "example_target", loss.example_target, pred.shape, rng)

    pred, drawn = draw()
    for dt in (np.float64, np.float32):
        p, target = frozen(pred.astype(dt)), loss_target(drawn, np.dtype(dt))  # as a model hands them over
        before = _snapshot({"pred": p, "target": target})
        value, cache = _pair(ctx, "forward", _call(ctx, "forward", loss.forward, p, target), "(value, cache)")
        if not (np.ndim(value) == 0 and np.isrealobj(value) and np.isfinite(value)):
            ctx.fail("forward", f"the loss value must be a finite real scalar, got {value!r}")
        dpred = _call(ctx, "backward", loss.backward, cache)
        _unchanged(ctx, "forward/backward", before, {"pred": p, "target": target})
        if not isinstance(dpred, np.ndarray):
            ctx.fail("backward", f"backward returned {type(dpred).__name__}, expected dpred, an array of "
                                 f"the prediction's shape {p.shape}")
        if dpred.shape != p.shape:
            ctx.fail("gradient shapes", f"dpred has shape {dpred.shape}, expected {p.shape}")
        if dpred.dtype != dt:
            ctx.fail("dtype", f"{np.dtype(dt).name} predictions gave dpred of dtype {dpred.dtype}")
        if np.shares_memory(dpred, p):
            ctx.fail("aliasing", "dpred shares memory with pred")
        if not np.array_equal(dpred, loss.backward(cache)) or loss.forward(p, target)[0] != value:
            ctx.fail("determinism", "a second forward or backward gave different numbers")
    _batch_mean(ctx, loss, pred, loss_target(drawn, pred.dtype))

    state: dict[str, Any] = {"pred": pred, "target": drawn}

    def run() -> GradcheckReport:
        return gradcheck_loss(loss, state["pred"], state["target"], mode=mode, dtype=dtype, seed=seed,
                              raise_on_failure=False)

    def redraw() -> None:
        state["pred"], state["target"] = draw()

    report, redraws, forwards = _gradient(ctx, run, redraw)
    return CheckResult(ctx.type_name, case, seed, ctx.batch, report, redraws, forwards)


def _batch_mean(ctx: _Context, loss: Loss, pred: np.ndarray, target: Any) -> None:
    """The value is the mean over the batch: the batch given twice has the same loss. (A sum
    passes every gradient check, being its own derivative's integral, but makes the learning
    rate depend on the batch size.)"""
    if not (isinstance(target, np.ndarray) and target.ndim and len(target) == len(pred)):
        return  # a target not laid out by example cannot be repeated with the batch
    once = _call(ctx, "forward", loss.forward, frozen(pred.copy()), target)[0]
    twice = _call(ctx, "forward", loss.forward, frozen(np.concatenate([pred, pred])),
                  np.concatenate([target, target]))[0]
    if not np.isclose(twice, once, rtol=1e-6, atol=1e-12):
        ctx.fail("batch mean", f"the loss of the batch given twice is {float(twice):.6g}, of the batch once "
                               f"{float(once):.6g}: forward must return the mean over the batch, not the sum")


def check(cls_or_type: Any, case: Case, **kwargs: Any) -> CheckResult:
    """``check_layer`` or ``check_loss``, whichever fits the class."""
    _, cls = resolve(cls_or_type, kwargs.get("registry"))
    return (check_loss if issubclass(cls, Loss) else check_layer)(cls, case, **kwargs)
