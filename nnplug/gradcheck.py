"""Finite-difference verification of layers, losses and whole models.

For a layer the scalar checked is ``f = sum(R * forward(x))`` for a random ``R`` of the
output's shape, whose analytic gradient is ``backward(R)``; for a loss or a model it is the
loss itself. Every input and every parameter is checked, in float64 by default:

* ``mode="full"``: every entry (or a random sample of ``max_entries`` per tensor, and then a
  few directions over the whole tensor too) by central differences
  ``(f(t + h e_i) - f(t - h e_i)) / 2h``;
* ``mode="fast"``: a few random unit directions ``v`` per tensor, comparing
  ``(f(t + h v) - f(t - h v)) / 2h`` with ``<grad, v>`` (O(1) evaluations per tensor); a
  tensor that fails is then checked entry by entry to name the worst entry.

Kinks (ReLU at 0, max-pool ties) are detected where the one-sided differences
``(f(t+h) - f(t)) / h`` and ``(f(t) - f(t-h)) / h`` disagree, and are reported as such.

A difference is taken term by term (``R * y`` entry by entry for a layer) before it is summed:
a term the step does not change then cancels exactly, however large (an output offset by 1e6,
a mask of -1e9), and the rounding noise left is estimated from the terms that did change and
from the checked tensor's own magnitude (:mod:`nnplug._gradcheck_probe`). It is added to the
tolerance, so a layer with large outputs or inputs is not failed for the differences' own
rounding (at ordinary sizes it is far below ``atol``). But it may never exceed 0.1% of the
derivative (a tenth of ``rtol`` where that is coarser, or ``atol``): an entry noisier than that
is measured again at steps 10 to 10,000 times larger, and if it stays unresolved it fails as
such, never passed; so does an entry whose function is not finite within one step. An entry
that moves no term is flat where the analytic gradient is within ``atol`` of 0. Where every
analytic gradient is small, the default ``atol`` is lowered to their scale
(:func:`_scaled_atol`), and in float64 so is each tensor's whose gradients are all small.
The steps are those actually taken: ``t + h`` rounded to ``t``'s dtype, minus ``t``.
``R``, the entries sampled and the directions come from streams of their own
(:func:`streams`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from nnplug import _returns as returns
from nnplug._gradcheck_directions import directional, locate
from nnplug._gradcheck_inputs import TOLERANCES, check_options, checked_array, checked_params, streams
from nnplug._gradcheck_probe import NOISE_ULPS, Compared, Measure, Point, Probe, compared, settle
from nnplug._gradcheck_report import GradcheckReport
from nnplug.arrays import loss_target
from nnplug.errors import NnplugError, PluginError, ShapeError, exception_text
from nnplug.layer import Layer, Loss

Mode = Literal["full", "fast"]

#: The terms whose sum is the checked scalar (``R * y`` for a layer, the loss for a loss or model).
Terms = Callable[[dict[str, np.ndarray]], np.ndarray]


class _Counter:
    def __init__(self, f: Terms) -> None:
        self.f = f
        self.calls = 0

    def __call__(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        self.calls += 1
        # The checker's own steps (up to 10,000 h away) may overflow where the caller's point
        # does not: the probe reports that as unresolved, numpy need not warn of it. (The
        # analytic pass, at the caller's point, runs outside and warns as usual.)
        with np.errstate(all="ignore"):
            return np.asarray(self.f(tensors), dtype=np.float64)


def _entry_measure(point: Point, tensors: dict[str, np.ndarray], view: np.ndarray, i: int) -> Measure:
    """Probes of entry ``i`` of a tensor (``view`` its flat view), restored after each."""
    original = view[i]

    def measure(h: float) -> Probe:
        view[i] = original + h
        up = float(view[i]) - float(original)  # the step taken: t + h rounds to t's dtype
        f_plus = point.f(tensors)
        view[i] = original - h
        down = float(original) - float(view[i])
        f_minus = point.f(tensors)
        view[i] = original
        return point.probe(f_plus, f_minus, up, down)

    return measure


def _sample(size: int, rng: np.random.Generator, max_entries: int) -> np.ndarray:
    """Every flat index of a tensor of ``size`` entries, or ``max_entries`` of them at random."""
    return np.arange(size) if size <= max_entries else np.sort(rng.choice(size, size=max_entries, replace=False))


def _elementwise(point: Point, tensors: dict[str, np.ndarray], name: str, analytic: np.ndarray,
                 report: GradcheckReport, flat: np.ndarray) -> bool:
    """Check the entries ``flat`` (flat indices) of one tensor; True if one failed."""
    t = tensors[name]
    scale = float(np.max(np.abs(analytic))) if analytic.size else 0.0
    view = t.reshape(-1)  # t is a private float copy, perturbed in place and restored
    failed = False
    for i in flat:
        a = float(analytic.reshape(-1)[i])
        probe, kink_test = settle(_entry_measure(point, tensors, view, int(i)), report, a, scale)
        index = tuple(int(k) for k in np.unravel_index(i, t.shape))
        result = compared(report, name, index, a, probe, scale, kink_test)
        if result is not None:
            result.record(report)
            failed |= result.bad
    return failed


def _largest(arrays: Iterable[Any]) -> float:
    """The largest finite magnitude among ``arrays`` (0 when there is none)."""
    largest = 0.0
    for array in arrays:
        magnitudes = np.abs(np.asarray(array, dtype=np.float64))
        largest = max(largest, float(magnitudes[np.isfinite(magnitudes)].max(initial=0.0)))
    return largest


def _scaled_atol(largest: float, rtol: float, at_rest: Point, tensors: Mapping[str, np.ndarray],
                 step: float) -> float:
    """What the default ``atol`` is lowered to for gradients no larger than ``largest``:
    ``rtol`` times it, but no less than the rounding of a central difference (NOISE_ULPS ulps
    over 2h) of values the size of the largest term, checked entry or step. A fixed atol guards
    gradients near 0 beside larger ones, but where every gradient is small (a layer whose
    outputs are 1e-6) it would pass any mistake. The floor keeps it above the noise of a
    gradient that is 0 but for rounding (a pixel no window reads, whose FFT correlation rounds
    at the size of its inputs though its outputs are near 0) or that no step can measure
    (inputs of 1e-300, where x ± h is h); in float64 it is about 1e-9 times the largest input,
    so gradients much below that (outputs of 1e-8 beside inputs of 3) stay beyond the check.
    Infinite (no scaling) for ``largest`` 0."""
    if largest == 0:
        return np.inf
    operand = max(_largest([at_rest.at, *tensors.values()]), step)
    return max(rtol * largest, NOISE_ULPS * at_rest.unit * operand / (2 * step))


def _run(subject: str, f: Terms, tensors: dict[str, np.ndarray],
         analytic: Mapping[str, np.ndarray], *, mode: Mode, dtype: str, eps: float | None,
         rtol: float | None, atol: float | None, max_entries: int, n_directions: int,
         seed: int | None) -> GradcheckReport:
    """Check every tensor. Fast mode takes directions first and entries only where one fails;
    full mode takes entries, and directions too where it samples them (a mistake in one column
    of a wide tensor could miss the sample). Entries are the finer verdict: directions that
    failed are dropped when every entry was checked and passed, and where the sample passed,
    a bisection looks for the entry they point at."""
    h, default_rtol, default_atol = TOLERANCES[dtype]
    rtol, step = default_rtol if rtol is None else rtol, h if eps is None else eps
    counter = _Counter(f)
    at_rest = Point(counter, counter(tensors), float(np.finfo(dtype).eps), 0.0)
    largest = _largest(analytic.values())
    scaled_atol = _scaled_atol(largest, rtol, at_rest, tensors, step)
    scaled = atol is None and scaled_atol < default_atol
    report = _check_all(subject, counter, at_rest, tensors, analytic, mode, dtype, step, rtol,
                        scaled_atol if scaled else default_atol if atol is None else atol, scaled,
                        max_entries, n_directions, seed, per_tensor=atol is None and dtype == "float64")
    if atol is None and largest == 0 and report.ok:
        # An analytic gradient of all zeros has no scale of its own: if the derivatives are
        # small, check again at theirs (a backward returning zeros for outputs of 1e-6).
        again = _scaled_atol(report.largest_numeric, rtol, at_rest, tensors, step)
        if again < default_atol:  # (the counter goes on: n_forward counts both passes)
            report = _check_all(subject, counter, at_rest, tensors, analytic, mode, dtype, step, rtol,
                                again, True, max_entries, n_directions, seed, per_tensor=dtype == "float64")
    return report


def _check_all(subject: str, counter: _Counter, at_rest: Point, tensors: dict[str, np.ndarray],
               analytic: Mapping[str, np.ndarray], mode: Mode, dtype: str, step: float, rtol: float,
               atol: float, scaled: bool, max_entries: int, n_directions: int,
               seed: int | None, *, per_tensor: bool = False) -> GradcheckReport:
    """One pass of :func:`_run` over every tensor at the given tolerances. With ``per_tensor``
    (the default atol, in float64), a tensor whose gradients are all small is checked at an
    atol lowered to their scale (:func:`_scaled_atol`), whatever the other tensors' gradients;
    one whose gradients are all zero, at the scale of its derivatives measured."""
    report = GradcheckReport(subject, mode, dtype, step, rtol, atol, atol_scaled=scaled)
    _, rng, aside = streams(seed)  # the samples and fast mode's directions; full mode's and bisections
    nonzero = _largest(analytic.values()) > 0  # else _run scales the whole check at once
    for name in tensors:
        grad = np.asarray(analytic[name], dtype=np.float64)  # of the tensor's shape: the callers checked
        # One atol for every tensor is set by the largest gradient anywhere: an early layer of a
        # model behind vanishing gradients (1e-7 beside a last layer's 0.1) would pass any mistake.
        # float64 only: float32's step of 1e-2 carries ReLU inputs across 0, and its coarse atol
        # is what keeps the central differences bent by them from reading as wrong gradients.
        own = _scaled_atol(_largest([grad]), rtol, at_rest, tensors, step) if per_tensor else np.inf
        report.atol = min(atol, own)
        if report.atol < atol:
            report.tensor_atols[name] = report.atol
        if per_tensor and own == np.inf and nonzero:
            # An analytic gradient of all zeros has no scale of its own (a forgotten bias gradient
            # behind vanishing gradients): checked, then, if it passed, again at the scale of the
            # derivatives measured, as _run does where every tensor's gradient is zero.
            saved = copy.deepcopy((report, rng, aside))
            previous, report.largest_numeric = report.largest_numeric, 0.0
            counts = len(report.failures), len(report.kinks)
            _check_tensor(report, at_rest, tensors, name, grad, mode, max_entries, n_directions, rng, aside)
            measured, report.largest_numeric = report.largest_numeric, max(previous, report.largest_numeric)
            again = _scaled_atol(measured, rtol, at_rest, tensors, step)
            if (len(report.failures), len(report.kinks)) == counts and again < atol:
                report, rng, aside = saved
                report.atol = report.tensor_atols[name] = again
                _check_tensor(report, at_rest, tensors, name, grad, mode, max_entries, n_directions, rng, aside)
        else:
            _check_tensor(report, at_rest, tensors, name, grad, mode, max_entries, n_directions, rng, aside)
    report.atol = atol
    report.n_forward = counter.calls
    return report


def _check_tensor(report: GradcheckReport, at_rest: Point, tensors: dict[str, np.ndarray], name: str,
                  grad: np.ndarray, mode: Mode, max_entries: int, n_directions: int,
                  rng: np.random.Generator, aside: np.random.Generator) -> None:
    """Check one tensor at ``report``'s tolerances, recording into it (see :func:`_run`)."""
    # the tensor's own magnitude: what its steps' rounding is charged for (see _gradcheck_probe)
    point = replace(at_rest, largest_value=float(np.max(np.abs(tensors[name]), initial=0.0)))
    sampled = tensors[name].size > max_entries
    kinks = len(report.kinks)
    directions: list[Compared] = []
    entries, entries_failed = np.zeros(0, dtype=np.int64), False
    if mode == "fast":
        directions, doubtful = directional(point, tensors, name, grad, report, rng, n_directions)
        if doubtful:
            entries = _sample(grad.size, rng, max_entries)
            entries_failed = _elementwise(point, tensors, name, grad, report, entries)
            if not entries_failed and not sampled:
                directions = []  # every entry checked and passed: the directions' doubt was noise
    else:
        entries = _sample(grad.size, rng, max_entries)
        entries_failed = _elementwise(point, tensors, name, grad, report, entries)
        if sampled and not entries_failed:
            directions, _ = directional(point, tensors, name, grad, report, aside, n_directions)
    if sampled and not entries_failed and any(d.bad for d in directions):
        found = locate(point, tensors, name, grad, report, aside)
        if found is not None and found not in entries:
            entries_failed = _elementwise(point, tensors, name, grad, report, np.array([found]))
    if len(report.kinks) > kinks and not entries_failed:
        directions = []  # a kink in this tensor, reported as such, explains their miss
    for direction in directions:
        direction.record(report)


def gradcheck_layer(layer: Layer, x: Any, params: Mapping[str, Any] | None = None, *,
                    mode: Mode = "full", dtype: str = "float64", seed: int | None = 0,
                    eps: float | None = None, rtol: float | None = None, atol: float | None = None,
                    max_entries: int = 200, n_directions: int = 3,
                    raise_on_failure: bool = True) -> GradcheckReport:
    """Check ``layer.backward`` against finite differences on input(s) ``x`` and ``params``.

    ``x`` carries the batch axis (at least two examples); a multi-input layer takes a tuple.
    ``params`` defaults to ``layer.init_params`` drawn from ``seed``.
    """
    subject = repr(layer)
    check_options(subject, mode, dtype, seed, eps, rtol, atol, max_entries, n_directions)
    multi = layer.n_inputs > 1
    # One array is never split into inputs: a batch as long as the layer's inputs would be
    # read as that many inputs of one example less, and checked silently on the wrong thing.
    if multi and not (isinstance(x, (tuple, list)) and len(x) == layer.n_inputs):
        if isinstance(x, np.ndarray):
            got = (f"ndarray of {len(x) if x.ndim else 0} (one array of shape {x.shape}; "
                   "give one array per input, in a tuple)")
        else:
            got = f"{type(x).__name__} of {len(x)}" if isinstance(x, (tuple, list)) else type(x).__name__
        raise ShapeError(f"gradcheck of {subject}: takes a tuple of {layer.n_inputs} inputs, got {got}")
    xs = tuple(x) if multi else (x,)
    rng = np.random.default_rng(seed)
    names = [f"x[{k}]" for k in range(len(xs))] if multi else ["x"]
    tensors = {n: checked_array(subject, f"input {n}", a, dtype, batch=True) for n, a in zip(names, xs)}
    shapes = tuple(t.shape[1:] for t in tensors.values())
    in_shape = shapes if multi else shapes[0]
    try:  # the layer's own words for inputs that do not fit it, before any forward
        out_shape = tuple(layer.output_shape(in_shape))
    except Exception as exc:
        detail = str(exc) if isinstance(exc, NnplugError) else f"output_shape raised {exception_text(exc)}"
        raise ShapeError(f"gradcheck of {subject}: inputs of shape {in_shape} (no batch axis): {detail}") from None
    checked = checked_params(subject, layer, params, in_shape, rng, dtype)
    tensors.update({f"param {k}": v for k, v in checked.items()})
    params = checked

    def split(ts: Mapping[str, np.ndarray]) -> tuple[Any, dict[str, np.ndarray]]:
        inputs = tuple(ts[n] for n in names)
        return (inputs if multi else inputs[0]), {k: ts[f"param {k}"] for k in params}

    inp, p = split(tensors)
    before = {name: t.copy() for name, t in tensors.items()}
    y, cache = returns.pair(subject, "forward", layer.forward(p, inp, training=True), "(y, cache)")
    batch = len(tensors[names[0]])
    returns.array(subject, "forward's output", y, (batch, *out_shape))
    # R from a stream of its own: x drawn by the caller from default_rng(seed) would otherwise
    # be R itself, and a layer norm's gradient along its own input is zero
    r = streams(seed)[0].standard_normal(y.shape).astype(dtype)
    dx, grads = returns.pair(subject, "backward", layer.backward(p, cache, r.copy()), "(dx, {name: gradient})")
    if multi and not (isinstance(dx, (tuple, list)) and len(dx) == len(names)):
        got = f"{len(dx)} input gradients" if isinstance(dx, (tuple, list)) else f"{type(dx).__name__} as dx"
        raise PluginError(f"{subject}: backward returned {got}, expected a tuple of {len(names)} input gradients")
    analytic = {n: returns.array(subject, f"backward's d{n}", g, tensors[n].shape)
                for n, g in zip(names, tuple(dx) if multi else (dx,))}
    for k, g in returns.gradients(subject, grads, list(params)).items():
        analytic[f"param {k}"] = returns.array(subject, f"backward's gradient of {k}", g, params[k].shape)
    changed = [name for name, t in tensors.items() if not np.array_equal(t, before[name], equal_nan=True)]
    if changed or set(p) != set(params):  # finite differences of a function that edits its inputs mean nothing
        what = ", ".join(changed) if changed else "the params dict"
        raise PluginError(f"{subject}: forward or backward modified {what} in place; the contract "
                          "forbids it (return new arrays, keep state in the cache)")

    def f(ts: dict[str, np.ndarray]) -> np.ndarray:  # the terms of sum(R * y)
        inp_, p_ = split(ts)
        out, _ = layer.forward(p_, inp_, training=True)
        return r * out  # an output of 1e308 times R: an inf the probe reports (not warned: _Counter)

    report = _run(f"{layer!r}", f, tensors, analytic, mode=mode, dtype=dtype, eps=eps, rtol=rtol,
                  atol=atol, max_entries=max_entries, n_directions=n_directions, seed=seed)
    report.n_forward += 1
    return report.raise_if_failed() if raise_on_failure else report


def gradcheck_loss(loss: Loss, pred: Any, target: Any, *, mode: Mode = "full",
                   dtype: str = "float64", seed: int | None = 0, eps: float | None = None,
                   rtol: float | None = None, atol: float | None = None, max_entries: int = 200,
                   n_directions: int = 3, raise_on_failure: bool = True) -> GradcheckReport:
    """Check ``loss.backward`` (the gradient of the mean loss) against finite differences."""
    check_options(repr(loss), mode, dtype, seed, eps, rtol, atol, max_entries, n_directions)
    tensors = {"pred": checked_array(repr(loss), "pred", pred, dtype, batch=True)}
    target = loss_target(target, tensors["pred"].dtype)  # as a model hands it over
    target_array = np.asarray(target) if not isinstance(target, np.ndarray) else target
    if target_array.dtype.kind == "f" and not np.isfinite(target_array).all():
        raise ShapeError(f"gradcheck of {loss!r}: target holds non-finite values (in {dtype}); finite "
                         "differences need finite values")
    subject = repr(loss)
    value, cache = returns.pair(subject, "forward", loss.forward(tensors["pred"], target), "(value, cache)")
    returns.loss_value(subject, value)
    analytic = {"pred": returns.array(subject, "backward's dpred", loss.backward(cache), tensors["pred"].shape)}

    def f(ts: dict[str, np.ndarray]) -> np.ndarray:
        return np.array([loss.forward(ts["pred"], target)[0]], dtype=np.float64)

    report = _run(f"{loss!r}", f, tensors, analytic, mode=mode, dtype=dtype, eps=eps, rtol=rtol,
                  atol=atol, max_entries=max_entries, n_directions=n_directions, seed=seed)
    report.n_forward += 1
    return report.raise_if_failed() if raise_on_failure else report


def gradcheck_model(model: Any, x: Any, target: Any, *, mode: Mode = "full",
                    dtype: str = "float64", seed: int | None = 0, eps: float | None = None,
                    rtol: float | None = None, atol: float | None = None, max_entries: int = 50,
                    n_directions: int = 3, raise_on_failure: bool = True) -> GradcheckReport:
    """Check a whole model end to end: the parameter gradients of ``loss_and_grads`` (what
    training uses: a node reading the model input gives them through ``param_grads``) and the
    input gradient of ``loss_and_all_grads``."""
    check_options(repr(model), mode, dtype, seed, eps, rtol, atol, max_entries, n_directions)
    model = model.astype(dtype)
    tensors = {"input": checked_array(repr(model), "input", x, dtype, batch=True)}
    for node, ps in model.params.items():
        tensors.update({f"{node}/{k}": checked_array(repr(model), f"params[{node!r}][{k!r}]", v, dtype,
                                                      batch=False) for k, v in ps.items()})

    def params_of(ts: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        return {node: {k: ts[f"{node}/{k}"] for k in ps} for node, ps in model.params.items()}

    _, _, dx = model.loss_and_all_grads(tensors["input"], target, params_of(tensors))
    _, grads = model.loss_and_grads(tensors["input"], target, params_of(tensors))
    analytic = {"input": dx}
    for node, gs in grads.items():
        analytic.update({f"{node}/{k}": g for k, g in gs.items()})

    cast_target = loss_target(target, model.dtype)  # as loss_and_grads hands it over

    def f(ts: dict[str, np.ndarray]) -> np.ndarray:
        pred = model.forward(ts["input"], params_of(ts))
        return np.array([model.loss.forward(pred, cast_target)[0]], dtype=np.float64)

    report = _run(repr(model), f, tensors, analytic, mode=mode, dtype=dtype, eps=eps, rtol=rtol,
                  atol=atol, max_entries=max_entries, n_directions=n_directions, seed=seed)
    report.n_forward += 2
    return report.raise_if_failed() if raise_on_failure else report


def gradcheck(subject: Any, *args: Any, **kwargs: Any) -> GradcheckReport:
    """Check a layer (``gradcheck(layer, x, params=None)``), a loss (``gradcheck(loss, pred,
    target)``) or a model (``gradcheck(model, x, target)``); see the module docstring.

    Raises:
        GradientCheckError: when an entry is out of tolerance or a kink was met (unless
            ``raise_on_failure=False``); its ``report`` names the worst entry.
        PluginError: the layer or loss breaks the contract, whatever ``raise_on_failure``
            says: forward or backward return something other than the contract's pair, arrays
            of the wrong shape, gradients for other names, or edit their inputs in place.
    """
    if isinstance(subject, Layer):
        return gradcheck_layer(subject, *args, **kwargs)
    if isinstance(subject, Loss):
        return gradcheck_loss(subject, *args, **kwargs)
    if hasattr(subject, "loss_and_all_grads"):
        return gradcheck_model(subject, *args, **kwargs)
    raise TypeError(f"gradcheck takes a Layer, a Loss or a Model, got {type(subject).__name__}")
