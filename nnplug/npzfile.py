"""What a .npz archive declares, read before trusting it with memory.

``np.load`` allocates each array at the size its .npy header declares before it reads a
byte of data, so a forged header (8 TiB declared, 64 bytes stored) fails deep inside numpy
with a ``MemoryError``, and a zip bomb (zeros that deflate 1000:1) loads in full. Reading
the headers first lets callers refuse both with an error naming the array.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnplug.errors import ConfigError

_METHODS = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}


@dataclass(frozen=True)
class DeclaredArray:
    """One member of an archive as its header declares it, and the bytes it really holds."""

    shape: tuple[int, ...]
    dtype: np.dtype
    stored_bytes: int  # the member's uncompressed size, header included
    compressed_bytes: int = 0  # what the member takes in the archive

    @property
    def nbytes(self) -> int:
        """Bytes of data the header declares (exact: a crafted shape can overflow int64)."""
        return math.prod(self.shape) * self.dtype.itemsize


def declared_arrays(path: Path) -> dict[str, DeclaredArray]:
    """Each array's declared shape and dtype by name (as ``np.load(path).files`` names them),
    read without reading any data.

    Raises:
        ValueError: a member that is not a .npy array, whose header declares more data than
            the member holds, or that is compressed otherwise than numpy does (stored or
            deflated; bzip2 or LZMA could decompress in full to read the header).
        zipfile.BadZipFile, OSError, EOFError: an unreadable archive.
    """
    declared = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                # zipfile inflates deflate in bounded steps, but hands bzip2 and LZMA their whole
                # first read at once: 1 KB of bzip2 became 800 MB to read a 128-byte header.
                method = _METHODS.get(info.compress_type, f"method {info.compress_type}")
                raise ValueError(f"array {name!r} (member {info.filename!r}) is compressed with {method}, "
                                 "which nnplug does not read (numpy writes stored or deflated members: "
                                 "save it with np.savez or np.savez_compressed)")
            try:
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise ValueError(f"array {name!r} is in .npy format {version}, which nnplug does not read")
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:  # say which member
                if str(exc).startswith(f"array {name!r}"):
                    raise
                raise ValueError(f"array {name!r} (member {info.filename!r}): {exc}") from exc
            array = DeclaredArray(tuple(shape), dtype, info.file_size, info.compress_size)
            if not dtype.hasobject and array.nbytes > array.stored_bytes:
                raise ValueError(f"array {name!r} declares shape {array.shape} ({array.nbytes} bytes of "
                                 f"{dtype}), but its member holds only {array.stored_bytes} bytes")
            declared[name] = array
    return declared


def npz_headers(path: Path, where: str) -> dict[str, DeclaredArray]:
    """:func:`declared_arrays` of a file a user handed nnplug: anything unreadable (not a zip,
    a bad member, a header that lies) is a ``ConfigError`` starting with ``where``."""
    try:
        with open(path, "rb"):  # is_zipfile says False for a file it may not open: say why
            pass
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror or exc})") from None
    if not zipfile.is_zipfile(path):  # np.load would otherwise try it as a pickle
        raise ConfigError(f"{where}: not a readable .npz file (not a zip archive)")
    try:
        return declared_arrays(path)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{where}: not a readable .npz file ({exc})") from None
