"""The training loop: mini-batches, one seed, metrics, checkpoints, interruption and resume.

Everything random derives from one seed: the weights (``Model.init_params``) and each
epoch's shuffle (its own stream, keyed by the epoch number), so the same file and seed give
bit-identical weights, and a run resumed from a checkpoint (saved at an epoch end or after
the batch during which Ctrl-C/SIGTERM arrived) takes exactly the steps of an uninterrupted
run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nnplug.arrays import loss_target
from nnplug.data import data_digest
from nnplug.errors import ConfigError, NnplugError, NumericalError, PluginError, ShapeError, exception_text
from nnplug.optim import Optimizer, OptimizerConfig, make_optimizer

if TYPE_CHECKING:
    from nnplug.data import Dataset
    from nnplug.graph import Model

__all__ = ["OptimizerConfig", "TrainConfig", "TrainResult", "Trainer", "evaluate"]

_SHUFFLE_STREAM = 2**32  # above every crc32 key the weight streams use


MAX_EPOCHS = 100_000  # a run longer than this is a typo


class TrainConfig(BaseModel):
    """The ``train`` section of a model file."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(32, ge=1, le=1_000_000)
    shuffle: bool = True
    # The schema states the default as the section a user would write: pydantic would dump every
    # resolved field, adam with sgd's momentum and nesterov, which the section's own rules refuse
    optimizer: OptimizerConfig = Field(OptimizerConfig(), json_schema_extra={"default": {"type": "adam"}})


def evaluate(model: Model, x: np.ndarray, y: np.ndarray, batch_size: int = 512
             ) -> tuple[float, float | None]:
    """Mean loss and accuracy (``None`` when the loss has none) of ``model`` on ``(x, y)``."""
    total, correct, has_accuracy = 0.0, 0.0, True
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        pred = model.forward(xb)
        # as in training: a float target cast to pred's dtype, the plugin's errors and value checked
        value, _ = model._loss_forward(pred, yb)
        total += value * len(xb)
        acc = _accuracy(model, pred, loss_target(yb, pred.dtype))
        has_accuracy = has_accuracy and acc is not None
        correct += (acc or 0.0) * len(xb)
    n = max(len(x), 1)
    return total / n, (correct / n if has_accuracy else None)


def _accuracy(model: Model, pred: np.ndarray, target: Any) -> float | None:
    """The loss plugin's ``accuracy``: ``None`` or a fraction from 0 to 1, its failures named."""
    where = f"loss ({model.loss.type_name()}, {model.loss_plugin})"
    try:
        acc = model.loss.accuracy(pred, target)
    except NnplugError:
        raise
    except Exception as exc:
        raise PluginError(f"{where}: accuracy raised {exception_text(exc)}") from exc
    if acc is None:
        return None
    if (isinstance(acc, (bool, np.bool_)) or not isinstance(acc, (int, float, np.integer, np.floating))
            or not 0 <= acc <= 1):
        raise PluginError(f"{where}: accuracy returned {acc!r}, expected a fraction from 0 to 1 (or None)")
    return float(acc)


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]]
    status: str  # completed | interrupted
    signal_name: str | None = None


@dataclass
class _Position:
    """Where training stands; saved in the manifest so a resumed run continues exactly."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current epoch
    loss_sum: float = 0.0  # sum of batch loss * batch size in the current epoch
    seen: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _first_non_finite(nodes: Iterable[Any], arrays: dict[str, dict[str, np.ndarray]]) -> tuple[str, str] | None:
    """(array name, node description) of the first of ``arrays[node][name]``, in ``nodes``'
    order, holding a NaN or an infinity; ``None`` when all are finite."""
    for node in nodes:
        for name, a in arrays.get(node.name, {}).items():
            if not np.isfinite(a).all():
                return name, node.describe()
    return None


@contextmanager
def _stop_signals() -> Iterator[dict[str, str | None]]:
    """Turn SIGINT/SIGTERM into a flag read between batches; a second signal acts at once."""
    flag: dict[str, str | None] = {"signal": None}
    previous: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        flag["signal"] = signal.Signals(signum).name
        for sig, old in previous.items():  # a second Ctrl-C is not ignored
            signal.signal(sig, old)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is signal.SIG_IGN:  # ignored by whoever started us (a shell's
                continue  # background job, nohup): it stays ignored, as Python leaves it too
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals stay as they are
        pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _identity(directory: Path) -> tuple[int, int] | None:
    """(device, inode) of ``directory``; ``None`` when it is not there."""
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _stopped_at(epoch: int, batch: int) -> str:
    return f"after batch {batch} of epoch {epoch + 1}" if batch else f"after epoch {epoch}"


class Trainer:
    """Trains ``model`` on ``data`` and saves checkpoints into ``run_dir``.

    Args:
        on_epoch: called with each epoch's metrics (for printing).
        progress: a ``rich.progress.Progress`` to show batches in, or ``None``; each epoch's
            task has a ``loss`` field, the epoch's running mean loss (``None`` before its first batch).
        resume_command: the command an error message gives to continue the run (default
            ``nnplug train --resume RUN_DIR``; the command line adds the ``-p`` options it had).
    """

    def __init__(self, model: Model, data: Dataset, config: TrainConfig, run_dir: Path, seed: int,
                 *, epochs: int | None = None, on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 progress: Any = None, resume_command: str | None = None) -> None:
        self.model = model
        self.data = data
        self.config = config
        self.run_dir = run_dir
        self.seed = seed
        self.epochs = epochs or config.epochs
        self.on_epoch = on_epoch
        self.progress = progress
        self.resume_command = resume_command or f"nnplug train --resume {run_dir}"
        self.optimizer: Optimizer = make_optimizer(config.optimizer, model.params)
        self.position = _Position()
        self.data_sha256 = data_digest(data)  # kept in every checkpoint, checked on resume
        self._dir_identity: tuple[int, int] | None = None  # the run directory's, once it holds a checkpoint

    # -- state -----------------------------------------------------------------------------

    def restore(self, optim_arrays: dict[str, np.ndarray], optim_scalars: dict[str, Any],
                progress: dict[str, Any]) -> None:
        """Continue from a checkpoint's optimizer state and position."""
        try:
            self.optimizer.load_state_dict(optim_arrays, optim_scalars)
        except ConfigError as exc:  # an edited run: say which
            raise ConfigError(f"{self.run_dir}: {exc}") from None
        try:
            history = list(progress["history"])
            self.position = _Position(int(progress["epoch"]), int(progress["batch"]),
                                      float(progress["loss_sum"]), int(progress["seen"]), history)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{self.run_dir}: the manifest's progress is incomplete ({exc})") from None
        saved_data = progress.get("data_sha256")  # (absent from runs saved before nnplug checked it)
        if saved_data is not None and saved_data != self.data_sha256:
            raise ConfigError(f"{self.run_dir}: the training data ({self.data.origin}) differ from the data "
                              "this run was trained on, so resuming would not continue the same run; "
                              "start a new run, or restore the data")
        n_batches = math.ceil(len(self.data.x) / self.config.batch_size)
        if self.position.batch >= n_batches:  # a hand-edited manifest would skip an epoch's end
            raise ConfigError(f"{self.run_dir}: the manifest's progress is at batch {self.position.batch}, "
                              f"but an epoch has {n_batches} batches")
        if progress.get("seed") != self.seed:
            raise ConfigError(f"{self.run_dir}: saved with seed {progress.get('seed')}, resumed with {self.seed}")
        self._rewrite_metrics()
        self._dir_identity = _identity(self.run_dir)

    def _progress_dict(self) -> dict[str, Any]:
        p = self.position
        return {"epoch": p.epoch, "batch": p.batch, "loss_sum": p.loss_sum, "seen": p.seen,
                "history": p.history, "seed": self.seed, "epochs": self.epochs,
                "batch_size": self.config.batch_size, "data_sha256": self.data_sha256}

    def save(self) -> Path:
        from nnplug.checkpoint import save_checkpoint

        # Deleted or replaced under a running train: recreating it would save a run without its
        # earlier epochs, unlocked, so that a second train of it could write there too.
        self._check_run_dir()
        arrays, scalars = self.optimizer.state_dict()
        path = save_checkpoint(self.run_dir, self.model, arrays, scalars, self._progress_dict())
        if self._dir_identity is None:
            self._dir_identity = _identity(self.run_dir)
        return path

    def _check_run_dir(self) -> None:
        """Refuse to go on in a run directory deleted or replaced since it held a checkpoint."""
        if self._dir_identity is not None and _identity(self.run_dir) != self._dir_identity:
            p = self.position
            raise ConfigError(f"{self.run_dir}: the run directory was deleted or replaced while training; "
                              f"stopped {_stopped_at(p.epoch, p.batch)} without saving into it")

    def _rewrite_metrics(self) -> None:
        """metrics.jsonl holds exactly the epochs of the checkpoint (a resumed run's file
        then equals an uninterrupted run's)."""
        from nnplug.checkpoint import METRICS, atomic_write

        text = "".join(json.dumps(m, sort_keys=True) + "\n" for m in self.position.history)
        atomic_write(self.run_dir / METRICS, lambda f: f.write(text.encode()))

    def _append_metrics(self, metrics: dict[str, Any]) -> None:
        """Add the epoch's line to metrics.jsonl, after its checkpoint: the file is never ahead
        of the manifest (a resume rewrites it from the manifest when it is behind). A write
        the disk refuses takes back what it wrote, so no partial line stays."""
        from nnplug.checkpoint import METRICS

        path = self.run_dir / METRICS
        line = memoryview((json.dumps(metrics, sort_keys=True) + "\n").encode())
        with open(path, "ab", buffering=0) as f:  # unbuffered: nothing left to flush at close
            size = f.seek(0, os.SEEK_END)
            try:
                while line:
                    line = line[f.write(line):]
                os.fsync(f.fileno())
            except OSError as exc:
                with contextlib.suppress(OSError):
                    f.truncate(size)
                raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None

    # -- the loop ------------------------------------------------------------------------

    def _order(self, epoch: int) -> np.ndarray:
        n = len(self.data.x)
        if not self.config.shuffle:
            return np.arange(n)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_SHUFFLE_STREAM + epoch,)))
        return rng.permutation(n)

    def _step(self, xb: np.ndarray, yb: np.ndarray) -> float:
        model = self.model
        loss, grads = model.loss_and_grads(xb, yb)
        bad = _first_non_finite(reversed(model.nodes), grads)  # backward order: the first to go bad
        if bad:
            raise NumericalError(f"the gradient of {bad[0]} at {bad[1]} is not finite (loss {loss:.6g}); "
                                 "training stopped before the update")
        # nodes the loss does not depend on keep their weights (weight decay would shrink them)
        trained = {n: p for n, p in model.params.items() if n not in model.unused} if model.unused else model.params
        self.optimizer.step(trained, grads)
        return loss

    def run(self) -> TrainResult:
        """Train up to ``epochs``; returns when done or after the batch a signal arrived in.

        Raises:
            NumericalError: a loss or gradient went non-finite; the message names the first
                node and where the last good checkpoint is.
            PluginError, ShapeError: a layer failed; the message also says where the last
                good checkpoint is.
        """
        # Non-finite values are checked (and named) explicitly; numpy's warnings would only
        # repeat them without saying where.
        with _stop_signals() as flag, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self.position.epoch == 0 and self.position.batch == 0 and not self.position.history:
                self.save()  # a loadable checkpoint from the start; a Ctrl-C meanwhile waits for it
            try:
                status = "interrupted" if flag["signal"] else self._loop(flag)
            except NumericalError as exc:  # say where training stands; a resumed run keeps its lr
                raise NumericalError(f"{exc}\n{self._where_training_stands()}") from None
            except (PluginError, ShapeError) as exc:  # ...and, for a layer's bug, how to go on
                raise type(exc)(
                    f"{exc}\n{self._where_training_stands()}: continue it with "
                    f"`{self.resume_command}` once fixed, or delete it"
                ) from None
            except OSError as exc:  # the disk filled while saving: the previous checkpoint stands
                self._check_run_dir()  # ...unless the directory itself went during the save
                raise OSError(exc.errno, f"{exc.strerror or exc}\nthe last checkpoint saved before it, "
                              f"in {self.run_dir}, is intact", exc.filename) from None
        return TrainResult(self.run_dir, self.position.history, status, flag["signal"])

    def _weights_finite(self) -> None:
        """Finite gradients can still make non-finite weights (a weight decay of 1e40) or
        optimizer state (Adam's g² of a gradient of 1e20 in float32): checked before each save,
        so that the last good checkpoint stays the last one written. (Between saves, broken
        weights make the next loss or gradient non-finite, which stops the run.)"""
        bad = _first_non_finite(self.model.nodes, self.model.params)
        if bad:
            raise NumericalError(f"the update after this batch left {bad[0]} of {bad[1]} non-finite (too large "
                                 "a learning rate or weight_decay?); the weights were not saved")
        # Adam's v holds g²: gradients past ~1e19 overflow it in float32, and m / √v then
        # leaves the weights where they are, a run that trains nothing and says nothing.
        for key, state in self.optimizer.state.items():
            if not np.isfinite(state).all():
                node_name, rest = key.split("/", 1)  # node names hold no '/'
                name, slot = rest.rsplit("/", 1)
                node = next(n for n in self.model.nodes if n.name == node_name)
                raise NumericalError(
                    f"the optimizer's {slot} for {name} of {node.describe()} is not finite: its gradients "
                    f"are too large for {self.model.dtype} (scale the inputs or targets down); "
                    "the weights were not saved")

    def _where_training_stands(self) -> str:
        p = self.position
        # past the epoch's last batch, the epoch's end is being scored (its accuracy, val_loss)
        done = p.batch >= math.ceil(len(self.data.x) / self.config.batch_size)
        at = f"scoring the end of epoch {p.epoch + 1}" if done else f"at epoch {p.epoch + 1}, batch {p.batch + 1}"
        return f"{at}; the last good checkpoint (after {p.epoch} epoch(s)) is in {self.run_dir}"

    def _loop(self, flag: dict[str, str | None]) -> str:
        x, y = self.data.x, self.data.y
        bs = self.config.batch_size
        n_batches = math.ceil(len(x) / bs)
        task = None
        p = self.position
        while p.epoch < self.epochs:
            started = time.perf_counter()
            order = self._order(p.epoch)
            if self.progress is not None:
                task = self.progress.add_task(f"epoch {p.epoch + 1}/{self.epochs}", total=n_batches,
                                              completed=p.batch, loss=p.loss_sum / p.seen if p.seen else None)
            while p.batch < n_batches:
                idx = order[p.batch * bs:(p.batch + 1) * bs]
                loss = self._step(x[idx], y[idx])
                stop = flag["signal"]  # read once: a signal arriving later is handled after the next batch
                if p.batch + 1 == n_batches or stop:  # a save follows: never of broken weights
                    self._weights_finite()
                p.loss_sum += loss * len(idx)
                p.seen += len(idx)
                p.batch += 1
                if task is not None:
                    self.progress.update(task, advance=1, loss=p.loss_sum / p.seen)
                if stop and p.batch < n_batches:
                    self.save()
                    return "interrupted"
            metrics = self._epoch_metrics(p.epoch + 1, p.loss_sum / max(p.seen, 1))
            p.history.append(metrics)
            p.epoch, p.batch, p.loss_sum, p.seen = p.epoch + 1, 0, 0.0, 0
            self.save()
            self._append_metrics(metrics)
            if task is not None:
                self.progress.remove_task(task)
            if self.on_epoch:
                self.on_epoch({**metrics, "seconds": time.perf_counter() - started})
            if flag["signal"] and p.epoch < self.epochs:
                return "interrupted"
        return "completed"

    def _epoch_metrics(self, epoch: int, train_loss: float) -> dict[str, Any]:
        d = self.data
        _, train_acc = evaluate(self.model, d.x, d.y)
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc}
        if d.x_val is not None and d.y_val is not None and len(d.x_val):
            metrics["val_loss"], metrics["val_accuracy"] = evaluate(self.model, d.x_val, d.y_val)
        else:
            metrics["val_loss"] = metrics["val_accuracy"] = None
        return metrics
