"""Run directories under less common faults: what a failed save names, what a resume leaves."""

from __future__ import annotations

import errno
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from runkit import tiny_model

import nnplug
from nnplug import checkpoint
from nnplug.cli import main
from nnplug.data import load_dataset
from nnplug.train import Trainer


def test_a_save_refused_a_temporary_file_names_the_file_it_was_saving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_inode_left(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".weights-1.npz.x1y2.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", no_inode_left)
    with pytest.raises(OSError) as info:
        checkpoint.atomic_write(tmp_path / "weights-1.npz", lambda f: f.write(b"x"))
    assert info.value.filename == str(tmp_path / "weights-1.npz")  # not a temporary that never existed
    assert info.value.errno == errno.ENOSPC


@pytest.mark.parametrize("command", [["evaluate"], ["train", "--resume"]])
def test_a_file_given_as_the_run_is_named_as_a_file_not_as_missing(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model.yaml"  # what a user types for evaluate when they mean the run
    model.write_text("input: [4]\n")
    assert main([*command, str(model)]) == 2
    err = capsys.readouterr().err
    assert f"{model}: not a run directory (a file" in err
    assert "no such" not in err


def test_the_temporary_of_a_metrics_rewrite_killed_on_resume_goes_with_the_next_save(tmp_path: Path) -> None:
    assert main(["train", str(tiny_model(tmp_path, epochs=1)), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    run = tmp_path / "run"
    # what a kill -9 leaves while a resume rewrites metrics.jsonl (atomic_write's temporary)
    left = run / ".metrics.jsonl.k9x2ab.tmp"
    left.write_text('{"epoch": 1}\n')
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert not left.exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("command", [["evaluate"], ["train", "--resume"]])
def test_a_run_saved_by_a_later_nnplug_says_so_and_to_upgrade(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(tiny_model(tmp_path, epochs=1)), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    path = tmp_path / "run" / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "format": 2, "nnplug": "9.0"}))
    capsys.readouterr()
    assert main([*command, str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "saved by nnplug 9.0 in manifest format 2" in err and "upgrade nnplug" in err
    assert "not an nnplug manifest" not in err


def test_a_run_directory_deleted_while_training_stops_the_run_instead_of_being_recreated(tmp_path: Path) -> None:
    model = nnplug.Model.from_file(tiny_model(tmp_path, epochs=3))
    data = load_dataset(model.spec.data, model, base_dir=tmp_path)
    run = tmp_path / "run"

    def delete_the_run(metrics: dict[str, Any]) -> None:  # a user's rm -rf after the first epoch
        if metrics["epoch"] == 1:
            shutil.rmtree(run)

    trainer = Trainer(model, data, model.spec.train, run, 0, on_epoch=delete_the_run)
    with pytest.raises(nnplug.ConfigError, match=r"deleted or replaced while training; stopped after epoch 2"):
        trainer.run()
    # recreated, it would hold a run without its first epoch and without the lock that keeps a
    # second train of it out
    assert not run.exists()


def test_a_run_directory_deleted_during_a_save_is_not_called_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = nnplug.Model.from_file(tiny_model(tmp_path, epochs=3))
    data = load_dataset(model.spec.data, model, base_dir=tmp_path)
    run = tmp_path / "run"
    real_write, calls = checkpoint.atomic_write, {"n": 0}

    def deleted_midway(path: Path, write: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 5:  # the first epoch's save, its weights file: the rm -rf lands mid-save
            shutil.rmtree(run)
        return real_write(path, write)

    monkeypatch.setattr(checkpoint, "atomic_write", deleted_midway)
    with pytest.raises(nnplug.ConfigError, match="deleted or replaced while training"):
        Trainer(model, data, model.spec.train, run, 0).run()


def test_every_temporary_a_killed_save_can_leave_goes_with_the_next_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    real_mkstemp = tempfile.mkstemp

    def recording(*args: Any, **kwargs: Any) -> Any:
        fd, name = real_mkstemp(*args, **kwargs)
        made.append(Path(name).name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", recording)
    run = tmp_path / "run"
    assert main(["train", str(tiny_model(tmp_path, epochs=1)), "--out", str(run), "--quiet"]) == 0
    monkeypatch.setattr(tempfile, "mkstemp", real_mkstemp)
    assert {name.split(".")[1] for name in made} >= {"model", "weights-00000000", "manifest"}
    for name in made:  # what a kill -9 between the write and the rename leaves, of each file
        (run / name).write_bytes(b"partial")
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    assert [name for name in made if (run / name).exists()] == []
