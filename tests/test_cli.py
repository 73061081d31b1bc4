"""The ``nnplug`` command: every subcommand in process, once as a real subprocess, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from runkit import tiny_model

import nnplug
from nnplug import cli
from nnplug.cli import main

EXAMPLES = Path(__file__).parent.parent / "examples"
SUBCOMMANDS = ["plugins", "validate", "train", "evaluate", "gradcheck", "schema"]


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nnplug {nnplug.__version__}"


@pytest.mark.parametrize("command", [[], *[[c] for c in SUBCOMMANDS]], ids=["top", *SUBCOMMANDS])
def test_help_on_every_subcommand(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nnplug")
    if not command:
        assert all(c in out for c in SUBCOMMANDS)


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["validate"], ["train", "m.yaml", "--epochs", "x"],
                                  ["gradcheck", "--mode", "slow"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_plugins_lists_distribution_version_types_and_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    header, _, row = out.splitlines()[:3]
    assert header.split() == ["plugin", "distribution", "version", "status", "layer", "types"]
    assert row.split()[:4] == ["nnplug_layers", "nnplug", nnplug.__version__, "loaded"]
    assert "dense" in row and "softmax_cross_entropy" in row


def test_plugins_shows_blocked_and_failed_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    # The table still lists everything, then the failed -p plugin is an error (status 2).
    assert main(["-p", "no:nnplug_layers", "-p", "nnplug_test_no_such_module", "plugins"]) == 2
    out, err = capsys.readouterr()
    assert "blocked" in out and "failed" in out
    assert "nnplug_test_no_such_module: no installed plugin (entry-point or distribution name) and no " \
           "importable module is named 'nnplug_test_no_such_module' (installed plugins: nnplug_layers (nnplug))" in out
    assert "plugin 'nnplug_test_no_such_module' given with -p failed to load" in err


def test_plugins_lists_a_blocked_plugin_without_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-p", "no:nnplug_layers", "plugins"]) == 0
    assert "blocked" in capsys.readouterr().out


def test_a_plugin_given_with_p_that_fails_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-p", "nnplug_test_no_such_module", "validate", str(EXAMPLES / "digits_mlp.yaml")]) == 2
    assert "given with -p failed to load" in capsys.readouterr().err


def test_blocking_the_builtin_layers_makes_their_types_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES / "digits_mlp.yaml"), "-p", "no:nnplug_layers"]) == 2
    err = capsys.readouterr().err
    assert "unknown type 'flatten'" in err and "Traceback" not in err


def test_p_loads_a_plugin_when_autoload_is_disabled(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NNPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    model = str(EXAMPLES / "digits_mlp.yaml")
    assert main(["validate", model]) == 2
    capsys.readouterr()
    assert main(["-p", "nnplug_layers", "validate", model]) == 0


def test_validate_prints_the_summary_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES / "digits_mlp.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["node", "type", "inputs", "output", "shape", "params"]
    assert "hidden" in out and "4,810 parameters in total" in out


def test_config_errors_print_every_problem_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("input: [1, 8, 8]\nlayers:\n  - {type: flaten}\n  - {type: dense}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count(str(path)) == 3  # three problems, one line each
    assert "layers[0]: unknown type 'flaten'" in err and "layers[1] (dense) -> units" in err
    assert "loss: missing" in err and "Traceback" not in err


def test_a_bug_in_nnplug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "schema", broken)
    with pytest.raises(ZeroDivisionError):
        main(["schema"])


def test_schema_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "dense" in schema["properties"]["layers"]["items"]["discriminator"]["mapping"]


def test_train_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", str(tiny_model(tmp_path)), "--out", str(run), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and f"saved run to {run}" in out
    assert main(["evaluate", str(run)]) == 0
    assert "validation examples" in capsys.readouterr().out
    assert main(["train", str(tiny_model(tmp_path)), "--out", str(run)]) == 2  # never overwrites a run
    assert "--resume" in capsys.readouterr().err


def test_train_default_run_directory_is_under_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model_file = tiny_model(tmp_path, epochs=1)
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(model_file), "--quiet"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("tiny-") and (run / "manifest.json").is_file()
    assert f"saved run to {Path('runs') / run.name}" in capsys.readouterr().out


def test_a_model_name_that_is_a_path_still_names_a_run_inside_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model_file = tiny_model(tmp_path, epochs=1)
    description = yaml.safe_load(model_file.read_text())
    model_file.write_text(yaml.safe_dump({**description, "name": "../../escaped/my model"}))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["train", str(model_file), "--quiet"]) == 0
    (run,) = (work / "runs").iterdir()  # nothing was written beside or above runs/
    assert run.name.startswith("escaped_my_model-") and sorted(p.name for p in work.iterdir()) == ["runs"]
    assert not (tmp_path / "escaped").exists()


def test_train_overrides_reach_the_resolved_model_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["train", str(tiny_model(tmp_path)), "--out", str(run), "--quiet",
            "--epochs", "1", "--batch-size", "7", "--lr", "0.5", "--seed", "3"]
    assert main(argv) == 0
    resolved = json.loads((run / "model.json").read_text())
    assert resolved["seed"] == 3 and resolved["train"]["batch_size"] == 7
    assert resolved["train"]["epochs"] == 1 and resolved["train"]["optimizer"]["lr"] == 0.5
    assert Path(resolved["data"]["path"]).is_absolute()


def test_train_refuses_bad_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tiny_model(tmp_path)), "--out", str(tmp_path / "r"), "--lr", "-1"]) == 2
    assert "train -> optimizer.lr" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--lr", "11", "--lr (train -> optimizer.lr): Input should be less than or equal to 10 (got 11.0)"),
    ("--batch-size", "100000000", "--batch-size (train -> batch_size): Input should be less than or equal to"),
    ("--seed", "-3", "--seed (seed): expected an int from 0 to 2**63 - 1, got -3"),
    ("--epochs", "1000000", "--epochs: expected a number from 1 to 100,000, got 1000000"),
])
def test_an_override_out_of_range_is_blamed_on_its_option_not_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str,
) -> None:
    model_file = tiny_model(tmp_path)
    assert main(["train", str(model_file), "--out", str(tmp_path / "r"), option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nnplug: error: {message}") and "(line" not in err and str(model_file) not in err


def test_resume_caps_epochs_as_a_fresh_run_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", str(tiny_model(tmp_path, epochs=1)), "--out", str(run), "--quiet"]) == 0
    assert main(["train", "--resume", str(run), "--epochs", str(10**12)]) == 2
    assert "--epochs: expected a number from 1 to 100,000" in capsys.readouterr().err


def test_gradcheck_runs_the_property_runs(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("nnplug.property_runs")
    assert main(["gradcheck", "dense", "relu", "--examples", "2", "--quiet"]) == 0
    assert main(["gradcheck", "no_such_type", "--examples", "1"]) == 2


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning:nnplug"}
    return subprocess.run([sys.executable, "-m", "nnplug", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


def test_every_command_as_a_real_subprocess(tmp_path: Path) -> None:
    model_file = tiny_model(tmp_path, epochs=2)
    assert _run("--version", cwd=tmp_path).stdout.startswith("nnplug ")
    assert "nnplug_layers" in _run("plugins", cwd=tmp_path).stdout
    assert "parameters in total" in _run("validate", str(model_file), cwd=tmp_path).stdout
    train = _run("train", str(model_file), "--out", "run", cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    assert train.stderr == ""  # no progress bar when stderr is not a terminal
    assert "saved run to run" in train.stdout
    assert "accuracy" in _run("evaluate", "run", cwd=tmp_path).stdout
    assert json.loads(_run("schema", cwd=tmp_path).stdout)["title"] == "nnplug model file"
    bad = _run("validate", "absent.yaml", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr == "nnplug: error: absent.yaml: no such model file\n"
    try:
        import nnplug.property_runs  # noqa: F401
    except ImportError:
        return
    assert _run("gradcheck", "relu", "--examples", "6", "--quiet", cwd=tmp_path).returncode == 0
    # hypothesis's source-constants cache would otherwise land in ./.hypothesis
    assert not (tmp_path / ".hypothesis").exists()


def _regression_model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 3))
    np.savez(tmp_path / "reg.npz", x=x, y=x @ rng.standard_normal((3, 2)))
    description = {"name": "reg", "input": [3], "layers": [{"type": "dense", "units": 2}],
                   "loss": {"type": "mse"}, "data": {"source": "npz", "path": "reg.npz", "validation": 0.25},
                   "train": {"epochs": 1, "batch_size": 10}}
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump(description, sort_keys=False))
    return path


def test_a_regression_run_ends_on_its_validation_loss_and_refuses_min_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", str(_regression_model(tmp_path)), "--out", str(run), "--quiet"]) == 0
    assert re.search(r"saved run to .* \(validation loss \d\.\d{3}\d*(e[-+]\d+)?, ", capsys.readouterr().out)
    assert main(["evaluate", str(run), "--min-accuracy", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--min-accuracy: the run's loss (mse) reports no accuracy" in err and "Traceback" not in err
    # a plugin author whose classification loss shows "n/a" learns which method gives one
    assert "(its class, from nnplug, defines no accuracy(pred, target))" in err


def test_min_accuracy_refused_for_an_in_process_plugins_loss_names_the_plugin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _regression_model(tmp_path)  # its mse swapped for a loss of a module given with -p
    model.write_text(model.read_text().replace("type: mse", "type: buggy_mse_factor"))
    run = tmp_path / "run"
    assert main(["-p", "buggy_layers", "train", str(model), "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["-p", "buggy_layers", "evaluate", str(run), "--min-accuracy", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "(its class, from plugin 'buggy_layers', defines no accuracy" in err, err  # was "from -"


@pytest.mark.parametrize(("raised", "message"), [
    (KeyboardInterrupt(), "nnplug: error: interrupted\n"),  # no run directory to speak of
    (MemoryError("Unable to allocate 64.0 GiB"),
     "nnplug: error: validate: out of memory (Unable to allocate 64.0 GiB); the model or data is too large"),
])
def test_an_interrupt_or_exhausted_memory_outside_training_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], raised: BaseException, message: str,
) -> None:
    def raising(*args: object) -> int:
        raise raised

    monkeypatch.setitem(cli.COMMANDS, "validate", raising)
    assert main(["validate", "any.yaml"]) in (2, 130)
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names are bytes")
def test_a_file_name_that_is_not_utf8_is_echoed_escaped_not_a_traceback(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/bad\xff.yaml"
    with open(name, "wb") as f:
        f.write(tiny_model(tmp_path).read_bytes())
    result = subprocess.run([sys.executable, "-m", "nnplug", "validate", name], capture_output=True,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(b"bad\\udcff.yaml: valid") and not result.stderr


def test_an_empty_out_is_refused_not_taken_as_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(tiny_model(tmp_path)), "--out", ""]) == 2
    assert "--out: expected a directory, got an empty string" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_train_names_the_file_and_line_of_a_node_that_does_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_file = tmp_path / "bad.yaml"
    model_file.write_text("input: [1, 8, 8]\nlayers:\n  - {type: flatten}\n"
                          "  - {type: conv2d, filters: 2, kernel_size: 3}\n"
                          "loss: {type: softmax_cross_entropy}\ndata: {source: digits}\n")
    assert main(["validate", str(model_file)]) == 2
    validate_err = capsys.readouterr().err
    assert main(["train", str(model_file), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    train_err = capsys.readouterr().err
    assert train_err == validate_err
    assert train_err.startswith(f"nnplug: error: {model_file}: layers[1] 'conv2d_1' (conv2d): ")
    assert train_err.rstrip().endswith("(line 4)") and not (tmp_path / "run").exists()


def test_train_reports_an_empty_data_path_as_validate_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_file = tmp_path / "m.yaml"
    model_file.write_text("input: [4]\nlayers: [{type: dense, units: 2}]\nloss: {type: softmax_cross_entropy}\n"
                          "data: {source: npz, path: ''}\n")
    assert main(["validate", str(model_file)]) == 2
    validate_err = capsys.readouterr().err
    assert main(["train", str(model_file), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert capsys.readouterr().err == validate_err
    assert "data -> path: String should have at least 1 character" in validate_err
