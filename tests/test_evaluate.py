"""``nnplug evaluate RUN``: what scoring a saved run needs, and what it tells about its data."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
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


def test_evaluate_warns_naming_the_file_when_the_data_changed_since_training_then_scores(
    saved_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(saved_run, tmp_path)
    npz = Path(json.loads((run / "model.json").read_text())["data"]["path"])  # absolute, shared by the runs
    edited = tmp_path / "edited.npz"
    with np.load(npz) as f:
        x, y = f["x"].copy(), f["y"]
    x[-1, 0, 0, 0] += 1.0  # one value of one example
    np.savez(edited, x=x, y=y)
    resolved = json.loads((run / "model.json").read_text())
    resolved["data"]["path"] = str(edited)
    _rewrite_model_file(run, resolved)
    assert main(["evaluate", str(run)]) == 0
    out, err = capsys.readouterr()
    assert err == (f"nnplug: warning: {run}: the data ({edited}) differ from the data the run was trained on "
                   "(changed since); the scores below are on the data as they are now\n")
    assert re.match(rf"{re.escape(str(run))}: loss \d+\.\d{{4}}, accuracy \d+\.\d\d% on 24 validation", out), out
    shutil.copyfile(npz, edited)  # the very data it was trained on: no warning
    assert main(["evaluate", str(run)]) == 0
    assert capsys.readouterr().err == ""


def _rewrite_model_file(run: Path, resolved: dict[str, Any]) -> None:
    """Point a run at other data, keeping its manifest's checksum of model.json right."""
    from nnplug.checkpoint import MANIFEST, atomic_write

    text = json.dumps(resolved).encode()
    atomic_write(run / "model.json", lambda f: f.write(text))
    manifest = json.loads((run / MANIFEST).read_text())
    manifest["model"]["sha256"] = hashlib.sha256(text).hexdigest()
    atomic_write(run / MANIFEST, lambda f: f.write(json.dumps(manifest).encode()))


def test_min_accuracy_passes_at_exactly_the_score_and_fails_just_above_it(
    saved_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (saved_run / "metrics.jsonl").read_text().splitlines()
    score = json.loads(lines[-1])["val_accuracy"]  # what evaluate scores: the validation examples
    assert main(["evaluate", str(saved_run), "--min-accuracy", repr(score)]) == 0
    above = float(np.nextafter(score, 2.0))
    capsys.readouterr()
    assert main(["evaluate", str(saved_run), "--min-accuracy", repr(above)]) == 1  # a failed check, not a usage error
    assert "is below --min-accuracy" in capsys.readouterr().err
