"""Files written atomically: a temporary in the same directory, fsynced, renamed, and the
directory fsynced, so a reader (or a run killed at any moment) sees the old file or the new
one, never a part."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


#: mkstemp creates files readable by their owner only; saved runs get the usual mode.
_FILE_MODE = 0o666 & ~_umask()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms that cannot open directories (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> str:
    """Write ``path`` through ``write(file)`` atomically; return the SHA-256 of its bytes.

    The bytes go to a temporary file in the same directory, are fsynced, and replace
    ``path`` with one rename, so readers see the old file or the new one, never a part.
    """
    buffer = io.BytesIO()
    write(buffer)
    data = buffer.getvalue()
    try:  # no inode left, a read-only or vanished directory: the file to save is the subject
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # disk full, quota: name the file the save was writing
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return hashlib.sha256(data).hexdigest()


def json_bytes(value: Any) -> Callable[[IO[bytes]], object]:
    """A writer for :func:`atomic_write`: ``value`` as indented JSON with sorted keys."""
    return lambda f: f.write((json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
