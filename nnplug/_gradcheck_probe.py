"""One finite-difference measurement and what it says (:class:`Probe`), and the search for a
step that settles an entry (:func:`settle`); the checker itself is :mod:`nnplug.gradcheck`.

A probe's noise is the likely rounding error of its central difference, in units of the
derivative: :data:`NOISE_ULPS` units of the checked dtype's rounding of

* the terms the step changed (their root sum of squares): a layer's own arithmetic on outputs
  of size ``|y|`` rounds at ``eps |y|``, however small the change;
* the checked tensor's largest entry times how fast the terms move: a layer that subtracts
  inputs of 3e5 (a centring, a layer norm) loses ``eps * 3e5`` of every input before it
  scales the difference up again.

A probe that moved no term at all is *still*: flat, where the analytic gradient is within
``atol`` of 0 (a masked entry beside a -1e9 fill, a dead ReLU); otherwise its noise is what
the largest term could hide. That noise is assumed; an entry it leaves unresolved has its
rounding measured at nearby steps before it is given up (:func:`_measured`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from nnplug._gradcheck_report import Entry, GradcheckReport, Kink

__all__ = ["Compared", "Measure", "Point", "Probe", "compared", "confirmed", "curvature", "root_sum_squares",
           "settle"]

#: Rounding allowed per changed term and evaluation, in units of the dtype's machine epsilon
#: (a layer's own arithmetic, tanh's or exp's error of an ulp or two, and R * y).
NOISE_ULPS = 8.0
#: The largest rounding noise a comparison accepts, as a fraction of the derivative: beyond it
#: a 1% mistake could hide in the noise, and the entry counts as unresolved.
RESOLUTION = 1e-3
#: The larger steps, as multiples of the first, an entry too noisy to resolve is measured at.
COARSER = (1e1, 1e2, 1e3, 1e4)
#: One-sided slopes differing by more than this (relative) mark a kink.
KINK_RATIO = 1e-2
#: A relative error no rounding explains: coarse steps that resolve an entry, agree with each
#: other and miss it by this much show a wrong gradient, not an unsettled one.
GROSS = 0.1

Verdict = Literal["fits", "off", "kink", "unresolved"]


def root_sum_squares(*arrays: np.ndarray, times: float = 1.0) -> float:
    """``times`` × sqrt(sum of squares) of all entries, scaled first so that outputs of 1e300
    do not overflow (``times`` is applied before the root's factor for the same reason)."""
    largest = max((float(np.max(np.abs(a), initial=0.0)) for a in arrays), default=0.0)
    if largest == 0.0 or not np.isfinite(largest):
        return times * largest
    return times * largest * float(np.sqrt(sum(float(np.sum((a / largest) ** 2)) for a in arrays)))


def _ratio(change: float, step: float) -> float:
    return change / step if step else np.nan  # a step lost in rounding measures nothing


@dataclass(frozen=True)
class Probe:
    """One central difference: the changes of the checked scalar to the right and left of the
    point, each summed from term-by-term differences, over the steps actually taken."""

    right: float  # f(t + step_right) - f(t)
    left: float  # f(t) - f(t - step_left)
    #: t ± h rounded to t's dtype, minus t: not h itself when t is large (1e5 + 1e-6 ≠ 1e5 + h)
    step_right: float
    step_left: float
    #: the likely rounding error of :attr:`numeric`; inf when the probe is unusable (a step lost
    #: in the rounding of t, or an evaluation that was not finite)
    noise: float
    #: no term moved at all: a flat function, or a change lost in the rounding of large terms
    still: bool = False
    #: its central difference moves at a ten times smaller step, or its one-sided slopes stay
    #: apart there: a kink within the step, however small beside atol (see :func:`settle`)
    bent: bool = False

    @classmethod
    def of(cls, plus: np.ndarray, minus: np.ndarray, at: np.ndarray, step_right: float, step_left: float,
           unit: float, largest_value: float) -> Probe:
        """The probe from the terms at ``t + step_right``, ``t - step_left`` and ``t``; ``unit``
        is the checked dtype's machine epsilon, ``largest_value`` the checked tensor's largest entry."""
        with np.errstate(invalid="ignore", over="ignore"):
            # a term the step leaves alone cancels exactly, even an inf; NaN != NaN counts as changed
            changed = (plus != minus) | (plus != at)
            up, down, mid = plus[changed], minus[changed], at[changed]
            if not (np.isfinite(up).all() and np.isfinite(down).all() and np.isfinite(mid).all()):
                return cls(np.nan, np.nan, step_right, step_left, np.inf)
            if step_right <= 0 or step_left <= 0:
                return cls(0.0, 0.0, step_right, step_left, np.inf)
            width = step_right + step_left
            per_unit = NOISE_ULPS * unit / width  # so that outputs near 1e308 give a finite noise
            if not up.size:  # what the largest term could hide (see verdict)
                return cls(0.0, 0.0, step_right, step_left, per_unit * float(np.max(np.abs(at), initial=0.0)), True)
            noise = (root_sum_squares(up, down, times=per_unit)
                     + root_sum_squares(up - down, times=per_unit * largest_value / width))
            return cls(float(np.sum(up - mid)), float(np.sum(mid - down)), step_right, step_left, noise)

    @property
    def numeric(self) -> float:
        return _ratio(self.right + self.left, self.step_right + self.step_left)

    @property
    def slopes(self) -> tuple[float, float]:
        """The one-sided slopes (left, right)."""
        return _ratio(self.left, self.step_left), _ratio(self.right, self.step_right)

    @property
    def gap(self) -> float:
        """How far the one-sided slopes are apart."""
        left, right = self.slopes
        return abs(right - left)

    @property
    def usable(self) -> bool:
        return bool(np.isfinite(self.noise) and np.isfinite(self.numeric))

    def kinked(self, report: GradcheckReport, scale: float) -> bool:
        """The one-sided slopes disagree beyond what a smooth function's curvature and the
        differences' rounding (each one-sided slope carries up to twice the central one's) explain."""
        left, right = self.slopes
        return self.gap > KINK_RATIO * max(abs(left), abs(right), scale) + 10 * report.atol + 4 * self.noise

    def verdict(self, report: GradcheckReport, analytic: float, scale: float, *, kink_test: bool = True) -> Verdict:
        """``kink`` (one-sided slopes apart), ``unresolved`` (too noisy to tell right from wrong,
        or unusable), ``fits`` (within tolerance) or ``off``. ``scale``: the tensor's gradient
        scale, below which a slope difference is not a kink."""
        numeric = self.numeric
        if not self.usable:
            return "unresolved"
        if self.still and abs(analytic) <= report.atol:
            # Flat, as the analytic gradient says. (A dependence hidden under terms too large
            # to move, such as a 1e-6 slope beside outputs of 1e12, is beyond differences; a
            # masked entry beside a -1e9 fill is the common case, and it is flat.)
            return "fits"
        if kink_test and (self.bent or self.kinked(report, scale)):
            return "kink"
        if self.noise > self.resolvable(report):
            return "unresolved"
        tolerance = self.allowed(report) + self.noise
        fits = np.isfinite(analytic) and abs(analytic - numeric) <= tolerance
        return "fits" if fits else "off"

    def allowed(self, report: GradcheckReport) -> float:
        """The tolerance at this derivative before any rounding allowance: atol + rtol |numeric|."""
        return report.atol + report.rtol * abs(self.numeric)

    def resolvable(self, report: GradcheckReport) -> float:
        """The most noise a comparison accepts: :data:`RESOLUTION` of the derivative, or a
        tenth of the relative tolerance where that is coarser (float32's 2%), so that the
        allowance loosens a check by at most that much."""
        return max(report.atol, max(RESOLUTION, report.rtol / 10) * abs(self.numeric))

    def rounding_matters(self, report: GradcheckReport) -> bool:
        """The rounding noise is a sizeable part of the tolerance, or the step was lost in the
        rounding altogether (nothing changed): a larger step may settle it."""
        if not (np.isfinite(self.right) and np.isfinite(self.left)):
            return False  # an evaluation overflowed: a larger step will not help
        if self.still or self.right == self.left == 0.0:
            return True
        return self.noise > min(0.1 * self.allowed(report), self.resolvable(report))

    def relative_error(self, analytic: float, floor: float = 0.0) -> float:
        """|analytic - numeric| over the larger of the two, counting magnitudes below ``floor``
        (the absolute tolerance) as ``floor``: 1e-10 of rounding beside a zero gradient is not
        a relative error of 1."""
        numeric = self.numeric
        diff = abs(analytic - numeric)
        return diff / max(abs(analytic), abs(numeric), floor, 1e-300) if diff else 0.0


#: Measures the checked scalar around one entry at step h.
Measure = Callable[[float], Probe]


@dataclass(frozen=True)
class Point:
    """What every probe of a tensor shares: the terms function (counting its calls), the terms
    at the unmoved point, the dtype's machine epsilon, and the tensor's largest entry."""

    f: Callable[[dict[str, np.ndarray]], np.ndarray]
    at: np.ndarray
    unit: float
    largest_value: float

    def probe(self, plus: np.ndarray, minus: np.ndarray, step_right: float, step_left: float) -> Probe:
        return Probe.of(plus, minus, self.at, step_right, step_left, self.unit, self.largest_value)


@dataclass(frozen=True)
class Compared:
    """One compared value, whether it failed, and |analytic - numeric| over its tolerance."""

    entry: Entry
    bad: bool
    badness: float

    def record(self, report: GradcheckReport) -> None:
        report.record(self.entry, bad=self.bad, badness=self.badness)


def compared(report: GradcheckReport, tensor: str, index: tuple[int, ...] | str, analytic: float,
             probe: Probe, scale: float, kink_test: bool) -> Compared | None:
    """The comparison of one settled probe with ``analytic``; None for a kink, which is
    recorded in ``report`` as such."""
    verdict = probe.verdict(report, analytic, scale, kink_test=kink_test)
    if verdict == "kink":
        left, right = probe.slopes
        report.kinks.append(Kink(tensor, index, left, right))
        return None
    numeric = probe.numeric
    unresolved = verdict == "unresolved"
    if not unresolved:
        report.max_noise = max(report.max_noise, probe.noise)
        report.largest_numeric = max(report.largest_numeric, abs(numeric))
    diff = abs(analytic - numeric)
    tolerance = probe.allowed(report) + (0.0 if unresolved else probe.noise)
    badness = diff / tolerance if np.isfinite(diff) and tolerance > 0 else (np.inf if diff else 0.0)
    rel_error = probe.relative_error(analytic, floor=report.atol)
    entry = Entry(tensor, index, analytic, numeric, rel_error, probe.noise if unresolved else 0.0)
    return Compared(entry, verdict != "fits", float(badness))


def settle(measure: Measure, report: GradcheckReport, analytic: float, scale: float) -> tuple[Probe, bool]:
    """The probe that decides one entry, and whether the kink test applies to it.

    At the checker's step the probe usually fits. If it does not:

    * one-sided slopes apart: a kink, unless a ten times smaller step shows the gap shrinking
      tenfold, as a smooth curve's does (float32's step of 1e-2 on x**4), and fits there;
    * smooth but off: a kink just inside the step (a ReLU input or a max-pool tie within h)
      bends both slopes a little; a ten times smaller step stays clear of it and decides;
    * too noisy (outputs so large that their rounding drowns the difference): steps 10 to
      10,000 times larger, adopted where they fit (their slopes differ by the curvature, so
      no kink test there) with a truncation error too small to make the fit
      (:func:`confirmed`), or where two in a row miss alike; else the least noisy, with its
      rounding measured (:func:`_measured`), reported as unresolved unless that settles it.

    A wrong gradient stays wrong at any step.
    """
    h = report.eps
    first = measure(h)
    verdict = first.verdict(report, analytic, scale)
    if verdict == "fits":
        return first, True
    if verdict == "kink":
        finer = measure(h / 10)
        if not curvature(first, finer, report):
            return first, True
        # The gap is curvature: the finer step decides, or, if it is too noisy (float32's
        # rounding at a step of 1e-3), the first step without the kink test.
        if finer.verdict(report, analytic, scale, kink_test=False) != "unresolved":
            return finer, False
        return first, False
    if verdict == "off":
        finer = measure(h / 10)
        if finer.verdict(report, analytic, scale) in ("fits", "kink"):
            return finer, True
        # Off at both steps. A wrong gradient on a smooth function measures the same at each
        # (the truncation error is of order h²). A kink within the step does not: the central
        # difference moves (ReLUs crossing as a conv weight moves), or the one-sided slopes stay
        # apart at both, by more than the miss, though too little beside atol to be called a
        # kink (a max-pool tie nearer than float32's step of 1e-2).
        apart = (finer.gap > first.gap / 3 and first.gap > 4 * (first.noise + finer.noise)
                 and abs(analytic - first.numeric) <= first.gap)
        if finer.usable and (not _steady(first, finer, report) or apart):
            return replace(first, bent=True), True
    if first.rounding_matters(report):
        coarse = _coarser(measure, report, analytic, scale, first if verdict == "unresolved" else None)
        if coarse is not None:
            return _measured(measure, coarse, report, analytic, scale) or coarse, False
    return first, True


#: Steps, as multiples of an unresolved probe's, at which its rounding is measured (:func:`_measured`).
NEARBY = (1.13, 1.27, 1.42, 1.6)


def _measured(measure: Measure, noisy: Probe, report: GradcheckReport, analytic: float,
              scale: float) -> Probe | None:
    """``noisy`` with its rounding measured instead of assumed, where that settles it as a fit.

    :data:`NOISE_ULPS` is what a layer with long sums may round by; an elementwise curve beside
    outputs of 1e8 rounds by far less. The central differences at a few nearby steps differ by
    their rounding and their truncation ``a h²``: three times the range of what a fitted
    ``a h²`` leaves, but at least one ulp of the assumed noise, is the measured noise. Only a
    fit counts, confirmed against its truncation error with the other steps' noise measured
    alike; a miss stays unresolved (the nearby steps are as coarse, and a correct curve can
    miss there by its truncation)."""
    if noisy.verdict(report, analytic, scale, kink_test=False) != "unresolved" or not noisy.usable:
        return None
    step = (noisy.step_right + noisy.step_left) / 2
    nearby = [measure(step * factor) for factor in NEARBY]
    if not all(p.usable for p in nearby):
        return None
    # D(s) = f' + a s² + rounding: what the curve a s² through them leaves is the rounding
    squares = np.array([step, *(step * f for f in NEARBY)]) ** 2
    values = np.array([noisy.numeric, *(p.numeric for p in nearby)])
    basis = np.stack([np.ones_like(squares), squares / squares[0]], axis=1)
    left_over = values - basis @ np.linalg.lstsq(basis, values, rcond=None)[0]
    noise = max(3 * float(np.ptp(left_over)), noisy.noise / NOISE_ULPS)
    if noise >= noisy.noise:
        return None
    fit = replace(noisy, noise=noise)
    if fit.verdict(report, analytic, scale, kink_test=False) != "fits":
        return None

    def measured_alike(h: float) -> Probe:  # rounding grows as 1/h
        other = measure(h)
        return replace(other, noise=min(other.noise, noise * step / h))

    return fit if confirmed(fit, measured_alike, step, report, analytic) else None


def _coarser(measure: Measure, report: GradcheckReport, analytic: float, scale: float,
             noisy: Probe | None) -> Probe | None:
    """The first larger step that fits, or that misses plainly (two steps in a row agree on a
    derivative far from ``analytic``: a step's truncation error would grow a hundredfold from
    one to the next); else the least noisy unresolved one."""
    missed: Probe | None = None
    for factor in COARSER:
        again = measure(report.eps * factor)
        verdict = again.verdict(report, analytic, scale, kink_test=False)
        if verdict == "fits":
            # (larger steps would only truncate more: the least noisy unresolved one stands)
            return again if confirmed(again, measure, report.eps * factor, report, analytic) else noisy
        if verdict == "off" and missed is not None and _plainly_missed(missed, again, analytic):
            return missed
        missed = again if verdict == "off" else None
        if verdict == "unresolved" and again.usable and (noisy is None or again.noise < noisy.noise):
            noisy = again
    return noisy


def confirmed(fit: Probe, measure: Measure, step: float, report: GradcheckReport, analytic: float) -> bool:
    """A fit at a coarse ``step`` stands if its miss plus its truncation error stay within the
    tolerance. The truncation error grows as h² (sinh(h)/h - 1 is 18% at h = 1 on an exp: a
    gradient 20% too large fits there), so it shows in how far the central difference moves
    at half the step, or, where that one does not clear the fit (its rounding is twice the
    fit's), at twice the step: only then, as a larger step can cross a kink the fit's step
    stays clear of. A still fit has nothing to truncate."""
    return fit.still or any(_truncation_allows(fit, measure(step * ratio), ratio, report, analytic)
                            for ratio in (0.5, 2.0))


def _truncation_allows(fit: Probe, other: Probe, ratio: float, report: GradcheckReport, analytic: float) -> bool:
    """D(r h) - D(h) = (r² - 1) a h² for a smooth curve, a h² being the truncation error of
    D(h): within the tolerance once added to the miss, the noise of both probes allowed for.
    A step that cannot be taken (lost in the rounding of the point) leaves the fit standing:
    it is the finest there is."""
    if other.step_right <= 0 or other.step_left <= 0:
        return True
    spread = abs(ratio * ratio - 1)
    truncation = abs(other.numeric - fit.numeric) / spread
    tolerance = fit.allowed(report) + fit.noise + (fit.noise + other.noise) / spread
    return other.usable and abs(analytic - fit.numeric) + truncation <= tolerance


def curvature(first: Probe, finer: Probe, report: GradcheckReport) -> bool:
    """Whether one-sided slopes apart at ``first`` are a smooth curve's, not a kink: the gap
    shrinks about tenfold at the ten times smaller step of ``finer``, and the central
    differences agree at both (their error is of order h²); a kink between h/10 and h shrinks
    the gap too, but moves the central difference."""
    return finer.usable and _steady(first, finer, report) and 10 / 3 * finer.gap <= first.gap <= 30 * finer.gap


def _steady(first: Probe, finer: Probe, report: GradcheckReport) -> bool:
    """The central differences at two steps agree within the tolerance and both noises."""
    return abs(finer.numeric - first.numeric) <= first.allowed(report) + first.noise + finer.noise


def _plainly_missed(first: Probe, second: Probe, analytic: float) -> bool:
    """Two resolved derivatives that agree to a tenth of how far both miss ``analytic`` and miss
    it by more than :data:`GROSS` (relative), each with one-sided slopes that agree as closely (a
    kink crossed by the coarse steps, a max-pool's window max, bends them apart)."""
    miss = abs(first.numeric - analytic)
    straight = all(p.gap <= 0.1 * miss for p in (first, second))
    return straight and abs(first.numeric - second.numeric) <= 0.1 * miss and first.relative_error(analytic) > GROSS
