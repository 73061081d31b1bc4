"""Training: optimizers, determinism, interruption and resume, non-finite stops, the digits CNN."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import yaml
from faultkit import non_finite_gradient_plugin
from runkit import tiny_model, weights_of

import nnplug
from nnplug.cli import main
from nnplug.optim import OptimizerConfig, make_optimizer

EXAMPLES = Path(__file__).parent.parent / "examples"


def _params(dtype: str = "float64") -> dict[str, dict[str, np.ndarray]]:
    return {"a": {"w": np.array([1.0, -2.0, 3.0], dtype=dtype)}}


def _grads(dtype: str = "float64") -> dict[str, dict[str, np.ndarray]]:
    return {"a": {"w": np.array([0.5, 0.25, -1.0], dtype=dtype)}}


def test_sgd_with_momentum_and_nesterov_follow_pytorchs_update() -> None:
    for nesterov in (False, True):
        config = OptimizerConfig(type="sgd", lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
        params, g = _params(), _grads()["a"]["w"]
        opt = make_optimizer(config, params)
        w = _params()["a"]["w"]
        v = np.zeros(3)
        for _ in range(3):
            d = g + 0.01 * w
            v = 0.9 * v + d
            w = w - 0.1 * (d + 0.9 * v if nesterov else v)
            opt.step(params, _grads())
        np.testing.assert_allclose(params["a"]["w"], w, rtol=1e-12)


def test_adam_first_step_moves_each_weight_by_about_lr() -> None:
    params = _params()
    make_optimizer(OptimizerConfig(type="adam", lr=0.01), params).step(params, _grads())
    np.testing.assert_allclose(params["a"]["w"] - _params()["a"]["w"], -0.01 * np.sign(_grads()["a"]["w"]),
                               rtol=1e-6)


def test_adam_matches_the_textbook_update_over_several_steps() -> None:
    params, w = _params(), _params()["a"]["w"]
    opt = make_optimizer(OptimizerConfig(type="adam", lr=0.05, beta1=0.8, beta2=0.99), params)
    m = v = np.zeros(3)
    for t in range(1, 5):
        g = _grads()["a"]["w"] * t
        m = 0.8 * m + 0.2 * g
        v = 0.99 * v + 0.01 * g * g
        w = w - 0.05 * (m / (1 - 0.8**t)) / (np.sqrt(v / (1 - 0.99**t)) + 1e-8)
        opt.step(params, {"a": {"w": g}})
    np.testing.assert_allclose(params["a"]["w"], w, rtol=1e-10)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_optimizers_keep_float32_weights_float32(kind: Literal["sgd", "adam"]) -> None:
    params = _params("float32")
    opt = make_optimizer(OptimizerConfig(type=kind, lr=0.1, weight_decay=0.1), params)
    opt.step(params, _grads("float32"))
    assert params["a"]["w"].dtype == np.float32
    assert all(a.dtype == np.float32 for a in opt.state.values())


def test_optimizer_config_refuses_settings_of_the_other_type() -> None:
    with pytest.raises(ValueError, match="momentum"):
        OptimizerConfig(type="adam", momentum=0.9)
    with pytest.raises(ValueError, match="nesterov needs a momentum"):
        OptimizerConfig(type="sgd", nesterov=True)


def _train(model_file: Path, out: Path, *extra: str) -> int:
    return main(["train", str(model_file), "--out", str(out), "--quiet", *extra])


def test_same_seed_and_file_give_bit_identical_runs(tmp_path: Path) -> None:
    model_file = tiny_model(tmp_path, optimizer={"type": "sgd", "lr": 0.1, "momentum": 0.9})
    assert _train(model_file, tmp_path / "a") == 0
    assert _train(model_file, tmp_path / "b") == 0
    assert _train(model_file, tmp_path / "c", "--seed", "1") == 0
    a, b, c = (weights_of(tmp_path / r) for r in "abc")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert any(a[k].tobytes() != c[k].tobytes() for k in a)
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()


def test_metrics_are_one_json_line_per_epoch(tmp_path: Path) -> None:
    assert _train(tiny_model(tmp_path, epochs=4), tmp_path / "run") == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(r)
        assert 0 <= r["val_accuracy"] <= 1
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def _signal_at_step(monkeypatch: pytest.MonkeyPatch, step: int, sig: int) -> None:
    """Deliver a real signal to this process while the optimizer takes step ``step``."""
    from nnplug import optim

    original = optim.Optimizer.step

    def step_then_signal(self: Any, params: Any, grads: Any) -> None:
        original(self, params, grads)
        if self.step_count == step:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(optim.Optimizer, "step", step_then_signal)


@pytest.mark.parametrize(("sig", "status", "step"), [(signal.SIGINT, 130, 7), (signal.SIGTERM, 143, 12)])
def test_resumed_run_reproduces_the_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    sig: int, status: int, step: int,
) -> None:
    model_file = tiny_model(tmp_path, epochs=4, optimizer={"type": "adam", "lr": 0.02})
    assert _train(model_file, tmp_path / "whole") == 0
    with monkeypatch.context() as patch:
        _signal_at_step(patch, step, sig)
        assert _train(model_file, tmp_path / "cut") == status
    err = capsys.readouterr().err
    assert f"saved to {tmp_path / 'cut'}" in err and "--resume" in err
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert manifest["optimizer"]["step"] == step  # stopped right after the batch
    assert main(["train", "--resume", str(tmp_path / "cut"), "--quiet"]) == 0
    whole, cut = weights_of(tmp_path / "whole"), weights_of(tmp_path / "cut")
    assert all(whole[k].tobytes() == cut[k].tobytes() for k in whole)
    assert (tmp_path / "whole" / "metrics.jsonl").read_bytes() == (tmp_path / "cut" / "metrics.jsonl").read_bytes()


def test_a_signal_during_the_first_save_waits_for_a_loadable_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nnplug import checkpoint

    original = checkpoint.atomic_write

    def write_then_signal(path: Path, write: Any) -> str:  # Ctrl-C between the weights and the manifest
        digest = original(path, write)
        if path.name.startswith("weights-"):
            os.kill(os.getpid(), signal.SIGINT)
        return digest

    monkeypatch.setattr(checkpoint, "atomic_write", write_then_signal)
    run = tmp_path / "run"
    assert _train(tiny_model(tmp_path, epochs=2), run) == 130
    monkeypatch.undo()
    assert f"saved to {run}" in capsys.readouterr().err
    manifest = json.loads((run / "manifest.json").read_text())  # a whole checkpoint, step 0
    assert manifest["optimizer"]["step"] == 0
    assert main(["train", "--resume", str(run), "--quiet"]) == 0


def test_a_disk_filling_up_mid_run_names_the_file_and_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nnplug import checkpoint

    original, saves = checkpoint.atomic_write, []

    def filling_disk(path: Path, write: Any) -> str:
        if path.name.startswith("weights-"):
            saves.append(path)
            if len(saves) == 2:  # the end of the first epoch
                raise OSError(28, "No space left on device", str(path))
        return original(path, write)

    monkeypatch.setattr(checkpoint, "atomic_write", filling_disk)
    run = tmp_path / "run"
    assert _train(tiny_model(tmp_path, epochs=2), run) == 2
    err = capsys.readouterr().err
    assert f"nnplug: error: {saves[1]}: No space left on device" in err
    assert f"the last checkpoint saved before it, in {run}, is intact" in err
    monkeypatch.undo()
    assert main(["evaluate", str(run)]) == 0  # the step-0 checkpoint stands


def test_resume_refuses_options_that_would_change_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_file = tiny_model(tmp_path, epochs=1)
    assert _train(model_file, tmp_path / "run") == 0
    assert main(["train", "--resume", str(tmp_path / "run"), "--lr", "0.5"]) == 2
    assert "--lr" in capsys.readouterr().err


@pytest.mark.parametrize("change", ["grow", "shrink", "edit"])
def test_resume_refuses_training_data_that_changed_since_the_run_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str
) -> None:
    model_file = tiny_model(tmp_path, epochs=1)
    assert _train(model_file, tmp_path / "run") == 0
    with np.load(tmp_path / "blobs.npz") as f:
        x, y = f["x"], f["y"]
    if change == "grow":
        x, y = np.concatenate([x, x[:5]]), np.concatenate([y, y[:5]])
    elif change == "shrink":
        x, y = x[:-5], y[:-5]
    else:
        x = x.copy()
        x[0, 0, 0, 0] += 1.0
    np.savez(tmp_path / "blobs.npz", x=x, y=y)  # the file the run's model.json names (made absolute)
    before = weights_of(tmp_path / "run")
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"]) == 2
    assert "differ from the data this run was trained on" in capsys.readouterr().err
    after = weights_of(tmp_path / "run")
    assert all(before[k].tobytes() == after[k].tobytes() for k in before)


def test_a_run_directory_in_use_by_another_train_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nnplug.runs import _run_lock

    model_file = tiny_model(tmp_path, epochs=1)
    assert _train(model_file, tmp_path / "run") == 0
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    with _run_lock(tmp_path / "run"):  # as a second process training it would hold it
        assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"]) == 2
        assert "another nnplug train is running in this directory" in capsys.readouterr().err
        with _run_lock(tmp_path / "fresh"):
            assert _train(model_file, tmp_path / "fresh") == 2
            assert "another nnplug train is running" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before  # nothing touched
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"]) == 0  # lock released
    assert _train(model_file, tmp_path / "fresh") == 0  # a directory holding only the lock file is empty


def test_resume_with_no_epochs_left_says_so_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_file = tiny_model(tmp_path, epochs=2)
    assert _train(model_file, tmp_path / "run") == 0
    before = sorted((p.name, p.read_bytes()) for p in (tmp_path / "run").iterdir())
    for epochs in ([], ["--epochs", "1"]):
        assert main(["train", "--resume", str(tmp_path / "run"), "--quiet", *epochs]) == 0
        out = capsys.readouterr().out
        assert "the run has trained 2 epoch(s) already" in out and "nothing to train" in out
    assert sorted((p.name, p.read_bytes()) for p in (tmp_path / "run").iterdir()) == before


def test_resume_with_more_epochs_continues_the_run(tmp_path: Path) -> None:
    model_file = tiny_model(tmp_path, epochs=2)
    assert _train(model_file, tmp_path / "a", "--epochs", "4") == 0
    assert _train(model_file, tmp_path / "b") == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--epochs", "4", "--quiet"]) == 0
    a, b = weights_of(tmp_path / "a"), weights_of(tmp_path / "b")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_diverging_run_stops_naming_the_node_and_keeps_the_last_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_file = tiny_model(tmp_path, epochs=3, dtype="float32", optimizer={"type": "sgd", "lr": 10.0})
    with np.load(tmp_path / "blobs.npz") as f:  # huge but finite inputs: float32 overflows in a few steps
        np.savez(tmp_path / "blobs.npz", x=f["x"] * 1e15, y=f["y"])
    status = _train(model_file, tmp_path / "run")
    err = capsys.readouterr().err
    assert status == 2
    assert "not finite" in err or "non-finite" in err
    assert "node '" in err and "last good checkpoint" in err
    assert main(["evaluate", str(tmp_path / "run")]) == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_update_that_leaves_weights_non_finite_is_never_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dtype: str
) -> None:
    # finite gradients, but a weight decay that overflows (1e40 is inf in float32): one batch per
    # epoch, so the broken update is the last before a checkpoint
    decay = 1e308 if dtype == "float64" else 1e40
    model_file = tiny_model(tmp_path, epochs=2, batch_size=1000, dtype=dtype,
                            optimizer={"type": "sgd", "lr": 10.0, "weight_decay": decay})
    assert _train(model_file, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "left w of node 'hidden' (dense, plugin nnplug) non-finite" in err
    assert "the weights were not saved" in err and "last good checkpoint (after 0 epoch(s))" in err
    assert all(np.isfinite(w).all() for w in weights_of(tmp_path / "run").values())


def test_non_finite_gradient_stops_before_the_update_naming_the_node(tmp_path: Path) -> None:
    from nnplug.data import load_dataset
    from nnplug.modelfile import build_model
    from nnplug.train import Trainer

    model_file = tiny_model(tmp_path)
    model_file.write_text(model_file.read_text().replace(
        "- type: relu", "- type: test_blow_up\n  name: boom\n- type: relu"))
    registry = nnplug.Registry(plugins=[non_finite_gradient_plugin("test_blow_up", np.inf, dx_too=False)])
    model = build_model(model_file, registry)
    before = {n: {k: v.copy() for k, v in g.items()} for n, g in model.params.items()}
    data = load_dataset(model.spec.data, model, base_dir=tmp_path)  # type: ignore[arg-type]
    trainer = Trainer(model, data, model.spec.train, tmp_path / "run", 0)  # type: ignore[arg-type]
    with pytest.raises(nnplug.NumericalError, match=r"gradient of s at node 'boom' \(test_blow_up"):
        trainer.run()
    for n, group in before.items():
        for k, v in group.items():
            np.testing.assert_array_equal(model.params[n][k], v)


def test_digits_cnn_learns_in_a_short_run(tmp_path: Path) -> None:
    registry = nnplug.load_registry()
    if "conv2d" not in registry or "maxpool2d" not in registry:
        pytest.skip("conv2d/maxpool2d are not installed")
    pytest.importorskip("sklearn")
    assert _train(EXAMPLES / "digits_cnn.yaml", tmp_path / "run", "--epochs", "3") == 0
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val_accuracy"] > 0.85  # chance is 0.10; the full 15 epochs reach >= 0.97


def test_plot_writes_curves_or_says_how_to_get_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_file = tiny_model(tmp_path, epochs=2)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert _train(model_file, tmp_path / "run", "--plot") == 2
        assert "nnplug[plot]" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()  # refused before training
    else:
        assert _train(model_file, tmp_path / "run", "--plot") == 0
        assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_interrupted_at_many_steps_every_resume_reproduces_the_losses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGINT and SIGTERM at steps spread over the run (mid-epoch and at epoch ends): each
    interrupted run resumes to the uninterrupted run's metrics and weights, bit for bit."""
    model_file = tiny_model(tmp_path, epochs=3, batch_size=16, optimizer={"type": "sgd", "lr": 0.05,
                                                                         "momentum": 0.9, "nesterov": True})
    assert _train(model_file, tmp_path / "whole") == 0
    whole_metrics = (tmp_path / "whole" / "metrics.jsonl").read_bytes()
    whole = weights_of(tmp_path / "whole")
    steps = (1, 4, 5, 6, 10, 13)  # 5 batches per epoch: mid-epoch, at and just after epoch ends
    for sig in (signal.SIGINT, signal.SIGTERM):
        for step in steps:
            out = tmp_path / f"cut-{sig}-{step}"
            with monkeypatch.context() as patch:
                _signal_at_step(patch, step, sig)
                assert _train(model_file, out) in (130, 143)
            assert main(["train", "--resume", str(out), "--quiet"]) == 0
            assert (out / "metrics.jsonl").read_bytes() == whole_metrics, (sig, step)
            cut = weights_of(out)
            assert all(whole[k].tobytes() == cut[k].tobytes() for k in whole), (sig, step)
    capsys.readouterr()


def test_a_node_the_loss_does_not_depend_on_is_neither_run_nor_trained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_file = tiny_model(tmp_path, epochs=2, optimizer={"type": "adam", "lr": 0.01, "weight_decay": 0.1})
    description = yaml.safe_load(model_file.read_text())
    description["layers"].append({"type": "dense", "name": "aside", "units": 5, "inputs": ["hidden"]})
    description["loss"]["inputs"] = ["logits"]
    model_file.write_text(yaml.safe_dump(description))
    model = nnplug.Model.from_file(model_file)
    assert model.unused == ("aside",) and "unused: 'aside': the loss ('logits') does not" in model.summary()
    aside = model.node("aside")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an unused node ran")

    aside.layer.forward = refuse  # type: ignore[method-assign]
    x = np.ones((2, 1, 4, 4))
    model.forward(x)
    _, grads = model.loss_and_grads(x, np.array([0, 1]))
    assert not grads["aside"]["w"].any()

    assert main(["train", str(model_file), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert "nnplug: warning: unused: 'aside'" in capsys.readouterr().err
    initial = nnplug.Model.from_file(model_file).params["aside"]
    trained = weights_of(tmp_path / "run")
    np.testing.assert_array_equal(trained["aside/w"], initial["w"])  # weight decay left it alone
    assert not np.array_equal(trained["hidden/w"], nnplug.Model.from_file(model_file).params["hidden"]["w"])


def test_a_run_stopped_before_its_first_checkpoint_says_so_on_resume_and_reuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_file = tiny_model(tmp_path, epochs=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text("{}")  # what a second Ctrl-C during the first save leaves
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert "the run has no checkpoint (manifest.json is not written" in capsys.readouterr().err
    assert _train(model_file, run) == 2
    assert "a run stopped before its first checkpoint: delete it to start again" in capsys.readouterr().err


def test_an_edited_runs_optimizer_state_is_refused_naming_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nnplug.checkpoint import MANIFEST, atomic_write

    assert _train(tiny_model(tmp_path, epochs=1), tmp_path / "run") == 0
    model_json = tmp_path / "run" / "model.json"
    resolved = json.loads(model_json.read_text())
    resolved["train"]["optimizer"] = {"type": "sgd", "lr": 0.1}
    text = json.dumps(resolved).encode()
    atomic_write(model_json, lambda f: f.write(text))
    manifest = json.loads((tmp_path / "run" / MANIFEST).read_text())
    manifest["model"]["sha256"] = hashlib.sha256(text).hexdigest()
    atomic_write(tmp_path / "run" / MANIFEST, lambda f: f.write(json.dumps(manifest).encode()))
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "2", "--quiet"]) == 2
    assert f"{tmp_path / 'run'}: optimizer state is for 'adam', but the model file asks for 'sgd'" in (
        capsys.readouterr().err)


def test_without_file_locks_a_run_trains_with_a_warning_and_resume_of_a_non_run_leaves_no_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import fcntl

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    (tmp_path / "plain").mkdir()
    assert main(["train", "--resume", str(tmp_path / "plain"), "--quiet"]) == 2
    assert not (tmp_path / "plain" / ".lock").exists()
    capsys.readouterr()
    monkeypatch.setattr(fcntl, "flock", no_locks)  # as on NFS without its lock service
    assert _train(tiny_model(tmp_path, epochs=1), tmp_path / "run") == 0
    assert "cannot lock the run directory (No locks available)" in capsys.readouterr().err
