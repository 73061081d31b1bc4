"""The test suite passes whatever environment starts it: a pytest run in a subprocess, started
the way a script, a CI runner or a user's shell may start it."""

from __future__ import annotations

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
