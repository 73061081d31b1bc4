"""``nnplug evaluate RUN``: what scoring a saved run needs, and what it tells about its data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from runkit import tiny_model

from nnplug.cli import main


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("saved")
    assert main(["train", str(tiny_model(tmp, epochs=1)), "--out", str(tmp / "run"), "--quiet"]) == 0
    return tmp / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def test_evaluate_scores_a_run_whose_optimizer_state_is_missing(
    saved_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(saved_run)]) == 0
    scored = capsys.readouterr().out.replace(str(saved_run), "RUN")
    run = _copy(saved_run, tmp_path)
    optim = run / json.loads((run / "manifest.json").read_text())["optimizer"]["file"]
    optim.unlink()
    assert main(["evaluate", str(run)]) == 0
    out, err = capsys.readouterr()
    assert out.replace(str(run), "RUN") == scored and err == ""
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 2  # resuming needs it
    assert f"{optim}: the optimizer file named by the manifest is missing" in capsys.readouterr().err
