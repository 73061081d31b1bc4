"""``nnplug gradcheck``'s body: the table, exit codes, type selection, the shrunk reproducer."""

from __future__ import annotations

import re
from typing import Literal

import buggy_layers
import pytest
from kinked import GRID_WITH_ZERO, ShiftedAbs, grid_with_zero

import nnplug
from nnplug import property_runs
from nnplug.property_runs import gradcheck_main, run_type
from nnplug.testing import ConformanceError

REGISTRY = nnplug.load_registry()
BUGGY = nnplug.Registry(plugins=[buggy_layers])


class NoCasesConfig(nnplug.LayerConfig):
    type: Literal["identity_without_cases"] = "identity_without_cases"


class NoCases(nnplug.Layer):
    """y = x, and no gradcheck_cases()."""

    Config = NoCasesConfig

    def output_shape(self, in_shape):
        return in_shape

    def forward(self, params, x, *, training):
        return x.copy(), None

    def backward(self, params, cache, dy):
        return dy.copy(), {}


class NoCasesPlugin:
    @nnplug.hookimpl
    def nnplug_register_layers(self):
        return [NoCases]


WITH_PLAIN = nnplug.Registry(plugins=[NoCasesPlugin()])


def test_every_builtin_type_passes_in_fast_mode_with_a_table(capsys):
    assert gradcheck_main(REGISTRY, [], examples=10, seed=0, mode="fast", quiet=False) == 0
    out = capsys.readouterr().out
    for header in ("type", "plugin", "examples", "worst rel. error", "forward evals", "kinks redrawn", "status"):
        assert header in out
    for name in REGISTRY.types:
        assert name in out
    n = len(REGISTRY.types)
    assert f"{n} types checked, {n} passed, 0 failed; {10 * n} examples" in out


def test_force_color_in_a_log_keeps_the_table_whole_and_shows_no_progress_bar(capsys, monkeypatch):
    # many CI configurations set FORCE_COLOR, which rich takes for a terminal 80 columns wide:
    # the status column read "pass…" and the progress bar's cursor moves went into the log
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("COLUMNS", raising=False)
    assert gradcheck_main(REGISTRY, ["relu", "softmax_cross_entropy"], examples=2, seed=0, mode="fast",
                          quiet=False) == 0
    out, err = capsys.readouterr()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    rows = [line.split("│") for line in plain.splitlines() if "softmax_cross_entropy" in line]
    assert len(rows) == 1 and rows[0][-2].strip() == "passed" and "…" not in plain, plain
    assert err == ""


def test_named_types_only_are_checked_in_full_mode(capsys):
    assert gradcheck_main(REGISTRY, ["relu", "mse", "relu"], examples=5, seed=3, mode="full", quiet=False) == 0
    out = capsys.readouterr().out
    assert "2 types checked, 2 passed" in out and "dense" not in out


def test_types_without_cases_are_listed_when_checking_everything(capsys):
    assert gradcheck_main(WITH_PLAIN, [], examples=3, seed=0, mode="fast", quiet=False) == 0
    out = capsys.readouterr().out
    assert "no gradcheck_cases(), not checked: identity_without_cases" in out


def test_naming_a_type_without_cases_is_a_usage_error(capsys):
    assert gradcheck_main(WITH_PLAIN, ["identity_without_cases"], examples=3, seed=0, mode="fast",
                          quiet=False) == 2
    err = capsys.readouterr().err
    # one line, unwrapped, the way every nnplug command reports a usage error
    assert err.startswith("nnplug: error: identity_without_cases offers no gradcheck_cases(); nothing to check ")
    assert err.count("\n") == 1


def test_an_unknown_type_exits_2_with_the_nearest_match(capsys):
    assert gradcheck_main(REGISTRY, ["dens"], examples=3, seed=0, mode="fast", quiet=False) == 2
    assert "did you mean 'dense'" in capsys.readouterr().err


def _must_not_run(*args, **kwargs):
    raise AssertionError("ran although the options should have been refused")


@pytest.mark.parametrize(("examples", "mode"), [(0, "fast"), (5, "thorough"), (100_001, "fast"), (10**20, "fast")])
def test_bad_options_exit_2(examples, mode, capsys, monkeypatch):
    monkeypatch.setattr(property_runs, "run_type", _must_not_run)  # 10**20 examples would never end
    assert gradcheck_main(REGISTRY, [], examples=examples, seed=0, mode=mode, quiet=False) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnplug: error: --")
    if mode == "fast":
        assert f"--examples must be an integer from 1 to 100,000, got {examples}" in err


def test_the_most_examples_are_accepted(monkeypatch):
    ran = []
    monkeypatch.setattr(property_runs, "run_type", lambda *a, **k: ran.append(k["examples"]) or
                        property_runs.TypeRun("relu", "nnplug", examples=k["examples"]))
    assert gradcheck_main(REGISTRY, ["relu"], examples=100_000, seed=0, mode="fast", quiet=True) == 0
    assert ran == [100_000]


def test_quiet_prints_only_the_summary(capsys):
    assert gradcheck_main(REGISTRY, ["tanh"], examples=3, seed=0, mode="fast", quiet=True) == 0
    out = capsys.readouterr().out
    assert out.strip() == "1 types checked, 1 passed, 0 failed; 3 examples, " + out.split("examples, ")[1].strip()
    assert "status" not in out


def test_runs_are_reproducible_from_the_seed():
    a, b = (run_type(REGISTRY, "dense", examples=8, seed=11, mode="fast") for _ in range(2))
    assert (a.examples, a.n_forward, a.worst_rel_error) == (b.examples, b.n_forward, b.worst_rel_error)


def test_a_failure_prints_a_shrunk_reproducer_that_fails_when_pasted(capsys):
    bug = "buggy_dense_dx_reshaped"
    assert gradcheck_main(BUGGY, [bug], examples=20, seed=0, mode="fast", quiet=False) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "reproduce the shrunk minimal case with:" in out
    assert "# worst entry: x[" in out and "analytic" in out and "numeric" in out
    code = out.split("reproduce the shrunk minimal case with:\n")[1]
    lines = [line.strip() for line in code.splitlines()]
    snippet = "\n".join(lines[:lines.index(next(ln for ln in lines if ln.startswith("# worst")))])
    # Shrunk: the smallest input that shows a transposed-then-reshaped (N, in) matrix is in = 2.
    assert "in_shapes=((2,),)" in snippet and "'units': 1" in snippet
    with pytest.raises(ConformanceError, match="gradient broken"):
        exec(snippet, {})


class CrashConfig(nnplug.LayerConfig):
    type: Literal["crashes_in_backward"] = "crashes_in_backward"


class Crashes(NoCases):
    """y = x; backward raises on inputs wider than 2."""

    Config = CrashConfig

    def backward(self, params, cache, dy):
        if dy.shape[1] > 2:
            raise IndexError(f"index {dy.shape[1]} is out of bounds")
        return dy.copy(), {}

    @classmethod
    def gradcheck_cases(cls):
        from hypothesis import strategies as st

        from nnplug.testing import Case, shapes

        return st.builds(lambda s: Case({}, (s,)), shapes(min_dims=1, max_dims=2))


class BadCasesConfig(nnplug.LayerConfig):
    type: Literal["draws_no_cases"] = "draws_no_cases"


class BadCases(NoCases):
    Config = BadCasesConfig

    @classmethod
    def gradcheck_cases(cls):
        from hypothesis import strategies as st

        return st.just({"config": {}, "in_shapes": [[2]]})


class KinkyConfig(nnplug.LayerConfig):
    type: Literal["sometimes_kinked"] = "sometimes_kinked"


class SometimesKinked(ShiftedAbs):
    """y = |x - c|: c is 0 (on a grid value of grid_with_zero inputs: a kink) or 0.3 (no kink)."""

    Config = KinkyConfig

    @classmethod
    def gradcheck_cases(cls):
        from hypothesis import strategies as st

        from nnplug.testing import Case

        return st.just(Case({}, ((2,),), values=GRID_WITH_ZERO, params="init"))  # values include 0; c is 0 or 0.3


class RaisingCasesConfig(nnplug.LayerConfig):
    type: Literal["cases_raise"] = "cases_raise"


class RaisingCases(NoCases):
    Config = RaisingCasesConfig

    @classmethod
    def gradcheck_cases(cls):
        raise ModuleNotFoundError("No module named 'hypothesis_extras'")


class OddPlugin:
    @nnplug.hookimpl
    def nnplug_register_layers(self):
        return [Crashes, BadCases, SometimesKinked, RaisingCases]


ODD = nnplug.Registry(plugins=[OddPlugin()])


def test_a_crashing_backward_fails_on_its_shrunk_case(capsys):
    outcome = run_type(ODD, "crashes_in_backward", examples=20, seed=0, mode="fast")
    assert outcome.status == "FAILED" and outcome.error.check == "backward"
    assert outcome.worst_rel_error != outcome.worst_rel_error  # NaN: no gradient was compared
    assert "IndexError: index 3 is out of bounds" in str(outcome.error)
    assert outcome.case.in_shapes == ((3,),)


def test_cases_that_are_not_cases_are_an_error_naming_the_type(capsys):
    assert gradcheck_main(ODD, ["draws_no_cases"], examples=3, seed=0, mode="fast", quiet=False) == 1
    out = capsys.readouterr().out
    assert "draws_no_cases: ConfigError: draws_no_cases: expected a nnplug.testing.Case" in out
    assert "ERROR" in out


def test_a_failed_type_reports_its_worst_error_and_forward_count():
    outcome = run_type(BUGGY, "buggy_relu_mask_ge", examples=5, seed=0, mode="full")
    assert outcome.status == "FAILED" and outcome.case is not None and outcome.seed is not None
    assert outcome.worst_rel_error > 1e-3 and outcome.n_forward > 0


def test_a_contract_failure_shows_no_relative_error_in_the_table(capsys):
    # its row read "0.00e+00", as if a gradient had been compared and found exact
    assert gradcheck_main(ODD, ["crashes_in_backward"], examples=5, seed=0, mode="fast", quiet=False) == 1
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("│ crashes_in_backward"))
    assert [cell.strip() for cell in row.split("│")][4] == "-"


def test_an_error_before_any_gradient_shows_no_relative_error_in_the_table(capsys):
    # a gradcheck_cases() that raises compared nothing, yet its row read "0.00e+00"
    assert gradcheck_main(ODD, ["cases_raise"], examples=3, seed=0, mode="fast", quiet=False) == 1
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("│ cases_raise"))
    assert "ERROR" in row and [cell.strip() for cell in row.split("│")][4] == "-"


def test_kinks_met_are_redrawn_and_counted_in_the_table(capsys, monkeypatch):
    monkeypatch.setitem(nnplug.testing.VALUE_KINDS, GRID_WITH_ZERO, grid_with_zero)
    assert gradcheck_main(ODD, ["sometimes_kinked"], examples=10, seed=0, mode="full", quiet=False) == 0
    outcome = run_type(ODD, "sometimes_kinked", examples=10, seed=0, mode="full")
    assert outcome.status == "passed" and outcome.redraws > 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "sometimes_kinked" in line)
    assert f" {outcome.redraws} " in row


def test_a_gradcheck_cases_that_raises_is_an_error_row_not_a_traceback(capsys):
    assert gradcheck_main(ODD, [], examples=3, seed=0, mode="fast", quiet=False) == 1
    out = capsys.readouterr().out
    assert "gradcheck_cases() raised ModuleNotFoundError: No module named 'hypothesis_extras'" in out
    row = next(line for line in out.splitlines() if line.startswith("│ cases_raise"))
    assert "ERROR" in row and "Traceback" not in out


def test_with_autoload_off_the_reproducer_names_the_plugin_so_it_runs_when_pasted(monkeypatch):
    from nnplug.property_runs import TypeRun, reproducer
    from nnplug.testing import Case

    monkeypatch.setenv("NNPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = nnplug.Registry(plugins=["nnplug_layers"])  # as `nnplug -p nnplug_layers gradcheck`
    run = TypeRun("dense", "nnplug", case=Case({"units": 2}, ((3,),)), seed=0)
    code = reproducer(registry, run, "fast")
    assert "registry=nnplug.Registry(plugins=['nnplug_layers'])" in code
    exec(code, {})  # passes: the pasted line finds the type though autoload is off


def test_a_negative_seed_is_a_usage_error(capsys):
    assert gradcheck_main(REGISTRY, ["dense"], examples=3, seed=-1, mode="fast", quiet=False) == 2
    assert "--seed must be a non-negative integer, got -1" in capsys.readouterr().err
