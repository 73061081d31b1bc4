"""How a training run stops, and what it says and leaves: signals at epoch ends, a second
Ctrl-C at once, a save the disk refuses, a gradient gone non-finite."""

from __future__ import annotations

import json
import os
import shlex
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faultkit import non_finite_gradient_plugin
from runkit import tiny_model

import nnplug
from nnplug.cli import main
from nnplug.data import Dataset
from nnplug.train import TrainConfig, Trainer

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
    (signal.SIGTERM, 4, "after batch 4 of epoch 1"),  # the epoch's last batch but one: no batch more
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
                   f"  continue with: nnplug train --resume {shlex.quote(str(run))}\n"), err
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
    assert capsys.readouterr().err == (f"nnplug: interrupted; {run} keeps its last complete checkpoint (after epoch 1)"
                                       f"\n  continue with: nnplug train --resume {shlex.quote(str(run))}\n")


def _full_disk_at(monkeypatch: pytest.MonkeyPatch, run: Path, kind: str, step: int) -> None:
    """ENOSPC for the checkpoint of optimizer step ``step``: renaming its ``kind`` file
    (weights, optim or manifest) into place fails, as the last step of writing it, or
    (``metrics``) syncing the epoch's line of metrics.jsonl does."""
    real_replace, real_fsync = os.replace, os.fsync
    name = {"weights": f"weights-{step:08d}.npz", "optim": f"optim-{step:08d}.npz"}.get(kind, "manifest.json")

    def replace(src: Any, dst: Any) -> None:
        this_save = kind != "manifest" or (run / f"weights-{step:08d}.npz").exists()
        if kind != "metrics" and Path(dst).name == name and this_save:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    def fsync(fd: int) -> None:
        metrics = run / "metrics.jsonl"
        if kind == "metrics" and metrics.exists() and os.fstat(fd).st_ino == metrics.stat().st_ino:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("kind", ["weights", "optim", "manifest", "metrics"])
def test_a_save_the_full_disk_refuses_leaves_no_partial_checkpoint_nor_metrics_ahead_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    model_file = tiny_model(tmp_path, epochs=2)
    assert _train(model_file, tmp_path / "whole") == 0
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _full_disk_at(patch, run, kind, step=5)  # the end of epoch 1
        assert _train(model_file, run) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and f"in {run}, is intact" in err
    named = {"weights": "weights-00000005.npz", "optim": "optim-00000005.npz", "metrics": "metrics.jsonl"}
    assert f"nnplug: error: {run / named.get(kind, 'manifest.json')}: No space left on device" in err
    manifest = json.loads((run / "manifest.json").read_text())
    saved = 1 if kind == "metrics" else 0  # only syncing metrics.jsonl comes after the checkpoint
    assert manifest["progress"]["epoch"] == saved
    assert {p.name for p in run.iterdir()} - {"metrics.jsonl"} == {
        ".lock", "manifest.json", "model.json", manifest["weights"]["file"], manifest["optimizer"]["file"]
    }  # nothing the failed save wrote
    metrics = run / "metrics.jsonl"
    assert not metrics.exists() or metrics.read_bytes() == b""  # never ahead of the checkpoint
    assert main(["evaluate", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert (run / "metrics.jsonl").read_bytes() == (tmp_path / "whole" / "metrics.jsonl").read_bytes()
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())


def test_a_non_finite_gradient_is_blamed_on_the_node_where_backward_went_bad(tmp_path: Path) -> None:
    # 'hidden' (before the poison in the file) has NaN gradients too, from the poison's dx:
    # backward order names the poison, where they started
    poison = non_finite_gradient_plugin("test_poison", np.nan, dx_too=True)
    model = nnplug.Model.from_config({
        "input": [4], "loss": {"type": "softmax_cross_entropy"},
        "layers": [{"type": "dense", "name": "hidden", "units": 4}, {"type": "test_poison", "name": "poison"},
                   {"type": "dense", "name": "logits", "units": 3}],
    }, registry=nnplug.Registry(plugins=[poison, "nnplug_layers"]))
    data = Dataset(np.ones((6, 4)), np.arange(6) % 3, None, None, "test arrays")
    trainer = Trainer(model, data, TrainConfig(epochs=1, batch_size=6), tmp_path / "run", 0)
    with pytest.raises(nnplug.NumericalError, match=r"the gradient of s at node 'poison' \(test_poison"):
        trainer.run()


def test_a_sigint_ignored_by_whoever_started_the_run_stays_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a shell's background job and nohup start with SIGINT ignored; Python leaves it so, and
    # so does nnplug: the run trains to its end (SIGTERM still stops it)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _signals_at_step(monkeypatch, 3, signal.SIGINT)
    assert _train(tiny_model(tmp_path, epochs=2), tmp_path / "run") == 0
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["optimizer"]["step"] == 10
