"""What a gradient check reports: the compared entries, the kinks met, the verdict
(:class:`GradcheckReport`, re-exported by :mod:`nnplug.gradcheck` and ``nnplug``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nnplug.errors import GradientCheckError


def _location(tensor: str, index: tuple[int, ...] | str) -> str:
    """``x[1, 0]`` for an entry, ``x direction 0`` for a directional derivative."""
    if isinstance(index, tuple):
        return f"{tensor}[{', '.join(map(str, index))}]"
    return f"{tensor} {index}"


@dataclass
class Entry:
    """One compared value: an entry of a tensor, or a directional derivative."""

    tensor: str
    index: tuple[int, ...] | str
    analytic: float
    numeric: float
    rel_error: float
    #: the rounding noise of the differences, when it was too large to tell right from wrong
    unresolved_noise: float = 0.0

    def __str__(self) -> str:
        text = (f"{_location(self.tensor, self.index)}: analytic {self.analytic:.8g}, numeric {self.numeric:.8g}, "
                f"relative error {self.rel_error:.3g}")
        if self.unresolved_noise == float("inf"):
            text += (" (unresolved: the function is not finite at this point or within one step of it, or the "
                     "step is lost in the rounding of the point itself; draw smaller values, or give nnplug.gradcheck "
                     "a larger eps)")
        elif self.unresolved_noise:
            text += (f" (unresolved: rounding leaves this difference uncertain by {self.unresolved_noise:.3g}, "
                     "as large outputs or inputs beside the step do, and larger steps did not settle it; "
                     "give nnplug.gradcheck a larger eps)")
        return text


@dataclass
class Kink:
    """A point where the function is not differentiable: the one-sided slopes differ."""

    tensor: str
    index: tuple[int, ...] | str
    left: float
    right: float

    def __str__(self) -> str:
        return f"{_location(self.tensor, self.index)}: left slope {self.left:.6g}, right slope {self.right:.6g}"


@dataclass
class GradcheckReport:
    """The outcome of one check; ``ok`` when nothing failed and no kink was met."""

    subject: str
    mode: str
    dtype: str
    eps: float
    rtol: float
    atol: float
    #: the default atol was lowered to rtol × the largest gradient (every gradient is small)
    atol_scaled: bool = False
    #: the largest |numeric| derivative resolved (what a gradient of all zeros is scaled by)
    largest_numeric: float = field(default=0.0, repr=False)
    n_forward: int = 0
    #: the largest rounding-noise allowance added to a tolerance (see the module docstring)
    max_noise: float = 0.0
    worst: Entry | None = None
    failures: list[Entry] = field(default_factory=list)
    kinks: list[Kink] = field(default_factory=list)
    worst_by_tensor: dict[str, float] = field(default_factory=dict)
    #: tensors whose gradients are all small, checked at an atol lowered to their scale
    tensor_atols: dict[str, float] = field(default_factory=dict)
    # How ``worst`` was ranked: (out of tolerance, entry rather than direction, |diff| / tolerance).
    worst_key: tuple[bool, bool, float] = field(default=(False, False, -1.0), repr=False)

    def record(self, entry: Entry, *, bad: bool, badness: float) -> None:
        """Count one compared entry; ``badness`` is |analytic - numeric| over its tolerance."""
        # Rank by how far past tolerance an entry is (so noise on tiny values is not "worst"),
        # preferring failures, and a named entry over a random direction.
        key = (bad, isinstance(entry.index, tuple), badness)
        if self.worst is None or key > self.worst_key:
            self.worst, self.worst_key = entry, key
        self.worst_by_tensor[entry.tensor] = max(self.worst_by_tensor.get(entry.tensor, 0.0), entry.rel_error)
        if bad:
            self.failures.append(entry)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.kinks

    def __bool__(self) -> bool:
        """:attr:`ok`: a dataclass is otherwise always true, so ``assert report`` (with
        ``raise_on_failure=False``) would pass a wrong gradient or a kink."""
        return self.ok

    @property
    def max_rel_error(self) -> float:
        return self.worst.rel_error if self.worst else 0.0

    def __str__(self) -> str:
        status = "passed" if self.ok else ("met a kink" if self.kinks and not self.failures else "FAILED")
        lines = [f"gradient check of {self.subject} ({self.mode} mode, {self.dtype}): {status}",
                 f"  tolerance: |analytic - numeric| <= {self.atol:g} + {self.rtol:g} * |numeric|"
                 f"{' (atol scaled to the largest gradient)' if self.atol_scaled else ''}, "
                 f"step {self.eps:g}; {self.n_forward} forward evaluations"]
        if self.max_noise > 0.1 * self.atol:  # large outputs: the differences' own rounding was allowed for
            lines[-1] += f"; up to {self.max_noise:.3g} more allowed for rounding in the differences"
        if self.tensor_atols:
            lowered = ", ".join(f"{name} {value:.3g}" for name, value in self.tensor_atols.items())
            lines.append(f"  atol lowered to the scale of tensors whose gradients are all small: {lowered}")
        if self.worst:
            lines.append(f"  worst entry: {self.worst}")
        if self.failures:
            directions = sum(isinstance(f.index, str) for f in self.failures)  # fast mode's probes
            counts = [f"{n} {one if n == 1 else many}" for n, one, many in (
                (len(self.failures) - directions, "entry", "entries"),
                (directions, "directional derivative", "directional derivatives")) if n]
            lines.append(f"  {' and '.join(counts)} out of tolerance; tensors: "
                         + ", ".join(sorted({f.tensor for f in self.failures})))
            unresolved = sum(f.unresolved_noise > 0 for f in self.failures)
            if unresolved:
                advice = ("; a float64 check (dtype='float64') rounds 2**29 times finer"
                          if self.dtype != "float64" else "")
                lines.append(f"  {unresolved} of them could not be resolved: finite differences cannot check "
                             f"them at these steps (values too large beside the step, or not finite){advice}")
            named = {f.tensor for f in self.failures if isinstance(f.index, tuple)}
            hidden = sorted({f.tensor for f in self.failures if isinstance(f.index, str)} - named)
            if hidden:
                lines.append(f"  the directional derivatives of {', '.join(hidden)} fail, yet every entry "
                             "sampled passed: the mistake is in entries the sample missed (raise max_entries "
                             "to find them)")
        for kink in self.kinks[:3]:
            lines.append(f"  non-differentiable point (kink) at {kink}; draw inputs away from it")
        return "\n".join(lines)

    def raise_if_failed(self) -> GradcheckReport:
        if not self.ok:
            raise GradientCheckError(str(self), self)
        return self
