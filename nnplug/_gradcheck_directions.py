"""Directional derivatives: fast mode's O(1) check of a whole tensor, full mode's check of what
its sample left out, and the bisection that names the entry a failed direction points at.

Along a unit direction ``v`` the central difference ``(f(t + h v) - f(t - h v)) / 2h`` is
compared with ``<grad, v>``, taken over the steps actually made (``t + h v`` rounded to ``t``'s
dtype, minus ``t``) so that the rounding of large entries is not blamed on the gradient.
"""

from __future__ import annotations

import numpy as np

from nnplug._gradcheck_probe import COARSER, Compared, Point, Probe, compared, confirmed, curvature, root_sum_squares
from nnplug._gradcheck_report import GradcheckReport

#: Directions drawn per bisection level before giving up (a random direction can all but miss
#: the one wrong entry: its weight in ``v`` is small by chance).
TRIES_PER_LEVEL = 2


def _along(point: Point, tensors: dict[str, np.ndarray], name: str, analytic: np.ndarray,
           v: np.ndarray, h: float) -> tuple[Probe, float]:
    """The probe along unit direction ``v`` of tensor ``name`` at step ``h``, and ``<grad, v>``
    over the steps taken."""
    t = tensors[name]
    original = t.copy()
    exact = original.astype(np.float64)
    np.add(original, h * v, out=t, casting="unsafe")
    up = t.astype(np.float64) - exact  # the steps taken, each rounded to t's dtype
    f_plus = point.f(tensors)
    np.subtract(original, h * v, out=t, casting="unsafe")
    down = exact - t.astype(np.float64)
    f_minus = point.f(tensors)
    t[...] = original
    probe = point.probe(f_plus, f_minus, h, h)
    return probe, float(np.sum(analytic * (up + down))) / (2 * h)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-300)


def directional(point: Point, tensors: dict[str, np.ndarray], name: str, analytic: np.ndarray,
                report: GradcheckReport, rng: np.random.Generator, n_directions: int) -> tuple[list[Compared], bool]:
    """Directional derivatives of one tensor along random unit directions: the compared
    entries (recorded by the caller) and whether the tensor needs checking entry by entry."""
    scale = root_sum_squares(analytic)
    results: list[Compared] = []
    unresolved = False
    for k in range(n_directions):
        v = _unit(rng.standard_normal(analytic.shape))
        probe, along = _along(point, tensors, name, analytic, v, report.eps)
        kink_test = True
        if probe.verdict(report, along, scale) == "kink":
            # x² near 0 has one-sided slopes of opposite sign: a curve, if the gap shrinks tenfold
            # at a ten times smaller step (as in settle), which then decides without the kink test
            finer = _along(point, tensors, name, analytic, v, report.eps / 10)[0]
            if curvature(probe, finer, report) and finer.verdict(report, along, scale, kink_test=False) != "unresolved":
                probe, kink_test = finer, False
        if probe.verdict(report, along, scale, kink_test=kink_test) == "off":
            # as for an entry (settle): a kink just inside the step (a ReLU input or a max-pool
            # tie the direction crosses) bends the difference; a ten times smaller step stays
            # clear of it and decides. A wrong gradient misses there too.
            closer, closer_along = _along(point, tensors, name, analytic, v, report.eps / 10)
            if closer.verdict(report, closer_along, scale) in ("fits", "kink"):
                probe, along = closer, closer_along
        if probe.verdict(report, along, scale, kink_test=False) == "unresolved":
            # A direction moves every term, and their rounding adds up (float32, large values):
            # a larger step may fit, keeping fast mode at O(1) evaluations; else the entries decide.
            coarse = _coarse_fit(point, tensors, name, analytic, v, report, scale)
            if coarse is None:
                unresolved = True
                continue
            (probe, along), kink_test = coarse, False
        result = compared(report, name, f"direction {k}", along, probe, scale, kink_test=kink_test)
        if result is not None:
            results.append(result)
    return results, unresolved or any(result.bad for result in results)


def _coarse_fit(point: Point, tensors: dict[str, np.ndarray], name: str, analytic: np.ndarray, v: np.ndarray,
                report: GradcheckReport, scale: float) -> tuple[Probe, float] | None:
    """The probe and ``<grad, v>`` at the first step 10 or 100 times larger that fits, unless
    its truncation error could make the fit (:func:`~nnplug._gradcheck_probe.confirmed`)."""
    for factor in COARSER[:2]:
        probe, along = _along(point, tensors, name, analytic, v, report.eps * factor)
        if probe.verdict(report, along, scale, kink_test=False) == "fits":
            def measure(h: float) -> Probe:
                return _along(point, tensors, name, analytic, v, h)[0]

            return (probe, along) if confirmed(probe, measure, report.eps * factor, report, along) else None
    return None


def locate(point: Point, tensors: dict[str, np.ndarray], name: str, analytic: np.ndarray,
           report: GradcheckReport, rng: np.random.Generator) -> int | None:
    """The flat index of an entry a failed direction points at, found by bisection: of the
    candidates' two halves, keep one whose own direction (confined to it) misses; the mistake
    grows relative to the derivative as the half shrinks. About 2 log2(size) probes; None when
    no half misses (a mistake spread too thin to follow)."""
    candidates = np.arange(analytic.size)
    while candidates.size > 1:
        missing = None
        for _ in range(TRIES_PER_LEVEL):
            for half in np.array_split(candidates, 2):
                v = np.zeros(analytic.size)
                v[half] = rng.standard_normal(half.size)
                probe, along = _along(point, tensors, name, analytic, _unit(v).reshape(analytic.shape), report.eps)
                if probe.verdict(report, along, 0.0, kink_test=False) == "off":
                    missing = half
                    break
            if missing is not None:
                break
        if missing is None:
            return None
        candidates = missing
    return int(candidates[0])
