"""The test suite passes whatever environment starts it: a pytest run in a subprocess, started
the way a script, a CI runner or a user's shell may start it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_ctrl_c_tests_pass_when_pytest_starts_with_sigint_ignored() -> None:
    # `pytest &` in a non-interactive shell script starts pytest with SIGINT ignored; the
    # tests that send themselves SIGINT must not depend on how pytest was started
    tests = ["tests/test_train.py::test_resumed_run_reproduces_the_uninterrupted_run",
             "tests/test_cli_messages.py::test_an_interrupted_run_tells_the_resume_command_with_its_plugin_options"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                             "-q", *tests], capture_output=True, text=True, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_the_tests_that_echo_a_run_directory_pass_under_a_temporary_folder_with_a_space(tmp_path: Path) -> None:
    # nnplug shell-quotes the path in the resume command it prints; the tests compared it with
    # the bare path, so they failed wherever TMPDIR (so tmp_path) holds a space
    spaced = tmp_path / "a folder"
    spaced.mkdir()
    tests = ["tests/test_faults.py::test_layer_misbehaving_during_train_is_named_with_node_type_and_plugin",
             "tests/test_train_stops.py::test_a_second_ctrl_c_names_the_run_directory_its_checkpoint_and_the_resume_command",
             "tests/test_cli_messages.py::test_an_interrupted_run_tells_the_resume_command_with_its_plugin_options",
             "tests/test_cli_messages.py::test_evaluate_without_validation_data_says_so_after_the_examples"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                             "-q", *tests], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "TMPDIR": str(spaced)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert " failed" not in result.stdout and "10 passed" in result.stdout


def test_the_traced_build_of_faultkit_runs_under_python_O(tmp_path: Path) -> None:
    # build_bounded measured the second, traced build inside an assert: `python -O` skipped it,
    # so every peak-memory bound of test_faults passed on 0 bytes
    model = tmp_path / "m.yaml"
    model.write_text("input: [64]\nlayers: [{type: dense, units: 64}]\nloss: {type: mse}\n")
    code = ("import faultkit, nnplug, sys\n"
            "print(faultkit.build_bounded(__import__('pathlib').Path(sys.argv[1]), nnplug.load_registry()).peak_bytes)")
    result = subprocess.run([sys.executable, "-O", "-c", code, str(model)], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 64 * 64 * 4  # the weights of the dense layer, at least


def test_the_suite_runs_when_the_shell_disables_plugin_autoload() -> None:
    # a user who keeps NNPLUG_DISABLE_PLUGIN_AUTOLOAD=1 in their shell saw most CLI tests fail:
    # no built-in layer was loaded
    tests = ["tests/test_cli.py::test_plugins_lists_distribution_version_types_and_status",
             "tests/test_property_runs.py::test_every_builtin_type_passes_in_fast_mode_with_a_table"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                             "-q", *tests], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "NNPLUG_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert " failed" not in result.stdout


def test_the_pytest_runs_in_subprocesses_ignore_the_callers_pytest_addopts() -> None:
    test = "tests/test_testing_helpers.py::test_pytest_plugin_node_ids_name_the_checks_module_outside_the_rootdir"
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", test],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTEST_ADDOPTS": "-v"})
    assert result.returncode == 0, result.stdout + result.stderr
