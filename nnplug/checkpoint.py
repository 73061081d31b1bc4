"""Run directories: saving and loading trained models, atomically and verifiably.

A run directory holds::

    model.json          the resolved model file (command-line overrides applied, paths absolute)
    weights-<step>.npz  the weights, keyed ``node/param``
    optim-<step>.npz    the optimizer state, keyed ``node/param/slot``
    metrics.jsonl       one JSON line of metrics per epoch, appended after its checkpoint
    manifest.json       versions, layer types, file names and SHA-256s, training progress

Every file is written to a temporary name in the same directory, fsynced, renamed, and the
directory fsynced. ``manifest.json`` is renamed last and is the commit point: it names the
weights and optimizer files of its checkpoint, and older files are deleted only after it
lands; a save that fails (disk full, a second Ctrl-C) deletes what it wrote. A run killed at
any moment therefore leaves a manifest naming complete files.
Loading verifies every checksum, checks every array's declared shape and dtype against the
model before reading its data, and never unpickles (``allow_pickle=False``).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np

from nnplug._atomic import atomic_write, json_bytes, sha256_of
from nnplug.errors import ConfigError, ShapeError
from nnplug.graph import Model
from nnplug.npzfile import npz_headers
from nnplug.registry import Registry, first_line
from nnplug.train import MAX_EPOCHS

MODEL_FILE = "model.json"
MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
FORMAT = 1


def _versions(model: Model) -> tuple[dict[str, str], dict[str, str]]:
    """({distribution: version}, {layer type: distribution}) of what the model uses."""
    plugins: dict[str, str] = {}
    types: dict[str, str] = {}
    for type_name in sorted({n.type for n in model.nodes} | {model.loss.type_name()}):
        info = model.registry.plugin_of(type_name)
        plugins[info.distribution if info.distribution != "-" else info.name] = info.version
        types[type_name] = info.distribution if info.distribution != "-" else info.name
    return plugins, types


def nnplug_version() -> str:
    try:
        return metadata.version("nnplug")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def write_model_file(run_dir: Path, resolved: dict[str, Any]) -> str:
    """Write the resolved model description; return its SHA-256."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write(run_dir / MODEL_FILE, json_bytes(resolved))


def _savez(f: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keywords as bool


def save_checkpoint(run_dir: Path, model: Model, optim_arrays: dict[str, np.ndarray],
                    optim_scalars: dict[str, Any], progress: dict[str, Any]) -> Path:
    """Save weights, optimizer state and progress as one checkpoint; return the manifest path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / MODEL_FILE).is_file():  # a run started from Python, not from a file
        write_model_file(run_dir, model.spec.raw)
    step = int(optim_scalars.get("step", 0))
    weights_name, optim_name = f"weights-{step:08d}.npz", f"optim-{step:08d}.npz"
    weights = {f"{node}/{name}": value for node, group in model.params.items()
               for name, value in group.items()}
    path = run_dir / MANIFEST
    try:
        weights_sha = atomic_write(run_dir / weights_name, lambda f: _savez(f, weights))
        optim_sha = atomic_write(run_dir / optim_name, lambda f: _savez(f, optim_arrays))
        _write_manifest(path, model, weights_name, weights_sha, optim_name, optim_sha, optim_scalars, progress)
    except BaseException:  # disk full, Ctrl-C: what this save wrote goes, unless the manifest landed
        _remove_uncommitted(run_dir, (weights_name, optim_name))
        raise
    for old in run_dir.iterdir():  # earlier checkpoints and temporaries of killed saves
        if old.name not in (weights_name, optim_name) and _OWN_FILE.fullmatch(old.name):
            with contextlib.suppress(OSError):
                old.unlink()
    return path


def _remove_uncommitted(run_dir: Path, names: Iterable[str]) -> None:
    """Delete the files ``names`` of a failed save that the manifest does not name (those of
    the checkpoint that stands stay, even where a save of the same step rewrote them)."""
    try:
        manifest = read_manifest(run_dir)
        committed = {manifest["weights"].get("file"), manifest["optimizer"].get("file")}
    except ConfigError:  # no checkpoint yet (or an unreadable one)
        committed = set()
    for name in names:
        if name not in committed:
            with contextlib.suppress(OSError):
                (run_dir / name).unlink()


def _write_manifest(path: Path, model: Model, weights_name: str, weights_sha: str, optim_name: str,
                    optim_sha: str, optim_scalars: dict[str, Any], progress: dict[str, Any]) -> None:
    run_dir = path.parent
    plugins, types = _versions(model)
    manifest = {
        "format": FORMAT,
        "nnplug": nnplug_version(),
        "plugins": plugins,
        "layer_types": types,
        "model": {"file": MODEL_FILE, "sha256": sha256_of(run_dir / MODEL_FILE)},
        "weights": {"file": weights_name, "sha256": weights_sha},
        "optimizer": {"file": optim_name, "sha256": optim_sha, **optim_scalars},
        "progress": progress,
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write(path, json_bytes(manifest))  # the commit point


#: The names save_checkpoint writes (and atomic_write's temporaries of them, and of the
#: metrics.jsonl a resume rewrites): the only files it ever deletes, so a user's own copies
#: (weights-best.npz) in a run directory stay.
_OWN_FILE = re.compile(r"(?:weights|optim)-\d{8}\.npz"
                       r"|\.(?:(?:weights|optim)-\d{8}\.npz|manifest\.json|model\.json|metrics\.jsonl)\.[^/]*\.tmp")


@dataclass
class Checkpoint:
    """A loaded run: the model with its weights, optimizer state and training progress."""

    run_dir: Path
    model: Model
    optim_arrays: dict[str, np.ndarray]
    optim_scalars: dict[str, Any]
    progress: dict[str, Any]
    manifest: dict[str, Any]


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """A run directory's manifest, checked to be one nnplug wrote (a ConfigError otherwise)."""
    path = run_dir / MANIFEST
    if run_dir.exists() and not run_dir.is_dir():  # a model file given where its run is wanted
        raise ConfigError(f"{run_dir}: not a run directory (a file; give the directory nnplug train saved to)")
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    if not path.is_file():
        if (run_dir / "model.json").is_file():  # the run's first save never completed
            raise ConfigError(f"{run_dir}: the run has no checkpoint ({MANIFEST} is not written: it stopped "
                              f"before its first save, or is still starting), so there is nothing to load; "
                              f"start it again, with --out {run_dir} once this directory is deleted")
        raise ConfigError(f"{run_dir}: not a run directory (no {MANIFEST}; was the run saved?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise ConfigError(f"{path}: not a valid manifest ({exc})") from None
    ok = isinstance(manifest, dict) and all(
        isinstance(manifest.get(k), dict) for k in ("layer_types", "model", "weights", "optimizer", "progress")
    )
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if ok and isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT:  # saved by a later nnplug
        by = manifest.get("nnplug")
        saver = f"nnplug {by}" if isinstance(by, str) else "a later nnplug"
        raise ConfigError(f"{path}: the run was saved by {saver} in manifest format {fmt}; nnplug "
                          f"{nnplug_version()} reads format {FORMAT}: upgrade nnplug to load it")
    if not ok or fmt != FORMAT:
        raise ConfigError(f"{path}: not an nnplug manifest of format {FORMAT}")
    problem = _progress_problem(manifest["progress"])
    if problem:
        raise ConfigError(f"{path}: {problem} (was the manifest edited by hand?)")
    return manifest


def _progress_problem(progress: dict[str, Any]) -> str | None:
    """Why a manifest's training progress is not what ``Trainer`` writes, or ``None``."""
    for key in ("epoch", "batch", "seen", "seed", "epochs", "batch_size"):
        value = progress.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"progress.{key}: expected a non-negative int, got {value!r:.40}"
    if not 1 <= progress["epochs"] <= MAX_EPOCHS:  # a resume would train them all
        return (f"progress.epochs: expected an int from 1 to {MAX_EPOCHS:,} (as train -> epochs and --epochs), "
                f"got {progress['epochs']!r:.40}")
    loss_sum = progress.get("loss_sum")
    if isinstance(loss_sum, bool) or not isinstance(loss_sum, (int, float)) or not np.isfinite(loss_sum):
        return f"progress.loss_sum: expected a finite number, got {loss_sum!r}"
    history = progress.get("history")
    if not isinstance(history, list) or not all(isinstance(m, dict) for m in history):
        return f"progress.history: expected a list of per-epoch metrics, got {history!r:.60}"
    if len(history) != progress["epoch"]:
        return f"progress.history holds {len(history)} epoch(s), but progress.epoch is {progress['epoch']}"
    return None


def _verified(run_dir: Path, entry: dict[str, Any], what: str) -> Path:
    name = entry.get("file")
    if not isinstance(name, str) or Path(name).name != name:
        raise ConfigError(f"{run_dir / MANIFEST}: bad {what} file name {name!r}")
    path = run_dir / name
    if not path.is_file():
        raise ConfigError(f"{path}: the {what} file named by the manifest is missing")
    if sha256_of(path) != entry.get("sha256"):
        raise ConfigError(f"{path}: the {what} file does not match the SHA-256 in {MANIFEST} "
                          "(truncated, corrupted, or from another run); refusing to load it")
    return path


def _load_npz(path: Path, what: str, noun: str, expected_shape: Callable[[str], tuple[int, ...] | None],
              required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """The arrays of a .npz file, checked from their headers before any data is read: each
    must have the shape ``expected_shape(name)`` (None: no such ``noun`` belongs here) and a
    float dtype, and every ``required`` name must be there. A crafted archive whose headers
    declare huge arrays (or whose members decompress to gigabytes) is refused without
    allocating them. Never unpickles."""
    declared = npz_headers(path, f"{path} ({what})")
    problems = [f"missing {noun} {name!r}" for name in sorted(set(required) - set(declared))]
    for name, array in sorted(declared.items()):
        wanted, shape, dtype = expected_shape(name), array.shape, array.dtype
        if wanted is None:
            problems.append(f"unexpected {noun} {name!r}")
        elif dtype.hasobject:
            problems.append(f"{noun} {name!r} holds pickled objects, which are never loaded")
        elif dtype.kind != "f":
            problems.append(f"{noun} {name!r} has dtype {dtype}, expected floats")
        elif shape != wanted:
            problems.append(f"{noun} {name!r} has shape {shape}, the model expects {wanted}")
    if problems:
        raise ConfigError(f"{path}: the {what} do not fit the model:\n  " + "\n  ".join(problems))
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{path}: not a readable .npz file ({exc})") from None


def _changed_versions(manifest: dict[str, Any], registry: Registry) -> str:
    """The plugin distributions the run was saved with whose installed version differs, as
    ``dist 1.0; dist 2.0 is installed`` clauses ('' when none did)."""
    saved = manifest.get("plugins")
    if not isinstance(saved, dict):
        return ""
    installed = {_dist_key(i.distribution): (i.distribution, i.version) for i in registry.plugins
                 if i.distribution != "-"}
    clauses = []
    for dist, old in sorted(saved.items()):
        now = installed.get(_dist_key(str(dist)))
        if now is not None and now[1] != str(old):
            clauses.append(f"{dist} {old}; {now[0]} {now[1]} is installed")
    return "; ".join(clauses)


def _dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # as installers normalise names


def _unavailable(registry: Registry, distribution: str) -> str:
    """Why an installed ``distribution`` provides no types (blocked, failed to load, or not
    named while autoload is off), as a suffix for the missing-types message; '' when it is
    not installed."""
    for info in registry.plugins:
        if _dist_key(info.distribution) != _dist_key(distribution):
            continue
        if info.status == "blocked":
            return f"; installed, but its plugin {info.name!r} is blocked (-p no:{info.name})"
        if info.status == "failed":
            return f"; installed, but its plugin {info.name!r} failed to load: {first_line(info.error, 200)}"
        if info.status == "disabled":  # autoload is off: the option to add is all the user needs
            return f"; installed, but not loaded: add -p {info.name}"
    return ""


def load_checkpoint(run_dir: str | Path, registry: Registry, *, optimizer: bool = True) -> Checkpoint:
    """Load a run directory, verifying the manifest, checksums, layer types and weight shapes.

    Args:
        optimizer: load (and verify) the optimizer state too, as resuming needs; without it
            (scoring needs only the weights) the checkpoint's ``optim_arrays`` is empty and
            the optimizer file may be missing.

    Raises:
        ConfigError: naming what does not fit: uninstalled layer types, a checksum
            mismatch, weights whose names or shapes differ from the model's.
    """
    from nnplug.modelfile import load_model_file

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    missing = {t: d for t, d in manifest["layer_types"].items() if t not in registry}
    if missing:
        plugins = manifest.get("plugins")
        versions: dict[str, Any] = plugins if isinstance(plugins, dict) else {}
        absent: list[str] = []  # not installed
        present: list[str] = []  # installed, but blocked or broken
        for t, d in sorted(missing.items()):
            reason = _unavailable(registry, str(d))
            version = versions.get(str(d), "?")
            if version == "-" and not reason:  # a module given with -p, no distribution: say how to get it back
                source = f"module {d}, given with -p when the run was saved: add -p {d}"
            else:
                source = f"{d} {version}{reason}"
            (present if reason else absent).append(f"{t} (from {source})")
        parts = [f"not installed: {', '.join(absent)}"] if absent else []
        parts += [f"not loaded: {', '.join(present)}"] if present else []
        why = f" ({registry.not_autoloaded})" if registry.not_autoloaded else ""
        raise ConfigError(f"{run_dir}: the run uses layer types that are {'; '.join(parts)}{why}")
    model_path = _verified(run_dir, manifest["model"], "model")
    try:
        spec = load_model_file(model_path, registry)
        model = Model(spec, registry)
        expected = {f"{n}/{k}": v.shape for n, group in model.params.items() for k, v in group.items()}
        weights = _load_npz(_verified(run_dir, manifest["weights"], "weights"), "weights", "weight", expected.get,
                            required=expected)
    except (ConfigError, ShapeError) as exc:  # a plugin upgraded since may read its config or weights otherwise
        changed = _changed_versions(manifest, registry)
        if not changed:
            raise
        problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
        note = f"the run was saved with {changed}"
        raise ConfigError("\n  ".join([*problems, note]), [*problems, note]) from None
    model.params = {n: {k: weights[f"{n}/{k}"].astype(model.dtype) for k in group}
                    for n, group in model.params.items()}
    optim_arrays: dict[str, np.ndarray] = {}
    if optimizer:  # optimizer slots are keyed node/param/slot and shaped like their parameter
        optim_arrays = _load_npz(_verified(run_dir, manifest["optimizer"], "optimizer"), "optimizer state",
                                 "optimizer slot", lambda name: expected.get(name.rpartition("/")[0]))
    scalars = {k: v for k, v in manifest["optimizer"].items() if k not in ("file", "sha256")}
    return Checkpoint(run_dir, model, optim_arrays, scalars, manifest["progress"], manifest)
