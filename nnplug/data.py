"""Datasets: the embedded digits set and ``.npz`` files, checked before training starts.

Every array is refused with a message saying what and where when it could only train
wrongly: a wrong dtype (object, strings, complex), NaN or infinite values, x and y of
different lengths, examples of the wrong shape for the model's input, labels the loss
refuses (outside the classes). An ``.npz`` whose compressed arrays would inflate past
:data:`MAX_DATA_BYTES` (``NNPLUG_MAX_DATA_BYTES`` raises it) is refused before any is read.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nnplug.arrays import loss_target
from nnplug.errors import ConfigError, NnplugError, exception_text
from nnplug.npzfile import DeclaredArray, npz_headers

if TYPE_CHECKING:
    from nnplug.graph import Model

#: The digits split is the same whatever the training seed, so validation scores compare.
SPLIT_SEED = 20_240_601
#: The most bytes the arrays nnplug reads from an .npz dataset may decompress to, unless the
#: environment variable :data:`MAX_DATA_BYTES_VARIABLE` says otherwise: checked from the zip
#: directory and the .npy headers before any data is read, so a zip bomb (550 KB of deflated
#: zeros that decompress to 570 MB) is refused without allocating it. Loading and checking
#: data peaks at about 2.5 times its size.
MAX_DATA_BYTES = 512 * 2**20
MAX_DATA_BYTES_VARIABLE = "NNPLUG_MAX_DATA_BYTES"
#: Data that decompress to more than this many times their size in the file are compressed
#: (float data deflate to about 0.9 of their size, digit images to about 0.15); below it,
#: the file holds as much as it loads, and its size alone is no surprise.
INFLATION = 10
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_BAD_KINDS = {"O": "object", "U": "string", "S": "bytes", "c": "complex", "V": "structured",
              "M": "datetime", "m": "timedelta"}


class DataConfig(BaseModel):
    """The ``data`` section of a model file.

    ``source: digits`` is scikit-learn's 8×8 digits, ``(N, 1, 8, 8)`` in [0, 1];
    ``source: npz`` reads ``x``, ``y`` and optionally ``x_val``, ``y_val`` from ``path``
    (relative to the model file). Without ``x_val``, a ``validation`` fraction of the
    examples is held out by a fixed permutation.
    """

    # The schema states _path_fits_source too (JSON Schema's if/then).
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False, json_schema_extra={
        "if": {"properties": {"source": {"const": "npz"}}},
        "then": {"properties": {"path": {"type": "string"}}, "required": ["path"]},
        "else": {"properties": {"path": {"type": "null"}}},
    })

    source: Literal["digits", "npz"]
    path: str | None = Field(None, min_length=1, pattern=r"^[^\x00]*$")  # the OS refuses NUL in paths
    validation: float = Field(0.2, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _path_fits_source(self) -> DataConfig:
        if self.source == "npz" and self.path is None:
            raise ValueError("source npz needs a path to a .npz file")
        if self.source == "digits" and self.path is not None:
            raise ValueError("source digits takes no path")
        return self


@dataclass
class Dataset:
    """Training and validation arrays; ``x_val`` is ``None`` when nothing is held out."""

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    origin: str


def data_digest(data: Dataset) -> str:
    """SHA-256 of a dataset's arrays (dtype, shape and bytes, in order): what a resumed run
    checks it trains on the same examples as before."""
    h = hashlib.sha256()
    for a in (data.x, data.y, data.x_val, data.y_val):
        if a is None:
            h.update(b"none;")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.data)
    return h.hexdigest()


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: x (1797, 1, 8, 8) in [0, 1] float64, y (1797,) int64."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ConfigError(
            "data: source digits needs scikit-learn, which is not installed; "
            'install it with: pip install "nnplug[examples]"'
        ) from None
    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float64).reshape(-1, 1, 8, 8) / 16.0  # (N, C, H, W)
    return x, np.asarray(bunch.target, dtype=np.int64)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    where = f"data: {path}"
    if not path.is_file():
        raise ConfigError(f"{where}: {'not a regular file' if path.exists() else 'no such file'}")
    # Headers and sizes first: a header declaring more data than its member stores would fail
    # inside numpy, and a zip bomb would be loaded whole.
    check_npz_size(path, npz_headers(path, where), where)
    member = ""  # the array being read, for the message
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            wanted = [k for k in ("x", "y", "x_val", "y_val") if k in keys]
            arrays = {}
            for member in wanted:
                arrays[member] = archive[member]
    except ValueError as exc:  # object arrays need pickle, which is never allowed
        raise ConfigError(f"{where}{_member(member)}: cannot be read without unpickling ({exc}); "
                          "store plain numeric arrays") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{where}{_member(member)}: not a readable .npz file ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise ConfigError(f"{where}: missing array(s) {', '.join(missing)}; found {', '.join(sorted(keys))}")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise ConfigError(f"{where}: x_val and y_val go together; found only one of them")
    return arrays


def _member(name: str) -> str:
    return f", array {name!r} ({name}.npy)" if name else ""


def max_data_bytes() -> int:
    """:data:`MAX_DATA_BYTES`, or the limit ``NNPLUG_MAX_DATA_BYTES`` sets: a number of bytes,
    optionally followed by K, M, G or T (powers of 1024), such as ``4G``."""
    raw = os.environ.get(MAX_DATA_BYTES_VARIABLE, "").strip()
    if not raw:
        return MAX_DATA_BYTES
    match = re.fullmatch(r"([0-9]{1,15})\s*([KMGT]?)i?B?", raw, re.IGNORECASE)
    limit = int(match[1]) * _UNITS[match[2].upper()] if match else 0
    if limit < 1:
        raise ConfigError(f"{MAX_DATA_BYTES_VARIABLE}: expected a positive number of bytes, optionally with "
                          f"K, M, G or T (such as 4G), got {raw!r:.40}")
    return limit


def check_npz_size(path: Path, declared: dict[str, DeclaredArray], where: str) -> None:
    """Refuse an archive whose arrays nnplug reads (x, y, x_val, y_val) would inflate from
    their compressed size (more than :data:`INFLATION` times) to more than :func:`max_data_bytes`,
    from what its zip directory declares; nothing is read. Stored (uncompressed) data of any
    size load: the file is as large as the memory it takes."""
    read = {k: declared[k] for k in ("x", "y", "x_val", "y_val") if k in declared}
    total, limit = sum(a.stored_bytes for a in read.values()), max_data_bytes()
    if total <= limit or total <= INFLATION * sum(a.compressed_bytes for a in read.values()):
        return
    name, largest = max(read.items(), key=lambda item: item[1].stored_bytes)
    together = "" if len(read) == 1 else f"; {', '.join(read)} together {total:,} bytes"
    raise ConfigError(
        f"{where}{_member(name)}: decompresses to {largest.stored_bytes:,} bytes (shape {largest.shape}, "
        f"{largest.dtype}) from {largest.compressed_bytes:,} bytes in the file{together}: more than the "
        f"{limit:,} bytes nnplug inflates from compressed .npz data; if the data are meant to be this large, raise the "
        f"limit with the environment variable {MAX_DATA_BYTES_VARIABLE} (such as {MAX_DATA_BYTES_VARIABLE}=4G)"
    )


def split(x: np.ndarray, y: np.ndarray, fraction: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Hold out ``round(fraction * N)`` examples, chosen by a permutation with a fixed seed."""
    n_val = round(fraction * len(x))
    if n_val == 0:
        return x, y, None, None
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def load_dataset(config: DataConfig, model: Model, base_dir: Path | None = None, *,
                 saved_run: bool = False) -> Dataset:
    """Load and check the data ``config`` names for ``model``. A ``validation`` fraction the
    file cannot apply is refused, except for a ``saved_run`` (evaluated or resumed: its model
    file was accepted when it was trained).

    Raises:
        ConfigError: the source cannot be read, holds no examples, is too large for memory,
            or an array does not fit the model.
    """
    try:
        return _load_dataset(config, model, base_dir, saved_run)
    except MemoryError as exc:  # an honest header, but more than this machine holds
        origin = config.path if config.source == "npz" else "digits"
        raise ConfigError(f"data: {origin}: too large to load and check in memory ({exc})") from None


def _load_dataset(config: DataConfig, model: Model, base_dir: Path | None, saved_run: bool) -> Dataset:
    if config.source == "digits":
        x, y = load_digits_arrays()
        origin = "digits"
        x_val = y_val = None
    else:
        path = Path(config.path or "")  # the validator guarantees a path for npz
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        arrays = _read_npz(path)
        x, y = arrays["x"], arrays["y"]
        x_val, y_val = arrays.get("x_val"), arrays.get("y_val")
        origin = str(path)
    check_arrays(x, y, model, f"{origin} (x, y)")
    if len(x) == 0:
        raise ConfigError(f"data: {origin}: x and y hold no examples")
    n, has_val_arrays = len(x), x_val is not None
    if x_val is None:
        x, y, x_val, y_val = split(x, y, config.validation)
    x = x.astype(model.dtype)
    if x_val is not None and y_val is not None:
        check_arrays(x_val, y_val, model, f"{origin} (x_val, y_val)", names=("x_val", "y_val"))
        if len(x_val) == 0:  # an accuracy "on 0 examples" would read 0%
            raise ConfigError(f"data: {origin}: x_val and y_val hold no examples; leave them out "
                              "to hold out a fraction of x instead")
        x_val = x_val.astype(model.dtype)
    if not saved_run:
        _check_validation_fraction(config, n, origin, has_val_arrays=has_val_arrays)
    if len(x) == 0:
        raise ConfigError(f"data: {origin}: no training examples left after holding out "
                          f"{config.validation:.0%} for validation")
    return Dataset(x, y, x_val, y_val, origin)


def _check_validation_fraction(config: DataConfig, n: int, origin: str, *, has_val_arrays: bool) -> None:
    """A ``validation`` fraction the file sets must take effect: refused beside x_val and y_val
    (they are the validation set) and when it rounds to no example at all."""
    if "validation" not in config.model_fields_set or config.validation == 0:
        return
    if has_val_arrays:
        raise ConfigError(f"data -> validation: {config.validation} would be ignored: {origin} holds x_val and "
                          "y_val, which are the validation set; leave out one or the other")
    if round(config.validation * n) == 0:
        raise ConfigError(f"data -> validation: {config.validation} of {n} examples holds out none "
                          f"(it rounds to 0); hold out at least one with {1 / n:.3g} or more, or write 0")


def check_arrays(x: Any, y: Any, model: Model, where: str, names: tuple[str, str] = ("x", "y")) -> None:
    """Refuse arrays that cannot train ``model``, naming the array (``names``: how the file
    calls x and y) and what is wrong."""
    x_name, y_name = names
    for name, array in ((x_name, x), (y_name, y)):
        if not isinstance(array, np.ndarray):
            raise ConfigError(f"data {where}: {name} is a {type(array).__name__}, expected a numpy array")
        if array.dtype.kind in _BAD_KINDS:
            raise ConfigError(f"data {where}: {name} has dtype {array.dtype} "
                              f"({_BAD_KINDS[array.dtype.kind]}); expected numbers")
        if array.ndim == 0:
            raise ConfigError(f"data {where}: {name} is a scalar, expected one row per example")
    if len(x) != len(y):
        raise ConfigError(f"data {where}: {x_name} has {len(x)} examples but {y_name} has {len(y)}")
    if x.shape[1:] != model.input_shape:
        raise ConfigError(
            f"data {where}: {x_name} has examples of shape {x.shape[1:]}, but the model's input is "
            f"{model.input_shape} ({x_name} is {x.shape})"
        )
    for name, array in ((x_name, x), (y_name, y)):
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            first = np.argwhere(~np.isfinite(array))[0]
            raise ConfigError(f"data {where}: {name} holds NaN or infinite values "
                              f"(first at index {tuple(int(i) for i in first)})")
    for name, array in ((x_name, x), (y_name, y)):
        if array.dtype.kind != "f" and name == y_name:
            continue  # integer labels reach the loss as they are
        with np.errstate(over="ignore"):  # the overflow is reported here, with its array
            cast = array.astype(model.dtype)  # as the model casts inputs and float targets
        if not np.isfinite(cast).all():
            raise ConfigError(f"data {where}: {name} overflows {model.dtype} "
                              f"(values up to {np.abs(array).max():.3g})")
    # The loss knows what targets it takes (labels inside the classes, one-hot rows, ...):
    # ask it with zero predictions, which costs one small forward.
    pred_shape = model.node(model.loss_input).out_shape
    for start in range(0, len(y), 4096):
        chunk = y[start:start + 4096]
        try:
            model.loss.forward(np.zeros((len(chunk), *pred_shape), dtype=model.dtype), loss_target(chunk, model.dtype))
        except NnplugError as exc:
            raise ConfigError(f"data {where}: {y_name} does not fit the loss: {exc}") from None
        except Exception as exc:
            raise ConfigError(f"data {where}: {y_name} does not fit the loss "
                              f"({model.loss.type_name()}): {exception_text(exc)}") from None
