"""Resuming through the Python API: ``Trainer.restore`` continues a run's checkpoint, and
refuses one saved with another seed (the command line takes the seed from the run itself, so
only a script can ask for this)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runkit import tiny_model

import nnplug
from nnplug.checkpoint import load_checkpoint
from nnplug.cli import main
from nnplug.data import load_dataset
from nnplug.train import Trainer


def _trainer(tmp_path: Path, seed: int) -> tuple[Trainer, dict]:
    assert main(["train", str(tiny_model(tmp_path, epochs=1)), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    ckpt = load_checkpoint(tmp_path / "run", nnplug.load_registry())
    data = load_dataset(ckpt.model.spec.data, ckpt.model, base_dir=tmp_path / "run", saved_run=True)
    trainer = Trainer(ckpt.model, data, ckpt.model.spec.train, tmp_path / "run", seed, epochs=2)
    return trainer, {"arrays": ckpt.optim_arrays, "scalars": ckpt.optim_scalars, "progress": ckpt.progress}


def test_restore_continues_the_checkpoint_it_is_given(tmp_path: Path) -> None:
    trainer, saved = _trainer(tmp_path, 0)
    trainer.restore(saved["arrays"], saved["scalars"], saved["progress"])
    assert trainer.position.epoch == 1 and trainer.optimizer.step_count == 5
    assert trainer.run().status == "completed" and len(trainer.position.history) == 2


def test_restore_refuses_a_checkpoint_saved_with_another_seed(tmp_path: Path) -> None:
    trainer, saved = _trainer(tmp_path, 1)
    with pytest.raises(nnplug.ConfigError, match="saved with seed 0, resumed with 1"):
        trainer.restore(saved["arrays"], saved["scalars"], saved["progress"])


def test_a_loaded_checkpoints_optimizer_scalars_are_what_the_optimizer_saved(tmp_path: Path) -> None:
    trainer, saved = _trainer(tmp_path, 0)
    # not the manifest's bookkeeping (file name, checksum) around them
    assert saved["scalars"] == trainer.optimizer.state_dict()[1] | {"step": 5}
