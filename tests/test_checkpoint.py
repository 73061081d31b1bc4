"""Run directories: round trip, atomic saves under faults and kill -9, refusing bad files."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import sys
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runkit import tiny_model, weights_of

import nnplug
from nnplug import checkpoint
from nnplug.checkpoint import load_checkpoint
from nnplug.cli import main


@pytest.fixture(scope="module")
def registry() -> nnplug.Registry:
    return nnplug.load_registry()


@pytest.fixture
def run(tmp_path: Path) -> Path:
    assert main(["train", str(tiny_model(tmp_path, epochs=2)), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    return tmp_path / "run"


def _manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "manifest.json").read_text())


def _rewrite_weights(run_dir: Path, arrays: dict[str, Any], *, allow_pickle: bool = False) -> None:
    """Replace the weights file and update its checksum, as a forger would."""
    manifest = _manifest(run_dir)
    path = run_dir / manifest["weights"]["file"]
    np.savez(path, **arrays)
    manifest["weights"]["sha256"] = checkpoint.sha256_of(path)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def test_run_directory_holds_model_weights_optimizer_metrics_and_manifest(run: Path) -> None:
    manifest = _manifest(run)
    names = {p.name for p in run.iterdir()}
    assert {"model.json", "manifest.json", "metrics.jsonl", ".lock", manifest["weights"]["file"],
            manifest["optimizer"]["file"]} == names
    assert set(weights_of(run)) == {"hidden/w", "hidden/b", "logits/w", "logits/b"}
    assert manifest["layer_types"] == {t: "nnplug" for t in ("dense", "flatten", "relu", "softmax_cross_entropy")}
    assert manifest["nnplug"] == nnplug.__version__ and manifest["plugins"]["nnplug"]
    assert manifest["weights"]["sha256"] == checkpoint.sha256_of(run / manifest["weights"]["file"])


def test_save_then_evaluate_round_trip_gives_the_training_metrics(
    run: Path, registry: nnplug.Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    ckpt = load_checkpoint(run, registry)
    for key, value in weights_of(run).items():
        node, name = key.split("/")
        np.testing.assert_array_equal(ckpt.model.params[node][name], value)
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"loss {last['val_loss']:.4f}" in out and f"accuracy {last['val_accuracy']:.2%}" in out
    assert main(["evaluate", str(run), "--min-accuracy", "1.0"]) == (0 if last["val_accuracy"] == 1 else 1)


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign"])
def test_damaged_weights_are_refused_never_loaded(
    run: Path, tmp_path: Path, registry: nnplug.Registry, damage: str
) -> None:
    path = run / _manifest(run)["weights"]["file"]
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:  # the same model trained with another seed: a valid file, the wrong numbers
        other = tmp_path / "other"
        assert main(["train", str(run / "model.json"), "--out", str(other), "--quiet", "--seed", "7"]) == 0
        data = bytearray((other / _manifest(other)["weights"]["file"]).read_bytes())
    path.write_bytes(bytes(data))
    with pytest.raises(nnplug.ConfigError, match="does not match the SHA-256"):
        load_checkpoint(run, registry)


def test_every_truncation_and_single_bit_flip_is_detected(run: Path, registry: nnplug.Registry) -> None:
    path = run / _manifest(run)["weights"]["file"]
    original = path.read_bytes()
    rng = np.random.default_rng(0)
    cuts = rng.integers(0, len(original), size=20)
    flips = rng.integers(0, len(original) * 8, size=20)
    variants = [original[:c] for c in cuts]
    for bit in flips:
        data = bytearray(original)
        data[bit // 8] ^= 1 << (bit % 8)
        variants.append(bytes(data))
    for data in variants:
        path.write_bytes(data)
        with pytest.raises(nnplug.ConfigError, match="SHA-256"):
            load_checkpoint(run, registry)


def test_weights_that_do_not_fit_the_model_are_refused_naming_them(run: Path, registry: nnplug.Registry) -> None:
    weights = weights_of(run)
    weights["hidden/w"] = np.zeros((9, 16))
    del weights["logits/b"]
    weights["extra/w"] = np.zeros(2)
    _rewrite_weights(run, weights)
    with pytest.raises(nnplug.ConfigError) as info:
        load_checkpoint(run, registry)
    message = str(info.value)
    assert "'hidden/w' has shape (9, 16)" in message and "(8, 16)" in message
    assert "missing weight 'logits/b'" in message and "unexpected weight 'extra/w'" in message


@pytest.mark.parametrize("dtype", [np.int64, np.complex128])
def test_weights_of_a_non_float_dtype_are_refused_naming_the_file_and_the_array(
    run: Path, registry: nnplug.Registry, dtype: type
) -> None:
    # right names and shapes, wrong kind of number: casting would silently drop fractions or imaginary parts
    weights = weights_of(run)
    weights["hidden/w"] = (weights["hidden/w"] * 10).astype(dtype)
    _rewrite_weights(run, weights)
    with pytest.raises(nnplug.ConfigError) as info:
        load_checkpoint(run, registry)
    message = str(info.value)
    assert _manifest(run)["weights"]["file"] in message
    assert f"'hidden/w' has dtype {np.dtype(dtype)}, expected floats" in message


def _forge_archive(run_dir: Path, key: str, members: dict[str, bytes]) -> None:
    """Replace the weights (``key`` "weights") or optimizer file by a zip of raw members, with
    its checksum updated, as a forger would."""
    manifest = _manifest(run_dir)
    path = run_dir / manifest[key]["file"]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    manifest[key]["sha256"] = checkpoint.sha256_of(path)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def test_a_header_declaring_a_huge_array_is_refused_before_any_allocation(
    run: Path, registry: nnplug.Registry
) -> None:
    # The header claims 2**40 float64s (8 TiB); only a few bytes follow it.
    members = {f"{k}.npy": _npy_bytes(v) for k, v in weights_of(run).items()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)})
    members["hidden/w.npy"] = header.getvalue() + b"\0" * 64
    _forge_archive(run, "weights", members)
    with pytest.raises(nnplug.ConfigError, match=r"'hidden/w' declares shape \(1099511627776,\) .* holds only"):
        load_checkpoint(run, registry)


def test_an_optimizer_zip_bomb_is_refused_without_decompressing_it(run: Path, registry: nnplug.Registry) -> None:
    # 256 MiB of zeros deflate to about 256 KiB; its header's shape gives it away unread.
    optim = dict(np.load(run / _manifest(run)["optimizer"]["file"]))
    members = {f"{k}.npy": _npy_bytes(v) for k, v in optim.items()}
    slot = next(iter(optim))
    members[f"{slot}.npy"] = _npy_bytes(np.zeros(2**25))
    _forge_archive(run, "optimizer", members)
    tracemalloc.start()
    try:
        with pytest.raises(nnplug.ConfigError, match=f"optimizer slot '{slot}' has shape \\(33554432,\\)"):
            load_checkpoint(run, registry)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


class _Payload:
    """Unpickling this would create a file: proof that nothing ran if the file is absent."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def test_pickled_weights_are_refused_and_their_payload_never_runs(
    run: Path, tmp_path: Path, registry: nnplug.Registry
) -> None:
    marker = tmp_path / "payload-ran"
    weights = weights_of(run)
    weights["hidden/w"] = np.array([_Payload(str(marker))], dtype=object)
    _rewrite_weights(run, weights)
    pickle.loads(pickle.dumps(_Payload(str(tmp_path / "control"))))
    assert (tmp_path / "control").exists()  # the payload works when unpickled...
    with pytest.raises(nnplug.ConfigError, match="pickled objects"):
        load_checkpoint(run, registry)
    assert not marker.exists()  # ...and loading never unpickled it


def test_manifest_naming_uninstalled_layer_types_is_refused(run: Path) -> None:
    manifest = _manifest(run)
    manifest["layer_types"]["test_fancy_conv"] = "nnplug-fancy"
    manifest["plugins"]["nnplug-fancy"] = "2.1"
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(nnplug.ConfigError, match=r"not installed: test_fancy_conv \(from nnplug-fancy 2.1\)"):
        load_checkpoint(run, nnplug.load_registry())
    assert main(["-p", "no:nnplug_layers", "evaluate", str(run)]) == 2


def test_a_run_whose_loss_came_from_a_module_given_with_p_says_to_add_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tiny_model(tmp_path, epochs=1)
    model.write_text(model.read_text().replace("softmax_cross_entropy", "buggy_softmax_ce_no_mean"))
    run = tmp_path / "run"
    assert main(["-p", "buggy_layers", "train", str(model), "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2  # without -p buggy_layers
    err = capsys.readouterr().err
    # it read "(from buggy_layers -)": the module's name and a version it never had
    assert "buggy_softmax_ce_no_mean (from module buggy_layers, given with -p when the run was saved: " \
        "add -p buggy_layers)" in err, err


def test_not_a_run_directory_is_a_clear_error(tmp_path: Path, registry: nnplug.Registry) -> None:
    with pytest.raises(nnplug.ConfigError, match="no such run directory"):
        load_checkpoint(tmp_path / "absent", registry)
    with pytest.raises(nnplug.ConfigError, match="not a run directory"):
        load_checkpoint(tmp_path, registry)


def test_fault_between_write_and_rename_leaves_the_previous_checkpoint(
    run: Path, registry: nnplug.Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = weights_of(run)
    ckpt = load_checkpoint(run, registry)
    ckpt.model.params = {n: {k: v + 1 for k, v in g.items()} for n, g in ckpt.model.params.items()}
    arrays, scalars = ckpt.optim_arrays, {**ckpt.optim_scalars, "step": ckpt.optim_scalars["step"] + 1}
    calls = {"n": 0}
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # weights and optimizer landed; the manifest rename fails
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        checkpoint.save_checkpoint(run, ckpt.model, arrays, scalars, ckpt.progress)
    monkeypatch.undo()
    after = weights_of(run)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    load_checkpoint(run, registry)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind


def test_saving_deletes_its_own_earlier_checkpoints_and_never_a_users_files(
    run: Path, registry: nnplug.Registry
) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    old_weights, old_optim = manifest["weights"]["file"], manifest["optimizer"]["file"]
    mine = ["weights-best.npz", "optim-mine.npz", "weights-epoch1-backup.npz", ".weights-notes.txt"]
    for name in mine:
        (run / name).write_bytes((run / old_weights).read_bytes())
    (run / f".{old_weights}.abc123.tmp").write_bytes(b"left by a killed save")
    ckpt = load_checkpoint(run, registry)
    scalars = {**ckpt.optim_scalars, "step": ckpt.optim_scalars["step"] + 1}
    checkpoint.save_checkpoint(run, ckpt.model, ckpt.optim_arrays, scalars, ckpt.progress)
    names = {p.name for p in run.iterdir()}
    assert set(mine) <= names  # the user's copies stay
    assert old_weights not in names and old_optim not in names  # the superseded checkpoint goes
    assert not [n for n in names if n.endswith(".tmp")]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_9_at_any_point_of_saving_leaves_a_loadable_checkpoint(tmp_path: Path, registry: nnplug.Registry) -> None:
    """A forked child trains and SIGKILLs itself at the k-th file-system step of saving
    (each fsync, rename and directory fsync); the parent then loads what is left."""
    model_file = tiny_model(tmp_path, epochs=5, batch_size=24)
    # The kill comes just before step k runs. model.json takes 3 steps (fsync, rename,
    # directory fsync); the first checkpoint's manifest rename, its commit point, is step 11:
    # from k = 12 on a checkpoint must load, before it there is no run yet.
    first_commit = 12
    points = list(range(1, 63))  # 6 saves of 9 steps, 3 for model.json, 5 metrics fsyncs
    loaded = 0
    for k in points:
        run_dir = tmp_path / f"run{k}"
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            try:
                calls = {"n": 0}
                real_fsync, real_replace = os.fsync, os.replace

                def count(real: Any, calls: dict[str, int] = calls, k: int = k) -> Any:
                    def wrapped(*a: Any) -> Any:
                        calls["n"] += 1
                        if calls["n"] == k:
                            os.kill(os.getpid(), signal.SIGKILL)
                        return real(*a)
                    return wrapped

                os.fsync, os.replace = count(real_fsync), count(real_replace)  # type: ignore[assignment]
                sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115
                os._exit(main(["train", str(model_file), "--out", str(run_dir), "--quiet"]))
            finally:
                os._exit(99)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) == 0, (k, status)
        if k < first_commit:
            refused = r"not a run directory|no such run|the run has no checkpoint"
            with pytest.raises(nnplug.ConfigError, match=refused):
                load_checkpoint(run_dir, registry)
            continue
        ckpt = load_checkpoint(run_dir, registry)
        assert all(np.isfinite(v).all() for g in ckpt.model.params.values() for v in g.values())
        loaded += 1
    assert loaded == len(points) - first_commit + 1 >= 50
