"""Finite-difference verification of layers, losses and whole models.

For a layer the scalar checked is ``f = sum(R * forward(x))`` for a random ``R`` of the
output's shape, whose analytic gradient is ``backward(R)``; for a loss or a model it is the
loss itself. Every input and every parameter is checked, in float64 by default:

* ``mode="full"``: every entry (or a random sample of ``max_entries`` per tensor) by central
  differences ``(f(t + h e_i) - f(t - h e_i)) / 2h``;
* ``mode="fast"``: a few random unit directions ``v`` per tensor, comparing
  ``(f(t + h v) - f(t - h v)) / 2h`` with ``<grad, v>`` (O(1) evaluations per tensor); a
  tensor that fails is then checked entry by entry to name the worst entry.

Kinks (ReLU at 0, max-pool ties) are detected where the one-sided differences
``(f(t+h) - f(t)) / h`` and ``(f(t) - f(t-h)) / h`` disagree, and are reported as such.

A difference is taken term by term (``R * y`` entry by entry for a layer) before it is summed:
a term the step does not change then cancels exactly, however large (an output offset by 1e6,
a mask of -1e9), and the rounding noise left is estimated from the terms that did change:
:data:`NOISE_ULPS` units of float64 rounding of their root sum of squares, over the step. It is
added to the tolerance, so a layer with large outputs is not failed for the differences' own
rounding (on outputs of ordinary size it is far below ``atol``). But it may never exceed
:data:`RESOLUTION` of the derivative (or ``atol``): an entry noisier than that is measured again
at steps 10 to 10,000 times larger, and if it stays unresolved it fails as such, never passed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from nnplug import _returns as returns
from nnplug._gradcheck_inputs import TOLERANCES, check_options, checked_array, checked_params
from nnplug._gradcheck_report import Entry, GradcheckReport, Kink
from nnplug.errors import NnplugError, PluginError, ShapeError, exception_text
from nnplug.layer import Layer, Loss

Mode = Literal["full", "fast"]

KINK_RATIO = 1e-2  # one-sided slopes differing by more than this (relative) mark a kink
#: Rounding allowed per changed term and evaluation, in units of float64's machine epsilon
#: (a layer's own arithmetic, tanh's or exp's error of an ulp or two, and R * y).
NOISE_ULPS = 8.0
#: The largest rounding noise a comparison accepts, as a fraction of the derivative: beyond it
#: a 1% mistake could hide in the noise, and the entry counts as unresolved.
RESOLUTION = 1e-3
#: The larger steps, as multiples of the first, an entry too noisy to resolve is measured at.
COARSER = (1e1, 1e2, 1e3, 1e4)


#: The terms whose sum is the checked scalar (``R * y`` for a layer, the loss for a loss or model).
Terms = Callable[[dict[str, np.ndarray]], np.ndarray]


class _Counter:
    def __init__(self, f: Terms) -> None:
        self.f = f
        self.calls = 0

    def __call__(self, tensors: dict[str, np.ndarray]) -> np.ndarray:
        self.calls += 1
        return np.asarray(self.f(tensors), dtype=np.float64)


@dataclass(frozen=True)
class _Probe:
    """One central difference: the changes of the scalar to the right and left of the point,
    each summed from term-by-term differences, and the rounding noise of the central difference."""

    right: float  # f(t + h) - f(t)
    left: float  # f(t) - f(t - h)
    noise: float  # the likely rounding error of (right + left) / 2h

    @classmethod
    def of(cls, plus: np.ndarray, minus: np.ndarray, at: np.ndarray, h: float) -> _Probe:
        changed = (plus != minus) | (plus != at)
        with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: a NaN the tolerance test rejects
            # independent roundings add up as a root sum of squares, not as a plain sum
            magnitude = float(np.sqrt(np.sum(plus[changed] ** 2) + np.sum(minus[changed] ** 2)))
            noise = NOISE_ULPS * np.finfo(np.float64).eps * magnitude / (2 * h)
            return cls(float(np.sum(plus - at)), float(np.sum(at - minus)), noise)

    def unresolved(self, report: GradcheckReport, h: float) -> bool:
        """The noise is too large beside the derivative to tell a right gradient from a wrong one."""
        numeric = abs(self.right + self.left) / (2 * h)
        return self.noise > max(report.atol, RESOLUTION * numeric)


def _compare(report: GradcheckReport, tensor: str, index: tuple[int, ...] | str,
             analytic: float, probe: _Probe, scale: float, h: float | None = None) -> None:
    h = report.eps if h is None else h
    numeric = (probe.right + probe.left) / (2 * h)
    right, left = probe.right / h, probe.left / h
    # (at a step coarser than eps the one-sided slopes differ by the curvature: no kink test)
    if h <= report.eps and _kinked(report, right, left, scale, probe.noise):
        report.kinks.append(Kink(tensor, index, left, right))
        return
    diff = abs(analytic - numeric)
    rel = diff / max(abs(analytic), abs(numeric), 1e-300) if diff else 0.0
    unresolved = probe.unresolved(report, h)
    entry = Entry(tensor, index, analytic, numeric, rel, probe.noise if unresolved else 0.0)
    tolerance = report.atol + report.rtol * abs(numeric) + probe.noise
    report.max_noise = max(report.max_noise, probe.noise)
    bad = not np.isfinite(analytic) or not diff <= tolerance or unresolved
    # Rank by how far past tolerance an entry is (so noise on tiny values is not "worst"),
    # preferring failures, and a named entry over a random direction.
    badness = diff / tolerance if np.isfinite(diff) and tolerance > 0 else (np.inf if diff else 0.0)
    key = (bool(bad), isinstance(index, tuple), float(badness))
    if report.worst is None or key > report.worst_key:
        report.worst = entry
        report.worst_key = key
    report.worst_by_tensor[tensor] = max(report.worst_by_tensor.get(tensor, 0.0), rel)
    if bad:
        report.failures.append(entry)


def _kinked(report: GradcheckReport, right: float, left: float, scale: float, noise: float) -> bool:
    """The one-sided slopes disagree beyond what a smooth function's curvature and the
    differences' rounding (each one-sided slope carries up to twice the central one's) explain."""
    return abs(right - left) > KINK_RATIO * max(abs(left), abs(right), scale) + 10 * report.atol + 4 * noise


def _off_smoothly(report: GradcheckReport, analytic: float, probe: _Probe, scale: float, h: float) -> bool:
    """The central difference misses ``analytic`` (or is too noisy to say), and the one-sided
    slopes agree well enough that :func:`_compare` would not call it a kink."""
    if _kinked(report, probe.right / h, probe.left / h, scale, probe.noise):
        return False
    numeric = (probe.right + probe.left) / (2 * h)
    tolerance = report.atol + report.rtol * abs(numeric) + probe.noise
    return not np.isfinite(analytic) or not abs(analytic - numeric) <= tolerance or probe.unresolved(report, h)


def _rounding_matters(report: GradcheckReport, probe: _Probe, h: float) -> bool:
    """The difference's rounding noise is a sizeable part of the tolerance (or the step was
    lost in the rounding altogether: nothing changed), so a larger step may settle it."""
    numeric = abs(probe.right + probe.left) / (2 * h)
    return probe.noise > 0.1 * (report.atol + report.rtol * numeric) or (probe.right == probe.left == 0.0)


def _fits(report: GradcheckReport, analytic: float, probe: _Probe, scale: float, h: float) -> bool:
    """No kink, resolved, and within tolerance."""
    return (not _kinked(report, probe.right / h, probe.left / h, scale, probe.noise)
            and not _off_smoothly(report, analytic, probe, scale, h))


def _elementwise(f: _Counter, tensors: dict[str, np.ndarray], name: str, analytic: np.ndarray,
                 f0: np.ndarray, report: GradcheckReport, rng: np.random.Generator, max_entries: int) -> None:
    t = tensors[name]
    flat = np.arange(t.size) if t.size <= max_entries else np.sort(rng.choice(t.size, size=max_entries, replace=False))
    scale = float(np.max(np.abs(analytic))) if analytic.size else 0.0
    view = t.reshape(-1)  # t is a private float copy, perturbed in place and restored

    def probe(i: int, h: float) -> _Probe:
        original = view[i]
        view[i] = original + h
        f_plus = f(tensors)
        view[i] = original - h
        f_minus = f(tensors)
        view[i] = original
        return _Probe.of(f_plus, f_minus, f0, h)

    for i in flat:
        a, h = float(analytic.reshape(-1)[i]), report.eps
        measured = probe(i, h)
        if _off_smoothly(report, a, measured, scale, h):
            # A kink just inside one step (a ReLU input or a max-pool tie within h) bends both
            # one-sided slopes a little, too little to call a kink: a step ten times smaller
            # stays clear of it and decides. Outputs so large that their rounding drowns the
            # difference need a larger step instead. A wrong gradient stays wrong at any step.
            finer = probe(i, h / 10) if not measured.unresolved(report, h) else None
            if finer is not None and not _off_smoothly(report, a, finer, scale, h / 10):
                measured, h = finer, h / 10  # it fits, or shows the kink that was within h
            elif _rounding_matters(report, measured, h):  # else a larger step cannot help
                noisy: tuple[_Probe, float] | None = (measured, h) if measured.unresolved(report, h) else None
                for step in (h * k for k in COARSER):  # adopted only where it fits: a coarse step's
                    again = probe(i, step)  # one-sided slopes differ by the curvature, not a kink
                    if _fits(report, a, again, scale, step):
                        measured, h, noisy = again, step, None
                        break
                    if again.unresolved(report, step) and (noisy is None or again.noise < noisy[0].noise):
                        noisy = again, step
                if noisy is not None:  # never settled: report the step that came closest, as unresolved
                    measured, h = noisy
        index = tuple(int(k) for k in np.unravel_index(i, t.shape))
        _compare(report, name, index, a, measured, scale, h)


def _directional(f: _Counter, tensors: dict[str, np.ndarray], name: str, analytic: np.ndarray,
                 f0: np.ndarray, report: GradcheckReport, rng: np.random.Generator, n_directions: int) -> bool:
    t = tensors[name]
    original = t.copy()
    failed_before = len(report.failures)
    scale = float(np.linalg.norm(analytic))
    unresolved = False
    for k in range(n_directions):
        v = rng.standard_normal(t.shape)
        v /= max(float(np.linalg.norm(v)), 1e-300)
        np.add(original, report.eps * v, out=t)
        f_plus = f(tensors)
        np.subtract(original, report.eps * v, out=t)
        f_minus = f(tensors)
        t[...] = original
        measured = _Probe.of(f_plus, f_minus, f0, report.eps)
        if measured.unresolved(report, report.eps):  # a direction moves every term: leave it to the entries
            unresolved = True
            continue
        _compare(report, name, f"direction {k}", float(np.sum(analytic * v)), measured, scale)
    return unresolved or len(report.failures) > failed_before


def _run(subject: str, f: Terms, tensors: dict[str, np.ndarray],
         analytic: Mapping[str, np.ndarray], *, mode: Mode, dtype: str, eps: float | None,
         rtol: float | None, atol: float | None, max_entries: int, n_directions: int,
         seed: int | None) -> GradcheckReport:
    h, default_rtol, default_atol = TOLERANCES[dtype]
    report = GradcheckReport(subject, mode, dtype, h if eps is None else eps,
                             default_rtol if rtol is None else rtol, default_atol if atol is None else atol)
    rng = np.random.default_rng(seed)
    counter = _Counter(f)
    f0 = counter(tensors)
    for name in tensors:
        grad = np.asarray(analytic[name], dtype=np.float64)  # of the tensor's shape: the callers checked
        if mode == "full" or _directional(counter, tensors, name, grad, f0, report, rng, n_directions):
            _elementwise(counter, tensors, name, grad, f0, report, rng, max_entries)
    report.n_forward = counter.calls
    return report


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
    if multi and not (isinstance(x, (tuple, list, np.ndarray)) and len(x) == layer.n_inputs):
        got = f"{type(x).__name__} of {len(x)}" if isinstance(x, (tuple, list, np.ndarray)) else type(x).__name__
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
    r = rng.standard_normal(y.shape).astype(dtype)
    dx, grads = returns.pair(subject, "backward", layer.backward(p, cache, r.copy()), "(dx, {name: gradient})")
    if multi and not (isinstance(dx, (tuple, list)) and len(dx) == len(names)):
        raise PluginError(f"{subject}: backward returned {type(dx).__name__} as dx, expected a tuple of "
                          f"{len(names)} input gradients")
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
        return r * out

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
    target_array = np.asarray(target) if not isinstance(target, np.ndarray) else target
    if target_array.dtype.kind == "f" and not np.isfinite(target_array).all():
        raise ShapeError(f"gradcheck of {loss!r}: target holds non-finite values; finite differences "
                         "need finite values")
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

    def f(ts: dict[str, np.ndarray]) -> np.ndarray:
        pred = model.forward(ts["input"], params_of(ts))
        return np.array([model.loss.forward(pred, target)[0]], dtype=np.float64)

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
