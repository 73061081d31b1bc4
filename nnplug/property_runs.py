"""Property-based gradient runs over installed layer types: the body of ``nnplug gradcheck``.

For each type, hypothesis draws cases from its ``gradcheck_cases()`` and seeds, and
:func:`nnplug.testing.check` runs the whole layer contract and the gradient check on each.
A failure is shrunk by hypothesis to a minimal case, printed as a reproducer.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nnplug._harness import CheckResult, ConformanceError, check
from nnplug._strategies import Case, cases_for, is_checkable
from nnplug.gradcheck import Mode
from nnplug.layer import Loss
from nnplug.registry import Registry
from nnplug.testing import seeds

MODES = ("fast", "full")
#: The most examples per type (``--examples``): about an hour of a type's checks; more is a typo.
MAX_EXAMPLES = 100_000


@dataclass
class TypeRun:
    """The outcome of the property-based run of one type."""

    type_name: str
    plugin: str
    examples: int = 0  # checks run, shrinking included
    worst_rel_error: float = 0.0  # NaN when it failed on a contract property, before any gradient
    n_forward: int = 0
    redraws: int = 0  # kinks met and redrawn
    status: str = "passed"  # passed | FAILED | ERROR
    error: BaseException | None = None
    case: Case | None = None  # the shrunk minimal failing case
    seed: int | None = None


def _plugin_label(registry: Registry, name: str) -> str:
    info = registry.plugin_of(name)
    return info.name if info.distribution == "-" else info.distribution


def run_type(registry: Registry, name: str, *, examples: int, seed: int, mode: Mode,
             on_example: Callable[[], None] | None = None) -> TypeRun:
    """Run ``examples`` hypothesis examples of one type; a failure is shrunk, not raised."""
    outcome = TypeRun(name, _plugin_label(registry, name))
    cls = registry.get(name)
    last: dict[str, Any] = {}

    def body(case: Case, case_seed: int) -> None:
        last.update(case=case, seed=case_seed)
        outcome.examples += 1
        if on_example is not None:
            on_example()
        result: CheckResult = check(cls, case, seed=case_seed, mode=mode, registry=registry)
        outcome.n_forward += result.n_forward
        outcome.redraws += result.redraws
        outcome.worst_rel_error = max(outcome.worst_rel_error, result.report.max_rel_error)

    # Programmatic use: reproducible from ``seed``, no example database, the shrunk case
    # reported by us rather than printed by hypothesis.
    run = settings(max_examples=examples, database=None, deadline=None, derandomize=False,
                   report_multiple_bugs=False, print_blob=False, verbosity=Verbosity.quiet,
                   phases=(Phase.generate, Phase.shrink))
    try:
        hypothesis_seed(seed)(run(given(case=cases_for(cls), case_seed=seeds())(body)))()
    except ConformanceError as exc:
        outcome.status, outcome.error, outcome.case, outcome.seed = "FAILED", exc, exc.case, exc.seed
        if exc.report is not None:
            outcome.worst_rel_error = exc.report.max_rel_error
            outcome.n_forward += exc.report.n_forward
        else:  # a broken contract property: no gradient was compared, so no error to show
            outcome.worst_rel_error = float("nan")
    except Exception as exc:  # a plugin that crashes is reported as such, on its minimal case
        outcome.status, outcome.error = "ERROR", exc
        outcome.case, outcome.seed = last.get("case"), last.get("seed")
        if outcome.n_forward == 0:  # no example got as far as a gradient: none to show
            outcome.worst_rel_error = float("nan")
    return outcome


def reproducer(registry: Registry, run: TypeRun, mode: str) -> str:
    """Python that re-runs the failing check, plus the worst gradient entry if there is one."""
    info = registry.plugin_of(run.type_name)
    cls = registry.get(run.type_name)
    fn = "check_loss" if issubclass(cls, Loss) else "check_layer"
    # The plugin must be named where the default registry would not load it: an in-process
    # plugin, or any plugin while autoload is off (NNPLUG_DISABLE_PLUGIN_AUTOLOAD, -p NAME).
    named = info.distribution == "-" or bool(registry.not_autoloaded)
    reg = f", registry=nnplug.Registry(plugins=[{info.name!r}])" if named else ""
    lines = ["import nnplug" if reg else "", f"from nnplug.testing import Case, {fn}",
             f"{fn}({run.type_name!r}, {run.case!r}, seed={run.seed}, mode={mode!r}{reg})"]
    report = getattr(run.error, "report", None)
    if report is not None and report.worst is not None:
        lines.append(f"# worst entry: {report.worst}")
    return "\n".join(line for line in lines if line)


@contextlib.contextmanager
def _progress(console: Console, enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    progress = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=True)
    with progress:
        yield progress


def _table(runs: list[TypeRun], mode: str, seed: int) -> Table:
    table = Table(title=f"nnplug gradcheck ({mode} mode, seed {seed})")
    table.add_column("type", no_wrap=True)
    table.add_column("plugin", no_wrap=True)
    for header in ("examples", "worst rel. error", "forward evals", "kinks redrawn"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for r in runs:
        style = "green" if r.status == "passed" else "bold red"
        worst = "-" if r.worst_rel_error != r.worst_rel_error else f"{r.worst_rel_error:.2e}"  # NaN: none
        table.add_row(r.type_name, r.plugin, str(r.examples), worst,
                      str(r.n_forward), str(r.redraws), f"[{style}]{r.status}[/]")
    return table


def gradcheck_main(registry: Registry, types: list[str], *, examples: int, seed: int, mode: str,
                   quiet: bool) -> int:
    """Check the named types (all types with ``gradcheck_cases()`` when none is named).

    Prints progress, a table (type, plugin, examples, worst relative error, forward
    evaluations, kinks redrawn, status) and, for each failure, the shrunk minimal case as a
    reproducer. ``quiet`` prints only failures and a summary line.

    Returns:
        0 when every type passed, 1 when one failed, 2 on a usage error (an unknown type, a
        named type without cases, a bad mode or number of examples).
    """
    out = Console(highlight=False, soft_wrap=True)  # reproducers must not be wrapped
    # rich takes FORCE_COLOR (set by many CI configurations) to mean a terminal, 80 columns
    # wide when it cannot ask one: the real stream decides, so a log's table is not cut to
    # "pass…" and gets no progress bar's cursor moves, colours or not
    if not _isatty(sys.stdout):
        out.width = max(out.width, 160)  # the table fits a log or a pipe
    err = Console(stderr=True, highlight=False)
    if mode not in MODES:
        return _usage_error(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(examples, bool) or not isinstance(examples, int) or not 1 <= examples <= MAX_EXAMPLES:
        return _usage_error(f"--examples must be an integer from 1 to {MAX_EXAMPLES:,}, got {examples!r:.40}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:  # as train's --seed
        return _usage_error(f"--seed must be a non-negative integer, got {seed!r}")
    for name in types:
        if name not in registry:
            return _usage_error(registry.unknown_type_message(name))
    if types:
        without = [n for n in dict.fromkeys(types) if not is_checkable(registry.get(n))]
        if without:
            verb = "offers" if len(without) == 1 else "offer"
            return _usage_error(f"{', '.join(without)} {verb} no gradcheck_cases(); nothing to check "
                                "(the layer's class method gradcheck_cases() returns the cases)")
        names = list(dict.fromkeys(types))
    else:
        names = [n for n in registry.types if is_checkable(registry.get(n))]
        without = [n for n in registry.types if n not in names]
        if without and not quiet:
            out.print(f"no gradcheck_cases(), not checked: {', '.join(without)}", markup=False)
    if not names:  # a check that checked nothing must not pass (in CI, say)
        if not registry.types:
            why = registry.not_autoloaded or "every plugin failed or was blocked: see `nnplug plugins`"
            return _usage_error(f"no layer or loss types are registered ({why}); nothing to check")
        return _usage_error("no installed type offers gradcheck_cases(); nothing to check")

    runs: list[TypeRun] = []
    with _progress(err, enabled=not quiet and err.is_terminal and _isatty(sys.stderr)) as progress:
        for name in names:
            task = progress.add_task(name, total=examples) if progress is not None else None

            def tick(task: Any = task) -> None:
                if progress is not None:
                    progress.advance(task)

            runs.append(run_type(registry, name, examples=examples, seed=seed, mode=mode,  # type: ignore[arg-type]
                                 on_example=tick))
            if progress is not None and task is not None:
                progress.remove_task(task)

    failed = [r for r in runs if r.status != "passed"]
    if not quiet:
        out.print(_table(runs, mode, seed))
    for r in failed:
        header = "" if isinstance(r.error, ConformanceError) else f"{r.type_name}: {type(r.error).__name__}: "
        out.print(f"\n{header}{r.error}", markup=False)
        if r.case is not None:
            out.print("reproduce the shrunk minimal case with:", markup=False)
            out.print(_indent(reproducer(registry, r, mode)), markup=False)
    total_forward = sum(r.n_forward for r in runs)
    out.print(f"{len(runs)} types checked, {len(runs) - len(failed)} passed, {len(failed)} failed; "
              f"{sum(r.examples for r in runs)} examples, {total_forward} forward evaluations",
              markup=False)
    return 1 if failed else 0


def _isatty(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (not a pipe, a file or pytest's capture)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):  # None, or closed
        return False


def _usage_error(message: str) -> int:
    """Print a usage error the way every other nnplug command does (one unwrapped line); 2."""
    print(f"nnplug: error: {message}", file=sys.stderr)
    return 2


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
