"""atomic_write, the one way a run directory's files are written: what a failure leaves."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from nnplug import _atomic


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_a_written_file_gets_the_usual_mode_not_mkstemps_owner_only(tmp_path: Path) -> None:
    # mkstemp makes 0600 files: a run shared with a group (or served read-only) must not be
    path = tmp_path / "manifest.json"
    _atomic.atomic_write(path, lambda f: f.write(b"{}"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()


def test_a_write_the_disk_refuses_names_the_file_being_saved_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    path = tmp_path / "weights-00000001.npz"
    with pytest.raises(OSError) as info:
        _atomic.atomic_write(path, lambda f: f.write(b"data"))
    assert info.value.filename == str(path)  # not the hidden temporary, nor nothing
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_ctrl_c_during_a_write_leaves_neither_the_file_nor_a_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _atomic.atomic_write(tmp_path / "model.json", lambda f: f.write(b"{}"))
    assert list(tmp_path.iterdir()) == []
