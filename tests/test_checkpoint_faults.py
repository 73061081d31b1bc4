"""Run directories under less common faults: what a failed save names, what a resume leaves."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path
from typing import Any

import pytest

from nnplug import checkpoint


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
