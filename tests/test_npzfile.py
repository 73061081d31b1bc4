"""Reading what a .npz archive declares before loading it (nnplug.npzfile)."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nnplug.npzfile import declared_arrays


def _header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_declared_shapes_and_dtypes_match_what_np_load_reads(tmp_path: Path) -> None:
    arrays = {"w": np.zeros((3, 4), np.float32), "layer/b": np.arange(5.0), "scalar": np.float64(2.0),
              "labels": np.arange(7, dtype=np.int16)}
    np.savez(tmp_path / "a.npz", **arrays)
    declared = declared_arrays(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as loaded:
        assert set(declared) == set(loaded.files)
        for name in loaded.files:
            assert (declared[name].shape, declared[name].dtype) == (loaded[name].shape, loaded[name].dtype)
            assert declared[name].nbytes == loaded[name].nbytes


@pytest.mark.parametrize("shape", [(100,), (2**40,), (2**40, 2**40), (2**62, 4)])  # the last two overflow int64
def test_a_header_declaring_more_than_its_member_holds_is_refused(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = _archive(tmp_path / "lie.npz", {"x.npy": _header(shape) + b"\0" * 64})
    with pytest.raises(ValueError, match=r"array 'x' declares shape .* holds only \d+ bytes"):
        declared_arrays(path)


def test_a_zip_bomb_is_described_without_being_decompressed(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(2**23))  # 64 MiB of zeros, about 64 KiB deflated
    path = _archive(tmp_path / "bomb.npz", {"x.npy": buffer.getvalue()})
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        assert declared_arrays(path)["x"].nbytes == 2**26
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_an_unknown_npy_format_version_is_refused_by_name(tmp_path: Path) -> None:
    member = b"\x93NUMPY\x07\x00" + b"\0" * 64
    with pytest.raises(ValueError, match=r"'x'"):
        declared_arrays(_archive(tmp_path / "v7.npz", {"x.npy": member}))


@pytest.mark.parametrize("payload", [b"", b"not an array", b"\x93NUMPY\x01\x00{'descr'"])
def test_an_unreadable_member_is_named(tmp_path: Path, payload: bytes) -> None:
    path = _archive(tmp_path / "d.npz", {"x.npy": _header((2,)) + bytes(16), "y.npy": payload})
    with pytest.raises(ValueError, match=r"array 'y' \(member 'y.npy'\): "):
        declared_arrays(path)


@pytest.mark.parametrize(("method", "name"), [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "LZMA")])
def test_bzip2_and_lzma_members_are_refused_before_their_header_is_read(
    tmp_path: Path, method: int, name: str
) -> None:
    # zipfile decompresses a bzip2/LZMA read whole: 1 KB of bzip2 became 800 MB for a header.
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(2**21))  # 16 MiB of zeros
    path = tmp_path / "packed.npz"
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        archive.writestr("x.npy", buffer.getvalue())
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"array 'x' \(member 'x.npy'\) is compressed with {name}.*np.savez"):
            declared_arrays(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
