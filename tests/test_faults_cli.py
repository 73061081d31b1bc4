"""Hostile input to the ``nnplug`` command, as a user would meet it: every case exits 2 with
one clear message naming its subject, never a traceback, and leaves a saved run untouched."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from runkit import tiny_model

from nnplug.cli import main


@dataclass
class Case:
    argv: list[str]
    subject: str  # must appear in the message
    watch: Path | None = None  # a run directory that must come out unchanged
    unreadable: Path | None = None  # reading it raises PermissionError (tests run as root too)


def _model(tmp: Path, name: str, content: str | bytes) -> Case:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return Case(["validate", str(path)], str(path))


def _npz(tmp: Path, **arrays: Any) -> Case:
    model_file = tiny_model(tmp)
    if arrays:
        np.savez(tmp / "blobs.npz", **arrays)
    return Case(["train", str(model_file), "--out", str(tmp / "run"), "--quiet"], str(tmp / "blobs.npz"))


def _train(tmp: Path, *options: str) -> Case:
    return Case(["train", str(tiny_model(tmp)), "--out", str(tmp / "run"), "--quiet", *options], options[0])


def _tampered(tmp: Path, run: Path, command: str, edit: Callable[[dict[str, Any]], Any], subject: str) -> Case:
    """A copy of a saved run whose manifest.json is edited (``edit`` may return new text)."""
    copy = tmp / "run"
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    text = edit(manifest)
    (copy / "manifest.json").write_text(text if isinstance(text, str) else json.dumps(manifest))
    argv = ["evaluate", str(copy)] if command == "evaluate" else ["train", "--resume", str(copy), "--quiet"]
    return Case(argv, subject, watch=copy)


def _set(*path_and_value: Any) -> Callable[[dict[str, Any]], None]:
    *path, value = path_and_value

    def edit(manifest: dict[str, Any]) -> None:
        for key in path[:-1]:
            manifest = manifest[key]
        manifest[path[-1]] = value

    return edit


def _directory_as_model(tmp: Path, run: Path) -> Case:
    (tmp / "dir.yaml").mkdir()
    return Case(["validate", str(tmp / "dir.yaml")], "is a directory")


def _unreadable_model(tmp: Path, run: Path) -> Case:
    case = _model(tmp, "locked.yaml", "input: [4]\n")
    case.subject, case.unreadable = "Permission denied", tmp / "locked.yaml"
    return case


def _npz_replaced_by(tmp: Path, make: Callable[[Path], Any], subject: str) -> Case:
    case = _npz(tmp)
    (tmp / "blobs.npz").unlink()
    make(tmp / "blobs.npz")
    case.subject = subject
    return case


def _npz_with_a_lying_header(path: Path) -> None:
    """x's header declares 2**40 examples (128 TiB); 64 bytes follow it."""
    header, y = io.BytesIO(), io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**40, 1, 4, 4)})
    np.lib.format.write_array(y, Y)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 64)
        archive.writestr("y.npy", y.getvalue())


def _random_directory(tmp: Path, command: list[str]) -> Case:
    (tmp / "photos").mkdir()
    (tmp / "photos" / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    return Case([*command, str(tmp / "photos")], "not a run directory")


def _manifest_unreadable(tmp: Path, run: Path) -> Case:
    case = _tampered(tmp, run, "evaluate", lambda m: None, "Permission denied")
    case.unreadable = tmp / "run" / "manifest.json"
    return case


def _unknown_plugin_in_manifest(manifest: dict[str, Any]) -> None:
    manifest["plugins"] = [1]  # a list where a mapping belongs, and a type nobody installed
    manifest["layer_types"]["frobnicate"] = ["x"]


def _out_inside_a_file(tmp: Path, run: Path) -> Case:
    (tmp / "afile").write_text("")
    case = _train(tmp, "--out", str(tmp / "afile" / "run"))
    case.subject = "afile"
    return case


X, Y = np.zeros((12, 1, 4, 4)), np.arange(12) % 3
DIGITS_5000 = "1" + "0" * 5000
HOSTILE: dict[str, Callable[[Path, Path], Case]] = {
    "empty_file": lambda t, r: _model(t, "empty.yaml", ""),
    "directory_as_model": _directory_as_model,
    "binary_file": lambda t, r: _model(t, "binary.yaml", bytes(range(256)) * 4),
    "nul_character": lambda t, r: _model(t, "nul.yaml", "input: [4]\x00\n"),
    "python_object_tag": lambda t, r: _model(
        t, "tag.yaml", f"input: !!python/object/apply:os.system ['touch {t}/PWNED']\nlayers: []\n"),
    "toml_wrong_types": lambda t, r: _model(t, "bad.toml", 'input = "abc"\nlayers = 5\n[loss]\ntype = 3\n'),
    "json_5000_digit_int": lambda t, r: _model(
        t, "big.json", f'{{"input": [4], "layers": [{{"type": "dense", "units": {DIGITS_5000}}}]}}'),
    "yaml_5000_digit_int": lambda t, r: _model(t, "big.yaml", f"input: [{DIGITS_5000}]\n"),
    "toml_5000_digit_int": lambda t, r: _model(t, "big.toml", f"input = [{DIGITS_5000}]\n"),
    "unknown_extension": lambda t, r: _model(t, "model.txt", "input: [4]\n"),
    "unreadable_model": _unreadable_model,
    "npz_object_array": lambda t, r: _npz(t, x=X.astype(object), y=Y),
    "npz_missing_y": lambda t, r: _npz(t, x=X),
    "npz_not_a_zip": lambda t, r: _npz_replaced_by(t, lambda p: p.write_bytes(b"PK? no"), "not a readable .npz"),
    "npz_lying_header": lambda t, r: _npz_replaced_by(t, _npz_with_a_lying_header, "'x' declares shape"),
    "npz_path_is_a_directory": lambda t, r: _npz_replaced_by(t, Path.mkdir, "not a regular file"),
    "evaluate_random_directory": lambda t, r: _random_directory(t, ["evaluate"]),
    "evaluate_a_model_file": lambda t, r: Case(["evaluate", str(tiny_model(t))], "not a run directory (a file"),
    "resume_random_directory": lambda t, r: _random_directory(t, ["train", "--resume"]),
    "manifest_invalid_json": lambda t, r: _tampered(t, r, "evaluate", lambda m: "{not json", "not a valid manifest"),
    "manifest_a_list": lambda t, r: _tampered(t, r, "resume", lambda m: "[1, 2]", "not an nnplug manifest"),
    "manifest_deep_nesting": lambda t, r: _tampered(t, r, "resume", lambda m: "[" * 10**5 + "]" * 10**5,
                                                    "not a valid manifest"),
    "manifest_unreadable": _manifest_unreadable,
    "manifest_epoch_a_string": lambda t, r: _tampered(t, r, "resume", _set("progress", "epoch", "three"),
                                                      "progress.epoch"),
    "manifest_seed_a_string": lambda t, r: _tampered(t, r, "resume", _set("progress", "seed", "s"), "progress.seed"),
    "manifest_seen_a_bool": lambda t, r: _tampered(t, r, "resume", _set("progress", "seen", True), "progress.seen"),
    "manifest_history_of_ints": lambda t, r: _tampered(t, r, "evaluate", _set("progress", "history", [1, 2]),
                                                       "progress.history"),
    "manifest_history_shorter_than_its_epoch": lambda t, r: _tampered(t, r, "resume", _set("progress", "history", []),
                                                                      "progress.history holds 0 epoch(s)"),
    "manifest_loss_sum_nan": lambda t, r: _tampered(t, r, "resume", lambda m: json.dumps(m).replace(
        '"loss_sum": 0.0', '"loss_sum": NaN'), "progress.loss_sum"),
    "manifest_epochs_past_the_cap": lambda t, r: _tampered(t, r, "evaluate", _set("progress", "epochs", 10**12),
                                                          "manifest.json: progress.epochs: expected an int from 1 "
                                                          "to 100,000"),
    "manifest_epochs_zero": lambda t, r: _tampered(t, r, "resume", _set("progress", "epochs", 0), "progress.epochs"),
    "manifest_batch_past_the_epoch": lambda t, r: _tampered(t, r, "resume", _set("progress", "batch", 10**9),
                                                            "an epoch has"),
    "manifest_batch_at_the_epochs_end": lambda t, r: _tampered(t, r, "resume", _set("progress", "batch", 5),
                                                               "at batch 5, but an epoch has 5 batches"),
    "manifest_weights_outside_the_run": lambda t, r: _tampered(t, r, "evaluate",
                                                               _set("weights", "file", "../../etc/passwd"),
                                                               "bad weights file name"),
    "manifest_plugins_a_list": lambda t, r: _tampered(t, r, "evaluate", _unknown_plugin_in_manifest, "frobnicate"),
    "epochs_zero": lambda t, r: _train(t, "--epochs", "0"),
    "lr_negative": lambda t, r: _train(t, "--lr", "-1"),
    "lr_nan": lambda t, r: _train(t, "--lr", "nan"),
    "batch_size_zero": lambda t, r: _train(t, "--batch-size", "0"),
    "out_inside_a_file": _out_inside_a_file,
    "p_nonexistent": lambda t, r: Case(["-p", "nonexistent", "validate", str(tiny_model(t))], "'nonexistent'"),
    "gradcheck_unknown_type": lambda t, r: Case(["gradcheck", "nonexistent_type"], "'nonexistent_type'"),
    "min_accuracy_out_of_range": lambda t, r: Case(["evaluate", str(r), "--min-accuracy", "2"], "--min-accuracy"),
}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("saved")
    assert main(["train", str(tiny_model(tmp, epochs=1)), "--out", str(tmp / "run"), "--quiet"]) == 0
    return tmp / "run"


def _snapshot(run_dir: Path | None) -> dict[str, bytes]:
    if not run_dir:
        return {}
    snapshot = {}
    for p in sorted(run_dir.iterdir()):
        with open(p, "rb") as f:  # not through pathlib, which _deny may refuse
            snapshot[p.name] = f.read()
    return snapshot


def _deny(monkeypatch: pytest.MonkeyPatch, locked: Path) -> None:
    """Opening ``locked`` through pathlib (read_text, read_bytes, open) is refused."""
    for method in ("read_text", "read_bytes", "open"):
        real = getattr(Path, method)

        def refused(self: Path, *args: Any, real: Any = real, **kwargs: Any) -> Any:
            if self.resolve() == locked.resolve():
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, method, refused)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_exits_2_with_one_message_naming_its_subject(
    name: str, tmp_path: Path, saved_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    case = HOSTILE[name](tmp_path, saved_run)
    if case.unreadable:
        _deny(monkeypatch, case.unreadable)
    before = _snapshot(case.watch)
    status = main(case.argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    first, *rest = err.rstrip("\n").split("\n")
    assert first.startswith("nnplug: error: "), err
    if first.startswith("nnplug: error: "):
        assert all(line.startswith("  ") for line in rest), err  # continuation lines of one message
    assert case.subject in err, err
    assert _snapshot(case.watch) == before  # a refused run directory is left as it was
    assert not (tmp_path / "PWNED").exists()
    if case.watch is None:
        assert not (tmp_path / "run").exists()  # refused before a run directory was made


def test_hostile_input_as_a_real_process_prints_no_traceback(tmp_path: Path, saved_run: Path) -> None:
    """The same through ``python -m nnplug``: what the user's shell sees."""
    for name in ("nul_character", "npz_object_array", "manifest_deep_nesting"):
        (tmp_path / name).mkdir()
        case = HOSTILE[name](tmp_path / name, saved_run)
        proc = subprocess.run([sys.executable, "-m", "nnplug", *case.argv], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and case.subject in proc.stderr


def test_the_saved_run_itself_is_healthy(saved_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The control for the tampered copies: the untouched run evaluates."""
    assert main(["evaluate", str(saved_run)]) == 0
    assert yaml.safe_load((saved_run / "model.json").read_text())["name"] == "tiny"


def _must_not_run(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("started although the input should have been refused")


def test_a_resume_of_a_manifest_with_absurd_epochs_is_refused_before_training(
    tmp_path: Path, saved_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    case = _tampered(tmp_path, saved_run, "resume", _set("progress", "epochs", 10**12), "progress.epochs")
    before = _snapshot(case.watch)
    monkeypatch.setattr("nnplug.train.Trainer.run", _must_not_run)  # it would train 10**12 epochs
    assert main(case.argv) == 2
    err = capsys.readouterr().err
    assert f"{case.watch / 'manifest.json'}: progress.epochs: expected an int from 1 to 100,000" in err
    assert "got 1000000000000" in err and _snapshot(case.watch) == before


@pytest.mark.parametrize("examples", ["0", "100001", "10" + "0" * 20])
def test_gradcheck_examples_outside_1_to_100000_are_refused(
    examples: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("nnplug.property_runs.gradcheck_main", _must_not_run)  # it would run for days
    assert main(["gradcheck", "relu", "--examples", examples]) == 2
    assert f"--examples: expected a number from 1 to 100,000, got {int(examples)}" in capsys.readouterr().err


def _refuse(monkeypatch: pytest.MonkeyPatch, target: Any, name: str, code: int, where: Callable[[Any], bool]) -> None:
    """``target.name(path, ...)`` raises OSError(``code``) for the paths ``where`` accepts."""
    real = getattr(target, name)

    def refusing(path: Any, *args: Any, **kwargs: Any) -> Any:
        if where(path):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(target, name, refusing)


@pytest.mark.parametrize(("where", "wording"), [
    ("proc", "cannot create the run directory: No such file or directory"),
    ("under_a_file", "cannot create the run directory: Not a directory"),
    ("dangling_link", "cannot create the run directory: it is a symbolic link to gone, which does not exist"),
    ("read_only", "cannot create the run directory: Read-only file system"),
    ("read_only_empty_dir", "cannot write in the run directory: Read-only file system"),
], ids=lambda v: v if " " not in v else "")
def test_an_out_the_file_system_refuses_is_named_with_the_option_before_training(
    where: str, wording: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model_file = tiny_model(tmp_path)
    places = {"proc": Path("/proc/nnplug-test/run"), "under_a_file": model_file / "sub"}
    out = places.get(where, tmp_path / "ro" / "run")
    if where == "proc" and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc")
    if where == "dangling_link":
        out.parent.mkdir()
        out.symlink_to("gone")
    if where == "read_only":  # (chmod would not stop root, who may run the tests)
        _refuse(monkeypatch, Path, "mkdir", errno.EROFS, lambda path: Path(path) == out)
    if where == "read_only_empty_dir":
        out.mkdir(parents=True)
        _refuse(monkeypatch, os, "open", errno.EROFS, lambda path: Path(path).parent == out)
    monkeypatch.setattr("nnplug.train.Trainer.run", _must_not_run)
    assert main(["train", str(model_file), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"nnplug: error: --out {out}: {wording}\n"
