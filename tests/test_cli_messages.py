"""What the ``nnplug`` command tells its user: option hints, wording, commands to paste."""

from __future__ import annotations

import io
import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from runkit import blob_data, tiny_model

from nnplug.cli import main


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_min_accuracy_given_as_a_percentage_suggests_the_fraction(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "no-such-run", "--min-accuracy", "98"]) == 2
    err = capsys.readouterr().err
    assert "--min-accuracy: expected a fraction from 0 to 1, got 98" in err
    assert "98 reads as a percentage: write 0.98 for 98%" in err


def test_min_accuracy_help_says_it_is_a_fraction(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--help"]) == 0
    assert "(a fraction, 0-1: 0.98 for 98%)" in " ".join(capsys.readouterr().out.split())


def test_plugins_shows_disabled_for_an_installed_plugin_autoload_skipped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NNPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert main(["plugins"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("nnplug_layers"))
    assert row.split()[3] == "disabled"
    assert main(["plugins", "-p", "nnplug_layers"]) == 0  # -p after the command, as before it
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("nnplug_layers"))
    assert row.split()[3] == "loaded"


def test_progress_bar_shows_a_dash_until_the_epoch_has_a_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.progress import Progress
    from rich.text import Text

    shown: list[str] = []

    def text_of(progress: Any, task_id: Any) -> str:
        task = next(t for t in progress.tasks if t.id == task_id)
        return " ".join(r.plain for r in (c.render(task) for c in progress.columns) if isinstance(r, Text))

    add_task, update = Progress.add_task, Progress.update

    def add_and_show(self: Any, *args: Any, **kwargs: Any) -> Any:
        task_id = add_task(self, *args, **kwargs)
        shown.append(text_of(self, task_id))
        return task_id

    def update_and_show(self: Any, task_id: Any, **kwargs: Any) -> None:
        update(self, task_id, **kwargs)
        shown.append(text_of(self, task_id))

    monkeypatch.setattr(Progress, "add_task", add_and_show)
    monkeypatch.setattr(Progress, "update", update_and_show)
    monkeypatch.setattr(sys, "stdout", _Terminal())
    assert main(["train", str(tiny_model(tmp_path, epochs=1)), "--out", str(tmp_path / "run")]) == 0
    assert shown[0].startswith("epoch 1/1 0/5 loss - "), shown
    assert all("nan" not in line for line in shown), shown
    assert re.match(r"epoch 1/1 5/5 loss \d+\.\d{4} ", shown[-1]), shown


PLUGIN_OPTIONS = ["-p", "nnplug_layers", "-p", "no:nnplug_test_absent"]
RESUME = "nnplug -p nnplug_layers -p no:nnplug_test_absent train --resume {}"


def _resume(run: Path) -> str:
    """The resume command nnplug prints for ``run``: the path shell-quoted (a TMPDIR may hold spaces)."""
    return RESUME.format(shlex.quote(str(run)))


def _train_with_plugin_options(model: Path, run: Path) -> int:
    return main([*PLUGIN_OPTIONS[:2], "train", str(model), "--out", str(run), "--quiet", *PLUGIN_OPTIONS[2:]])


def test_a_layer_failure_tells_the_resume_command_with_the_runs_plugin_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nnplug.errors import PluginError
    from nnplug.train import Trainer

    def broken_step(self: Any, xb: Any, yb: Any) -> float:
        raise PluginError("node 'hidden' (dense, plugin nnplug): forward raised")

    monkeypatch.setattr(Trainer, "_step", broken_step)
    assert _train_with_plugin_options(tiny_model(tmp_path), tmp_path / "run") == 2
    assert f"continue it with `{_resume(tmp_path / 'run')}` once fixed" in capsys.readouterr().err


def test_an_interrupted_run_tells_the_resume_command_with_its_plugin_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nnplug import optim

    step = optim.Optimizer.step

    def step_then_interrupt(self: Any, params: Any, grads: Any) -> None:
        step(self, params, grads)
        if self.step_count == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(optim.Optimizer, "step", step_then_interrupt)
    assert _train_with_plugin_options(tiny_model(tmp_path), tmp_path / "run") == 130
    assert f"continue with: {_resume(tmp_path / 'run')}\n" in capsys.readouterr().err
    monkeypatch.undo()
    assert _train_with_plugin_options(tiny_model(tmp_path), tmp_path / "run") == 2  # --out of a saved run
    assert f"continue it with `{_resume(tmp_path / 'run')}`" in capsys.readouterr().err
    assert main([*shlex.split(_resume(tmp_path / "run"))[1:], "--quiet"]) == 0  # the hint, pasted


def test_evaluate_without_validation_data_says_so_after_the_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob_data(tmp_path / "blobs.npz")
    model = tiny_model(tmp_path, epochs=1, data={"source": "npz", "path": "blobs.npz", "validation": 0})
    assert main(["train", str(model), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"accuracy \d+\.\d\d% on 96 training examples \({re.escape(str(tmp_path / 'blobs.npz'))}; "
                     r"the run holds no validation data\)$", out.strip()), out
