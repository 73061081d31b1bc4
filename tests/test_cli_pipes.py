"""The ``nnplug`` command writing into a pipe whose reader has gone (``| head``): training
goes on and saves; other commands stop quietly with 141, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runkit import tiny_model

from nnplug.cli import EXIT_BROKEN_PIPE

EXAMPLES = Path(__file__).parent.parent / "examples"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")


def _with_closed_output(*args: str, cwd: Path, stderr_too: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nnplug ARGS`` with stdout (and, with ``stderr_too``, stderr: ``2>&1``)
    a pipe whose reader has already exited, as ``| head -1`` leaves it once head is done."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader: every write fails with EPIPE
    try:
        return subprocess.run([sys.executable, "-m", "nnplug", *args], cwd=cwd, stdout=write_end,
                              stderr=write_end if stderr_too else subprocess.PIPE, text=True, timeout=180)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("stderr_too", [False, True], ids=["stdout", "stdout_and_stderr"])
def test_train_with_a_closed_stdout_trains_every_epoch_and_saves(tmp_path: Path, stderr_too: bool) -> None:
    model_file = tiny_model(tmp_path, epochs=3)
    proc = _with_closed_output("train", str(model_file), "--out", "run", cwd=tmp_path, stderr_too=stderr_too)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["progress"]["epoch"] == 3
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3
    if not stderr_too:
        assert "Traceback" not in proc.stderr and "Broken pipe" not in proc.stderr
        assert proc.stderr.startswith("nnplug: warning: stdout was closed (its reader exited); training goes on")


@pytest.mark.parametrize("argv", [["validate", str(EXAMPLES / "digits_mlp.yaml")], ["schema"], ["plugins"]],
                         ids=["validate", "schema", "plugins"])
@pytest.mark.parametrize("stderr_too", [False, True], ids=["stdout", "stdout_and_stderr"])
def test_a_command_whose_reader_went_away_exits_141_quietly_not_as_a_failed_check(
    tmp_path: Path, argv: list[str], stderr_too: bool
) -> None:
    proc = _with_closed_output(*argv, cwd=tmp_path, stderr_too=stderr_too)
    assert proc.returncode == EXIT_BROKEN_PIPE == 141, proc.stderr
    if not stderr_too:
        assert proc.stderr == ""
