"""What the ``nnplug`` command tells its user: option hints, wording, commands to paste."""

from __future__ import annotations

import pytest

from nnplug.cli import main


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
