"""Data: the digits set, .npz files, and bad data refused before a weight changes."""

from __future__ import annotations

import sys
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runkit import blob_data, tiny_model

import nnplug
from nnplug import data as data_module
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


def test_regression_targets_overflowing_float32_are_refused_naming_y(tmp_path: Path) -> None:
    # targets reach the loss in the model's dtype: 1e39 is inf in float32, and train stopped
    # on an infinite loss that validate had let through
    model_file = tiny_model(tmp_path, dtype="float32")
    text = model_file.read_text().replace("softmax_cross_entropy", "mse").replace("units: 3", "units: 1")
    model_file.write_text(text)
    m = build_model(model_file, nnplug.load_registry())
    with pytest.raises(nnplug.ConfigError, match=r"here: y overflows float32 \(values up to 1e\+39\)"):
        check_arrays(np.zeros((8, 1, 4, 4)), np.full((8, 1), 1e39), m, "here")


def _raise_memory_error(*args: Any) -> None:
    raise MemoryError("Unable to allocate 2.00 GiB for an array with shape (268435456,)")


@pytest.mark.parametrize("problem", ["object", "missing_y", "not_zip", "absent", "only_x_val", "no_rows",
                                     "empty_x_val", "unreadable", "too_large", "over_limit", "bzip2"])
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
        "over_limit": "array 'x' (x.npy): decompresses to 8,388,736 bytes", "bzip2": "compressed with bzip2",
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
    elif problem == "over_limit":
        monkeypatch.setenv("NNPLUG_MAX_DATA_BYTES", "1M")
        _zeros_npz(npz, 2**16)
    elif problem == "bzip2":  # zipfile would decompress a bzip2 member whole to read its header
        _zeros_npz(npz, 2**16, zipfile.ZIP_BZIP2)
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


def _zeros_npz(path: Path, n: int, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """x: n zero images (n, 1, 4, 4) float64 (n * 128 bytes, compressing about 1000:1), y: labels."""
    np.savez(path, x=np.zeros((n, 1, 4, 4)), y=np.arange(n) % 3)
    with zipfile.ZipFile(path) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_npz_data_past_the_limit_is_refused_before_any_array_is_read(
    model: nnplug.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    npz = _zeros_npz(tmp_path / "bomb.npz", 2**16)  # 8 MiB of x in 9 KB: a zip bomb in miniature
    assert npz.stat().st_size < 2**14
    monkeypatch.setenv("NNPLUG_MAX_DATA_BYTES", "1M")
    tracemalloc.start()
    try:
        with pytest.raises(nnplug.ConfigError) as info:
            load_dataset(DataConfig(source="npz", path=str(npz)), model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**19  # x alone would be 8 MiB
    message = str(info.value)
    assert message.startswith(f"data: {npz}, array 'x' (x.npy): decompresses to 8,388,736 bytes "
                              "(shape (65536, 1, 4, 4), float64) from ")
    assert "x, y together 8,913,152 bytes: more than the 1,048,576 bytes" in message
    assert "NNPLUG_MAX_DATA_BYTES" in message
    monkeypatch.setenv("NNPLUG_MAX_DATA_BYTES", "16M")  # the way around it, for data meant to be large
    assert len(load_dataset(DataConfig(source="npz", path=str(npz), validation=0.0), model).x) == 2**16


@pytest.mark.parametrize(("value", "limit"), [(None, 512 * 2**20), ("", 512 * 2**20), ("1000", 1000),
                                              ("4G", 4 * 2**30), ("2 GiB", 2 * 2**30), ("64k", 2**16)])
def test_the_data_limit_is_512_mib_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch, value: str | None, limit: int
) -> None:
    if value is None:
        monkeypatch.delenv("NNPLUG_MAX_DATA_BYTES", raising=False)
    else:
        monkeypatch.setenv("NNPLUG_MAX_DATA_BYTES", value)
    assert data_module.max_data_bytes() == limit


@pytest.mark.parametrize("value", ["lots", "0", "-1", "1.5G", "4P", "9" * 40])
def test_a_bad_data_limit_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NNPLUG_MAX_DATA_BYTES", value)
    with pytest.raises(nnplug.ConfigError, match=r"^NNPLUG_MAX_DATA_BYTES: expected a positive number of bytes"):
        data_module.max_data_bytes()


def test_stored_npz_data_past_the_limit_load_only_compressed_data_are_capped(
    model: nnplug.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a stored file is as large as what it loads: no surprise to refuse
    monkeypatch.setenv("NNPLUG_MAX_DATA_BYTES", "1M")
    npz = _zeros_npz(tmp_path / "stored.npz", 2**16, zipfile.ZIP_STORED)
    assert npz.stat().st_size > 2**23
    data = load_dataset(DataConfig(source="npz", path=str(npz)), model)
    assert len(data.x) + (0 if data.x_val is None else len(data.x_val)) == 2**16


def test_a_bad_label_past_the_first_block_of_4096_is_refused_at_load(tmp_path: Path) -> None:
    # labels are checked in blocks of 4096: the last, partial block is checked too
    y = np.arange(5000) % 3
    y[4500] = 7
    np.savez(tmp_path / "many.npz", x=np.zeros((5000, 1, 4, 4)), y=y)
    m = build_model(tiny_model(tmp_path, data={"source": "npz", "path": "many.npz", "validation": 0.0}),
                    nnplug.load_registry())
    with pytest.raises(nnplug.ConfigError) as info:
        load_dataset(m.spec.data, m, base_dir=tmp_path)  # type: ignore[arg-type]
    assert "label 7 is outside the 3 classes" in str(info.value) and "many.npz" in str(info.value)


def _npz_model(tmp_path: Path, validation: float | None, **val_arrays: Any) -> nnplug.Model:
    blob_data(tmp_path / "d.npz", n=40, **val_arrays)
    data = {"source": "npz", "path": "d.npz", **({} if validation is None else {"validation": validation})}
    return build_model(tiny_model(tmp_path, data=data), nnplug.load_registry())


def test_a_validation_fraction_beside_x_val_is_refused_not_ignored(tmp_path: Path) -> None:
    m = _npz_model(tmp_path, 0.25, x_val=np.zeros((5, 1, 4, 4)), y_val=np.arange(5) % 3)
    with pytest.raises(nnplug.ConfigError, match=r"data -> validation: 0.25 would be ignored: .*d.npz holds x_val"):
        load_dataset(m.spec.data, m, base_dir=tmp_path)  # type: ignore[arg-type]
    # a run trained before the rule still evaluates and resumes (x_val is its validation set)
    data = load_dataset(m.spec.data, m, base_dir=tmp_path, saved_run=True)  # type: ignore[arg-type]
    assert data.x_val is not None and len(data.x_val) == 5


# 0.8 and 3.6 examples round up: round(), not int()
@pytest.mark.parametrize(("validation", "held_out"),
                         [(0.001, None), (0.025, 1), (0.02, 1), (0.09, 4), (0.0, 0), (None, 8)])
def test_a_validation_fraction_that_rounds_to_no_example_is_refused(
        tmp_path: Path, validation: float | None, held_out: int | None) -> None:
    m = _npz_model(tmp_path, validation)
    if held_out is None:
        with pytest.raises(nnplug.ConfigError, match=r"0.001 of 40 examples holds out none .* 0.025 or more"):
            load_dataset(m.spec.data, m, base_dir=tmp_path)  # type: ignore[arg-type]
        return
    data = load_dataset(m.spec.data, m, base_dir=tmp_path)  # type: ignore[arg-type]
    assert (0 if data.x_val is None else len(data.x_val)) == held_out  # None: the default 0.2


def test_a_bad_x_val_is_named_x_val(model: nnplug.Model) -> None:
    with pytest.raises(nnplug.ConfigError, match=r"x_val has examples of shape \(16,\)"):
        check_arrays(np.zeros((8, 16)), np.arange(8) % 3, model, "d.npz (x_val, y_val)", names=("x_val", "y_val"))


def test_the_held_out_examples_are_the_same_in_every_nnplug_version() -> None:
    # a run evaluated or resumed by a later nnplug must hold out the examples it was trained
    # without: the split's seed is part of the run format (numpy keeps default_rng's streams)
    x = np.arange(20.0)
    train_x, _, val_x, val_y = data_module.split(x, x, 0.25)
    assert val_x is not None and val_y is not None
    assert sorted(val_x.astype(int).tolist()) == [4, 8, 10, 15, 16]
    np.testing.assert_array_equal(val_x, val_y)  # x and y split alike
    assert sorted([*train_x.astype(int).tolist(), 4, 8, 10, 15, 16]) == list(range(20))


def test_compressed_data_of_exactly_the_limit_load_one_byte_more_is_refused(
    model: nnplug.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    npz = _zeros_npz(tmp_path / "bomb.npz", 2**16)  # x and y decompress to 8,913,152 bytes together
    monkeypatch.setenv("NNPLUG_MAX_DATA_BYTES", "8913152")
    assert len(load_dataset(DataConfig(source="npz", path=str(npz), validation=0.0), model).x) == 2**16
    monkeypatch.setenv("NNPLUG_MAX_DATA_BYTES", "8913151")
    with pytest.raises(nnplug.ConfigError, match="more than the 8,913,151 bytes"):
        load_dataset(DataConfig(source="npz", path=str(npz), validation=0.0), model)


@pytest.mark.parametrize("edited", ["x", "y", "x_val", "y_val"])
def test_the_data_digest_changes_with_any_one_array(edited: str) -> None:
    # what resume refuses and evaluate warns about: a relabelled validation set too
    arrays = {"x": np.zeros((4, 2)), "y": np.arange(4), "x_val": np.zeros((2, 2)), "y_val": np.arange(2)}
    before = data_module.data_digest(data_module.Dataset(**arrays, origin="d.npz"))
    arrays[edited] = arrays[edited].copy()
    arrays[edited][-1] += 1
    assert data_module.data_digest(data_module.Dataset(**arrays, origin="d.npz")) != before  # type: ignore[arg-type]
