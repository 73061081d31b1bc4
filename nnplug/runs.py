"""``nnplug train``: resolve the model file and overrides, prepare the run directory, train,
and report (progress bar, one line per epoch, where the run was saved)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnplug.errors import ConfigError
from nnplug.registry import Registry

if TYPE_CHECKING:
    from nnplug.graph import Model

EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal number, as shells report


def resolve_model(path: Path, registry: Registry, args: argparse.Namespace) -> tuple[Model, dict[str, Any]]:
    """Read ``path``, apply command-line overrides, validate and build; returns (model,
    resolved dict).

    The resolved description is what the run directory keeps: overrides applied and a
    relative ``.npz`` path made absolute, so the run reloads from anywhere.
    """
    from nnplug.config import parse_model
    from nnplug.modelfile import build_located, read_document

    data, locate = read_document(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a model description is a mapping, got {type(data).__name__}")
    raw: dict[str, Any] = copy.deepcopy(data)
    if args.seed is not None:
        raw["seed"] = args.seed
    train = raw.get("train", {})
    if isinstance(train, dict):
        train = dict(train)
        if args.epochs is not None:
            train["epochs"] = args.epochs
        if args.batch_size is not None:
            train["batch_size"] = args.batch_size
        if args.lr is not None:
            optimizer = train.get("optimizer", {})
            if isinstance(optimizer, dict):
                train["optimizer"] = {**optimizer, "lr": args.lr}
        if train or "train" in raw:
            raw["train"] = train
    section = raw.get("data")
    if isinstance(section, dict) and isinstance(section.get("path"), str) and section["path"]:  # "" is refused below
        npz = Path(section["path"])
        if not npz.is_absolute():
            raw["data"] = {**section, "path": str((path.parent / npz).resolve())}
    # A value given on the command line is named by its option, not by a line of the file.
    overrides: dict[tuple[str, ...], str] = {key: option for key, option, value in (
        (("seed",), "--seed", args.seed), (("train", "epochs"), "--epochs", args.epochs),
        (("train", "batch_size"), "--batch-size", args.batch_size), (("train", "optimizer", "lr"), "--lr", args.lr),
    ) if value is not None}
    try:
        spec = parse_model(raw, registry, source=str(path), locate=locate)
    except ConfigError as exc:
        problems = [_blame_option(line, str(path), overrides) for line in (exc.problems or [str(exc)])]
        raise ConfigError("\n".join(problems), problems) from None
    if spec.data is None:
        raise ConfigError(f"{path}: no data section to train on; add for example "
                          "`data: {source: digits, validation: 0.2}`")
    return build_located(spec, registry, path, locate), raw


def _blame_option(line: str, source: str, overrides: dict[tuple[str, ...], str]) -> str:
    """``model.yaml: train -> optimizer.lr: ...`` -> ``--lr (train -> optimizer.lr): ...`` when
    the value came from that option."""
    for key, option in overrides.items():
        shown = key[0] if len(key) == 1 else f"{key[0]} -> {'.'.join(key[1:])}"
        for sep in (": ", " "):
            if line.startswith(f"{source}: {shown}{sep}"):
                rest = re.sub(r" \(line \d+\)$", "", line[len(source) + 2 + len(shown) + len(sep):])
                return f"{option} ({shown}){sep}{rest}"
    return line


def plugin_options(args: argparse.Namespace) -> list[str]:
    """The ``-p`` values given before and after the subcommand, in order."""
    return [*getattr(args, "plugin_options", []), *getattr(args, "plugin_options_after", [])]


def resume_command(run_dir: Path, options: Sequence[str] = ()) -> str:
    """The command that continues the run in ``run_dir``, with the ``-p`` options the run was
    started with (and only those): without them a plugin's layer types would not load again."""
    plugins = "".join(f" -p {shlex.quote(option)}" for option in options)
    return f"nnplug{plugins} train --resume {shlex.quote(str(run_dir))}"


def _run_dir(args: argparse.Namespace, name: str) -> Path:
    if args.out is not None and not args.out.strip():
        raise ConfigError("--out: expected a directory, got an empty string")
    if args.out:
        run_dir = Path(args.out)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        # the model's name, made a plain file name: "../x" or "a/b" must not leave runs/
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "model"
        run_dir = Path("runs") / f"{name}-{stamp}"
        k = 1
        while run_dir.exists():
            k += 1
            run_dir = Path("runs") / f"{name}-{stamp}-{k}"
    if run_dir.exists() and (not run_dir.is_dir() or any(e.name != LOCK_FILE for e in run_dir.iterdir())):
        hint = (f"; continue it with `{resume_command(run_dir, plugin_options(args))}`"
                if (run_dir / "manifest.json").exists() else
                "; it holds a run stopped before its first checkpoint: delete it to start again"
                if (run_dir / "model.json").exists() else "")
        raise ConfigError(f"--out {run_dir}: already exists and is not an empty directory{hint}")
    return run_dir


#: The file a training process holds locked in its run directory (see :func:`_run_lock`).
LOCK_FILE = ".lock"


@contextlib.contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (created if need be) while a run trains in it: a
    second ``train --out`` or ``--resume`` of the same directory is refused instead of both
    writing checkpoints and metrics over each other. The lock is the OS's (``flock``), so a
    killed process leaves none behind; where there is no ``flock`` (Windows) runs are unguarded."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{run_dir}: another nnplug train is running in this directory; "
                              "wait for it to end (or stop it) first") from None
        except OSError as exc:  # a file system without locks (NFS without its lock service, some FUSE)
            print(f"nnplug: warning: {run_dir}: cannot lock the run directory ({exc.strerror or exc}); "
                  "a second train of it at the same time would not be refused", file=sys.stderr)
        yield
    finally:
        os.close(fd)


def _lock_run_dir(locks: contextlib.ExitStack, run_dir: Path, subject: str) -> None:
    """Create ``run_dir`` if need be and hold its lock in ``locks``; a file system that refuses
    (no such parent, a file on the way, read-only, permissions) is one error naming ``subject``,
    the option that chose the directory."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if run_dir.is_symlink() and not run_dir.exists():  # mkdir's own word is "File exists"
            raise ConfigError(f"{subject}: cannot create the run directory: it is a symbolic link to "
                              f"{os.readlink(run_dir)}, which does not exist") from None
        raise ConfigError(f"{subject}: cannot create the run directory: {exc.strerror or exc}") from None
    try:
        locks.enter_context(_run_lock(run_dir))
    except OSError as exc:
        raise ConfigError(f"{subject}: cannot write in the run directory: {exc.strerror or exc}") from None


def _check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError('--plot needs matplotlib, which is not installed; '
                          'install it with: pip install "nnplug[plot]"') from None


def _format_epoch(m: dict[str, Any], epochs: int) -> str:
    def pct(v: float | None) -> str:
        return "  n/a " if v is None else f"{v:6.2%}"

    width = len(str(epochs))
    val = "" if m.get("val_loss") is None else f"  val_loss {m['val_loss']:.4f}  val_acc {pct(m['val_accuracy'])}"
    # Under 80 columns, so a terminal never wraps it.
    return (f"epoch {m['epoch']:>{width}}/{epochs}  loss {m['train_loss']:.4f}  "
            f"acc {pct(m['train_accuracy'])}{val}  {m['seconds']:.2f}s")


def train_command(args: argparse.Namespace, registry: Registry) -> int:
    chosen: list[Path] = []  # the run directory, once known
    try:
        with contextlib.ExitStack() as locks:  # the run directory's lock, held until training ends
            return _train(args, registry, locks, chosen)
    except KeyboardInterrupt:  # a second Ctrl-C (at once, maybe mid-save), or one before training began
        if not chosen or not chosen[0].is_dir():
            raise  # nothing on disk: the command line says "interrupted"
        print(_interrupted_at_once(chosen[0], resume_command(chosen[0], plugin_options(args))), file=sys.stderr)
        return EXIT_SIGNAL["SIGINT"]


def stopped_at(epoch: int, batch: int) -> str:
    """Where training stands after ``epoch`` complete epochs and ``batch`` batches of the next."""
    if batch:
        return f"after batch {batch} of epoch {epoch + 1}"
    return f"after epoch {epoch}" if epoch else "before its first batch"


def _interrupted_at_once(run_dir: Path, resume: str) -> str:
    """What a run stopped at once (a second SIGINT, even during a save) left in ``run_dir``."""
    from nnplug.checkpoint import MANIFEST, read_manifest

    if not (run_dir / MANIFEST).is_file():
        if not any(entry.name != LOCK_FILE for entry in run_dir.iterdir()):
            return f"nnplug: interrupted before training started; nothing was saved in {run_dir}"
        return (f"nnplug: interrupted before the run's first checkpoint; {run_dir} holds none: "
                "delete it, then start the run again")
    try:  # the manifest is the commit point: it says where the last complete checkpoint stands
        progress = read_manifest(run_dir)["progress"]
        where = f" ({stopped_at(progress['epoch'], progress['batch'])})"
    except ConfigError:
        where = ""
    return (f"nnplug: interrupted; {run_dir} keeps its last complete checkpoint{where}\n"
            f"  continue with: {resume}")


def _train(args: argparse.Namespace, registry: Registry, locks: contextlib.ExitStack, chosen: list[Path]) -> int:
    from nnplug.checkpoint import load_checkpoint, write_model_file
    from nnplug.data import load_dataset
    from nnplug.plots import plot_curves
    from nnplug.train import MAX_EPOCHS, TrainConfig, Trainer

    if args.epochs is not None and not 1 <= args.epochs <= MAX_EPOCHS:  # --resume --epochs meets no model file
        raise ConfigError(f"--epochs: expected a number from 1 to {MAX_EPOCHS:,}, got {args.epochs}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size (train -> batch_size): expected a positive number, got {args.batch_size}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise ConfigError(f"--lr (train -> optimizer.lr): expected a positive finite number, got {args.lr}")
    if args.plot:
        _check_plot_available()
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in ("batch_size", "lr", "seed", "out")
                 if getattr(args, k) is not None]
        if args.model or given:
            raise ConfigError(f"--resume continues a run as it was saved; drop "
                              f"{', '.join(given + ([args.model] if args.model else []))}")
        run_dir = Path(args.resume)
        chosen.append(run_dir)
        if (run_dir / "manifest.json").is_file():  # a run: locked; else load_checkpoint says what is wrong
            _lock_run_dir(locks, run_dir, f"--resume {run_dir}")
        ckpt = load_checkpoint(run_dir, registry)
        model = ckpt.model
        seed = int(ckpt.progress.get("seed", -1))
        epochs = args.epochs or int(ckpt.progress.get("epochs", 0)) or None
    else:
        if not args.model:
            raise ConfigError("train needs a MODEL file (or --resume RUN)")
        model, resolved = resolve_model(Path(args.model), registry, args)
        seed, epochs = model.spec.seed, None
    spec = model.spec
    if model.unused:
        from nnplug.summary import unused_note

        print(f"nnplug: warning: {unused_note(model)}", file=sys.stderr)
    if spec.data is None:  # resolve_model refuses such files; a hand-edited run could have none
        raise ConfigError(f"{args.resume}: the run's model file has no data section")
    base = Path(args.model).parent if args.model else Path(args.resume)
    data = load_dataset(spec.data, model, base_dir=base, saved_run=bool(args.resume))
    if not args.resume:
        run_dir = _run_dir(args, spec.name)
        chosen.append(run_dir)
        _lock_run_dir(locks, run_dir, f"--out {run_dir}" if args.out else f"{run_dir} (the default --out)")
        if any(entry.name != LOCK_FILE for entry in run_dir.iterdir()):  # another run started here meanwhile
            raise ConfigError(f"--out {run_dir}: already exists and is not an empty directory")
        write_model_file(run_dir, resolved)
    config = spec.train or TrainConfig()
    total = epochs or config.epochs
    def on_epoch(metrics: dict[str, Any]) -> None:
        if not args.quiet:
            print(_format_epoch(metrics, total), flush=True)

    progress = _progress(args.quiet)
    resume = resume_command(run_dir, plugin_options(args))
    trainer = Trainer(model, data, config, run_dir, seed, epochs=epochs, on_epoch=on_epoch,
                      progress=progress, resume_command=resume)
    if args.resume:
        trainer.restore(ckpt.optim_arrays, ckpt.optim_scalars, ckpt.progress)
        done = trainer.position.epoch
        if done >= total:  # (a mid-epoch position is always below total)
            print(f"{run_dir}: the run has trained {done} epoch(s) already, {total} asked for; nothing to "
                  f"train (give --epochs above {done} to go on)")
            if args.plot:
                print(f"wrote {plot_curves(run_dir, trainer.position.history)}")
            return 0
    if not args.quiet:
        n_val = 0 if data.x_val is None else len(data.x_val)
        print(f"{spec.name}: {model.parameter_count():,} parameters; {len(data.x)} training and "
              f"{n_val} validation examples ({data.origin})")
        print(f"{config.optimizer.type}, lr {config.optimizer.learning_rate:g}, batch size "
              f"{config.batch_size}, {total} epoch{'s' * (total != 1)}, seed {seed}; run directory {run_dir}")
    started = time.perf_counter()
    if progress is not None:
        with progress:
            result = trainer.run()
    else:
        result = trainer.run()
    elapsed = time.perf_counter() - started
    if result.status == "interrupted":
        p = trainer.position
        print(f"nnplug: stopped by {result.signal_name} {stopped_at(p.epoch, p.batch)}; "
              f"saved to {run_dir}\n  continue with: {resume}", file=sys.stderr)
        return EXIT_SIGNAL.get(result.signal_name or "", 130)
    print(f"saved run to {run_dir} ({final_metric(result.history)}, {elapsed:.1f}s)")
    if args.plot:
        print(f"wrote {plot_curves(run_dir, result.history)}")
    return 0


def final_metric(history: list[dict[str, Any]]) -> str:
    """The last epoch's headline: validation accuracy, else validation loss, else train loss."""
    last = history[-1] if history else {}
    if last.get("val_accuracy") is not None:
        return f"validation accuracy {last['val_accuracy']:.2%}"
    for key, label in (("val_loss", "validation loss"), ("train_loss", "train loss")):
        if last.get(key) is not None:
            return f"{label} {last[key]:.4g}"
    return "no epoch finished"


def _progress(quiet: bool) -> Any:
    """A rich progress bar, or ``None`` when quiet or stdout is not a terminal.

    The bar and the epoch lines share stdout: rich redirects ``print`` above the live bar.
    """
    if quiet or not sys.stdout.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    _loss_column(), TimeElapsedColumn(), console=Console(file=sys.stdout), transient=True)


def _loss_column() -> Any:
    """``loss 0.1234``, or ``loss -`` until the epoch's first batch has a loss."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class LossColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            loss = task.fields.get("loss")
            shown = f"{loss:.4f}" if isinstance(loss, float) and math.isfinite(loss) else "-"
            return Text(f"loss {shown}")

    return LossColumn()
