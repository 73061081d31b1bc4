"""``--threads N`` of train and evaluate: numpy's BLAS (and so the layers' batch splitting)
held to N threads for the command, the caller's setting back afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from runkit import tiny_model
from threadpoolctl import threadpool_info, threadpool_limits

import nnplug.runs
from nnplug.cli import main


def _blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_train_runs_with_blas_held_to_the_threads_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[set[int]] = []
    real = nnplug.runs.train_command
    monkeypatch.setattr(nnplug.runs, "train_command", lambda *a: seen.append(_blas_threads()) or real(*a))
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        assert main(["train", str(tiny_model(tmp_path, epochs=1)), "--out", str(tmp_path / "run"),
                     "--quiet", "--threads", "1"]) == 0
        assert seen == [{1}]
        assert _blas_threads() == before
        assert main(["evaluate", str(tmp_path / "run"), "--threads", "1"]) == 0


@pytest.mark.parametrize("threads", ["0", "-2"])
def test_a_thread_count_below_one_is_a_usage_error(tmp_path: Path, threads: str, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where the run directory would go
    assert main(["train", str(tiny_model(tmp_path)), "--threads", threads]) == 2
    assert f"--threads: expected a positive number of threads, got {threads}" in capsys.readouterr().err
    assert not Path("runs").exists()
