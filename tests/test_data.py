"""Data: the digits set, .npz files, and bad data refused before a weight changes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runkit import blob_data, tiny_model

import nnplug
from nnplug.cli import main
from nnplug.data import DataConfig, check_arrays, load_dataset, load_digits_arrays
from nnplug.modelfile import build_model


@pytest.fixture
def model(tmp_path: Path) -> nnplug.Model:
    return build_model(tiny_model(tmp_path), nnplug.load_registry())


def test_digits_are_1797_images_in_unit_range_split_by_the_fraction(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    x, y = load_digits_arrays()
    assert x.shape == (1797, 1, 8, 8) and y.shape == (1797,)
    assert x.min() == 0.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))
    spec = {"name": "d", "input": [1, 8, 8], "layers": [{"type": "flatten"}, {"type": "dense", "units": 10}],
            "loss": {"type": "softmax_cross_entropy"}, "data": {"source": "digits", "validation": 0.25}}
    m = nnplug.Model.from_config(spec)
    first = load_dataset(m.spec.data, m)  # type: ignore[arg-type]
    again = load_dataset(m.spec.data, m)  # type: ignore[arg-type]
    assert len(first.x_val) == round(0.25 * 1797) and len(first.x) + len(first.x_val) == 1797  # type: ignore[arg-type]
    np.testing.assert_array_equal(first.y_val, again.y_val)  # a fixed split
    assert first.x.dtype == np.float32


def test_digits_without_scikit_learn_say_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(nnplug.ConfigError, match=r'pip install "nnplug\[examples\]"'):
        load_digits_arrays()


def test_npz_path_is_relative_to_the_model_file_and_x_val_is_used(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    blob_data(tmp_path / "sub" / "d.npz", n=40, x_val=np.zeros((5, 1, 4, 4)), y_val=np.arange(5) % 3)
    model_file = tiny_model(tmp_path / "sub", data={"source": "npz", "path": "d.npz"})
    m = build_model(model_file, nnplug.load_registry())
    data = load_dataset(m.spec.data, m, base_dir=model_file.parent)  # type: ignore[arg-type]
    assert len(data.x) == 40 and len(data.x_val) == 5  # type: ignore[arg-type]


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("nan", {"x": np.full((8, 1, 4, 4), np.nan)}, "x holds NaN or infinite values (first at index (0, 0, 0, 0))"),
    ("inf", {"x": np.full((8, 1, 4, 4), np.inf)}, "x holds NaN or infinite"),
    ("overflow", {"x": np.full((8, 1, 4, 4), 1e300)}, None),  # fine in float64; see the float32 test
    ("label", {"y": np.array([0, 1, 2, 3, 0, 1, 2, 0])}, "label 3 is outside the 3 classes"),
    ("negative", {"y": np.array([0, 1, 2, -1, 0, 1, 2, 0])}, "outside the 3 classes"),
    ("float_labels", {"y": np.zeros(8)}, "labels must be integers"),
    ("lengths", {"y": np.zeros(7, dtype=int)}, "x has 8 examples but y has 7"),
    ("shape", {"x": np.zeros((8, 16))}, "x has examples of shape (16,), but the model's input is (1, 4, 4)"),
    ("strings", {"x": np.full((8, 1, 4, 4), "a")}, "x has dtype <U1 (string)"),
    ("complex", {"x": np.zeros((8, 1, 4, 4), dtype=complex)}, "x has dtype complex128 (complex)"),
    ("string_labels", {"y": np.array(["a"] * 8)}, "y has dtype <U1 (string)"),
]


@pytest.mark.parametrize(("case", "arrays", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_arrays_are_refused_saying_what_and_where(
    model: nnplug.Model, case: str, arrays: dict[str, Any], message: str | None
) -> None:
    x = arrays.get("x", np.zeros((8, 1, 4, 4)))
    y = arrays.get("y", np.arange(8) % 3)
    if message is None:
        check_arrays(x, y, model, "here")
        return
    with pytest.raises(nnplug.ConfigError) as info:
        check_arrays(x, y, model, "train.npz (x, y)")
    assert message in str(info.value) and "train.npz (x, y)" in str(info.value)


def test_values_overflowing_float32_are_refused(tmp_path: Path) -> None:
    m = build_model(tiny_model(tmp_path, dtype="float32"), nnplug.load_registry())
    with pytest.raises(nnplug.ConfigError, match="overflows float32"):
        check_arrays(np.full((8, 1, 4, 4), 1e300), np.arange(8) % 3, m, "here")


def _raise_memory_error(*args: Any) -> None:
    raise MemoryError("Unable to allocate 2.00 GiB for an array with shape (268435456,)")


@pytest.mark.parametrize("problem", ["object", "missing_y", "not_zip", "absent", "only_x_val", "no_rows",
                                     "empty_x_val", "unreadable", "too_large"])
def test_bad_npz_files_stop_train_before_a_run_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, problem: str
) -> None:
    model_file = tiny_model(tmp_path)
    npz = tmp_path / "blobs.npz"
    expected = {
        "object": "without unpickling", "missing_y": "missing array(s) y", "not_zip": "not a readable .npz",
        "absent": "no such file", "only_x_val": "x_val and y_val go together",
        "no_rows": "x and y hold no examples", "empty_x_val": "x_val and y_val hold no examples",
        "unreadable": "cannot read (Permission denied)", "too_large": "too large to load and check in memory",
    }[problem]
    if problem == "object":
        np.savez(npz, x=np.array([{"a": 1}] * 8, dtype=object), y=np.arange(8) % 3)
    elif problem == "missing_y":
        np.savez(npz, x=np.zeros((8, 1, 4, 4)))
    elif problem == "not_zip":
        npz.write_bytes(b"not a zip file at all")
    elif problem == "absent":
        npz.unlink()
    elif problem == "no_rows":
        np.savez(npz, x=np.zeros((0, 1, 4, 4)), y=np.zeros(0, dtype=int))
    elif problem == "empty_x_val":  # an accuracy "on 0 validation examples" would read 0%
        blob_data(npz, x_val=np.zeros((0, 1, 4, 4)), y_val=np.zeros(0, dtype=int))
    elif problem == "unreadable":  # root reads any file: the refusal is injected where it would happen
        real_open = open

        def refusing_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            if Path(str(file)) == npz:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr("builtins.open", refusing_open)
    elif problem == "too_large":  # an honest header, but more than the machine holds
        monkeypatch.setattr("nnplug.data.check_arrays", _raise_memory_error)
    else:
        blob_data(npz, x_val=np.zeros((2, 1, 4, 4)))
    assert main(["train", str(model_file), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(npz) in err
    assert not (tmp_path / "run").exists()


def test_data_config_requires_a_path_exactly_for_npz() -> None:
    with pytest.raises(ValueError, match="needs a path"):
        DataConfig(source="npz")
    with pytest.raises(ValueError, match="takes no path"):
        DataConfig(source="digits", path="x.npz")
