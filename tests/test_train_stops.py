"""How a training run stops, and what it says and leaves: signals at epoch ends, a second
Ctrl-C at once, a save the disk refuses."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from runkit import tiny_model

from nnplug.cli import main

# tiny_model: 72 training examples in batches of 16, so 5 batches (optimizer steps) an epoch


def _train(model_file: Path, run_dir: Path) -> int:
    return main(["train", str(model_file), "--out", str(run_dir), "--quiet"])


def _signals_at_step(monkeypatch: pytest.MonkeyPatch, step: int, *signals: int) -> None:
    """Deliver ``signals`` to this process, back to back, right after optimizer step ``step``."""
    from nnplug import optim

    original = optim.Optimizer.step

    def step_then_signal(self: Any, params: Any, grads: Any) -> None:
        original(self, params, grads)
        if self.step_count == step:
            for sig in signals:
                os.kill(os.getpid(), sig)

    monkeypatch.setattr(optim.Optimizer, "step", step_then_signal)


@pytest.mark.parametrize(("sig", "step", "where"), [
    (signal.SIGINT, 10, "after epoch 2"),  # the last batch of epoch 2: the epoch ends and saves
    (signal.SIGTERM, 5, "after epoch 1"),
    (signal.SIGINT, 7, "after batch 2 of epoch 2"),
])
def test_a_stop_signal_names_the_epoch_or_batch_the_run_stopped_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    sig: int, step: int, where: str,
) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _signals_at_step(patch, step, sig)
        assert _train(tiny_model(tmp_path, epochs=4), run) in (130, 143)
    err = capsys.readouterr().err
    assert err.startswith(f"nnplug: stopped by {signal.Signals(sig).name} {where}; saved to {run}\n"), err
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["optimizer"]["step"] == step


def test_a_second_ctrl_c_names_the_run_directory_its_checkpoint_and_the_resume_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _signals_at_step(patch, 7, signal.SIGINT, signal.SIGINT)  # the second acts at once
        assert _train(tiny_model(tmp_path, epochs=3), run) == 130
    err = capsys.readouterr().err
    assert err == (f"nnplug: interrupted; {run} keeps its last complete checkpoint (after epoch 1)\n"
                   f"  continue with: nnplug train --resume {run}\n"), err
    assert json.loads((run / "manifest.json").read_text())["optimizer"]["step"] == 5
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # the command, pasted


def test_a_second_ctrl_c_during_the_first_save_says_the_run_holds_no_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nnplug import checkpoint

    original = checkpoint.atomic_write

    def write_then_two_signals(path: Path, write: Any) -> str:
        digest = original(path, write)
        if path.name.startswith("weights-"):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return digest

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "atomic_write", write_then_two_signals)
        assert _train(tiny_model(tmp_path, epochs=2), run) == 130
    assert capsys.readouterr().err == (f"nnplug: interrupted before the run's first checkpoint; {run} holds none: "
                                       "delete it, then start the run again\n")
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert "the run has no checkpoint" in capsys.readouterr().err


def test_a_ctrl_c_while_loading_the_data_names_the_run_directory_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    model_file, run = tiny_model(tmp_path, epochs=1), tmp_path / "run"
    assert _train(model_file, run) == 0
    monkeypatch.setattr("nnplug.data.load_dataset", interrupted)
    assert _train(model_file, tmp_path / "fresh") == 130  # before its run directory is made
    assert capsys.readouterr().err == "nnplug: error: interrupted before training started; nothing was saved\n"
    assert not (tmp_path / "fresh").exists()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 130
    assert capsys.readouterr().err == (f"nnplug: interrupted; {run} keeps its last complete checkpoint "
                                       f"(after epoch 1)\n  continue with: nnplug train --resume {run}\n")
