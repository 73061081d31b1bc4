"""What the ``nnplug`` command tells its user: option hints, wording, commands to paste."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from runkit import tiny_model

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
