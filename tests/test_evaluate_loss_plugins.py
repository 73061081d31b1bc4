"""Scoring a model (each epoch's end, ``nnplug evaluate``) with a third party's loss: targets
handed over as in training, and a loss's ``accuracy`` that breaks named, not a traceback."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
import yaml

import nnplug
from nnplug.cli import main
from nnplug.train import evaluate


class _RecordingConfig(nnplug.LayerConfig):
    type: Literal["recording_mse"] = "recording_mse"


class _Recording(nnplug.Loss):
    """Mean squared error that records the dtype of every target it receives."""

    Config = _RecordingConfig
    seen: ClassVar[list[str]] = []
    answer: ClassVar[Any] = None  # what accuracy() returns, or the exception it raises

    def forward(self, pred, target):
        type(self).seen.append(f"forward {target.dtype}")
        r = pred - target
        return float((r * r).mean()), r

    def backward(self, cache):
        return 2 * cache / cache.size

    def accuracy(self, pred, target):
        type(self).seen.append(f"accuracy {target.dtype}")
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _model(answer: Any) -> nnplug.Model:
    _Recording.seen, _Recording.answer = [], answer
    module = types.ModuleType("recording")
    module.nnplug_register_layers = nnplug.hookimpl(lambda: [_Recording])  # type: ignore[attr-defined]
    registry = nnplug.Registry(plugins=["nnplug_layers", module])
    config = {"input": [3], "layers": [{"type": "dense", "units": 2}], "loss": {"type": "recording_mse"}}
    return nnplug.Model.from_config(config, registry)


def test_scoring_hands_float_targets_over_in_the_predictions_dtype_as_training_does():
    model = _model(None)  # float32
    x, y = np.ones((4, 3)), np.zeros((4, 2))  # float64 targets, as an .npz holds them
    model.loss_and_grads(x, y)
    loss, accuracy = evaluate(model, x, y)
    assert accuracy is None and np.isfinite(loss)
    assert _Recording.seen == ["forward float32"] * 2 + ["accuracy float32"]  # was float64 when scored


@pytest.mark.parametrize(("answer", "message"), [
    (TypeError("broken"), r"loss \(recording_mse, plugin 'recording'\): accuracy raised TypeError: broken"),
    ("high", r"accuracy returned 'high', expected a fraction from 0 to 1"),
    (1.5, r"accuracy returned 1.5, expected a fraction from 0 to 1"),
    (float("nan"), r"accuracy returned nan, expected a fraction"),
])
def test_an_accuracy_that_breaks_is_named_with_the_loss_and_its_plugin(answer, message):
    x, y = np.ones((4, 3)), np.zeros((4, 2))
    with pytest.raises(nnplug.PluginError, match=message):
        evaluate(_model(answer), x, y)


def test_train_says_it_stopped_while_scoring_an_epochs_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "reg.npz", x=rng.standard_normal((20, 3)), y=rng.standard_normal((20, 2)))
    model = tmp_path / "m.yaml"
    model.write_text(yaml.safe_dump({"input": [3], "layers": [{"type": "dense", "units": 2}],
                                     "loss": {"type": "buggy_mse_factor"},
                                     "data": {"source": "npz", "path": "reg.npz", "validation": 0}}))
    buggy_mse = nnplug.Registry(plugins=["buggy_layers"]).get("buggy_mse_factor")  # a test-only module
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(buggy_mse, "accuracy", lambda self, pred, target: "high")
        assert main(["-p", "buggy_layers", "train", str(model), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "accuracy returned 'high'" in err and "Traceback" not in err
    # the epoch's batches were all done: "at epoch 1, batch 2" named a batch the epoch has not
    assert "scoring the end of epoch 1; the last good checkpoint (after 0 epoch(s))" in err, err
