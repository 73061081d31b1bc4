"""Recompute the robustness figures of the README (issue 8) and print them as a table.

    python3 scripts/fault_figures.py            # a few minutes on two cores
    python3 scripts/fault_figures.py --quick    # smaller N, for a smoke run

The tests prove the same properties at smaller N (tests/test_checkpoint.py, test_train.py,
test_registry.py, test_modelfile.py, test_faults.py, test_faults_cli.py); this script is not
run in CI. Every count is "passed of tried": a figure below 100% is a bug to report.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import random
import shutil
import signal
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

import faultkit  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from runkit import tiny_model, weights_of  # noqa: E402

import nnplug  # noqa: E402
from nnplug import build, checkpoint, optim  # noqa: E402
from nnplug.cli import main  # noqa: E402

ROWS: list[tuple[str, str, str]] = []


def row(what: str, passed: int, tried: int, note: str = "") -> None:
    ROWS.append((what, f"{passed} of {tried}", note))
    print(f"  {what}: {passed} of {tried} {note}", file=sys.stderr, flush=True)


def quiet(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


# -- kill -9 while saving ----------------------------------------------------------------

_EVENTS = ("fsync", "replace", "unlink", "write")


def _child_training(model_file: Path, run_dir: Path, kill_at: int | None, rng: random.Random) -> None:
    """In a forked child: train, counting file-system events of saving; SIGKILL at event
    ``kill_at`` (a write is cut after a random number of its bytes); report the count."""
    calls = {"n": 0}

    def hit() -> bool:
        calls["n"] += 1
        return calls["n"] == kill_at

    def wrap(real: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if hit():
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return wrapped

    real_fdopen = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        f = real_fdopen(fd, *args, **kwargs)
        real_write = f.write

        def write(data: bytes) -> int:
            if hit():
                real_write(data[: rng.randrange(len(data) + 1)])
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_write(data)
        f.write = write
        return f

    os.fsync, os.replace, os.unlink = wrap(os.fsync), wrap(os.replace), wrap(os.unlink)  # type: ignore[assignment]
    os.fdopen = fdopen  # type: ignore[assignment]
    status = quiet(["train", str(model_file), "--out", str(run_dir), "--quiet"])
    (run_dir.parent / f"{run_dir.name}.events").write_text(str(calls["n"]))
    os._exit(status)


def _fork(model_file: Path, run_dir: Path, kill_at: int | None, seed: int) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            _child_training(model_file, run_dir, kill_at, random.Random(seed))
        finally:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    return status


def kill_figures(tmp: Path, n: int, rng: random.Random, registry: nnplug.Registry) -> None:
    model_file = tiny_model(tmp, epochs=4, batch_size=24)
    whole = tmp / "whole"
    assert os.WEXITSTATUS(_fork(model_file, whole, None, 0)) == 0
    events = int((tmp / "whole.events").read_text())
    final = weights_of(whole)
    killed = loadable = resumed_equal = before_commit = clean_refusal = 0
    for k in range(n):
        run_dir = tmp / f"kill{k}"
        status = _fork(model_file, run_dir, rng.randint(1, events), rng.randrange(2**32))
        killed += os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        if not (run_dir / "manifest.json").exists():  # killed before the first commit
            before_commit += 1
            try:
                checkpoint.load_checkpoint(run_dir, registry)
            except nnplug.ConfigError:
                clean_refusal += 1
            continue
        ckpt = checkpoint.load_checkpoint(run_dir, registry)
        loadable += all(np.isfinite(v).all() for g in ckpt.model.params.values() for v in g.values())
        if quiet(["train", "--resume", str(run_dir), "--quiet"]) == 0:
            resumed = weights_of(run_dir)
            resumed_equal += all(final[key].tobytes() == resumed[key].tobytes() for key in final)
    after = n - before_commit
    row("kill -9 at a random file-system step of saving: killed", killed, n, f"({events} steps per run)")
    row("  ... after the first commit: checkpoint loadable", loadable, after)
    row("  ... after the first commit: resumed to the uninterrupted run's weights, bit for bit", resumed_equal, after)
    row("  ... before the first commit: refused with a message (nothing to resume)", clean_refusal, before_commit)


# -- SIGINT / SIGTERM --------------------------------------------------------------------


def interrupt_figures(tmp: Path, n: int, rng: random.Random) -> None:
    model_file = tiny_model(tmp, epochs=3, batch_size=16, optimizer={"type": "adam", "lr": 0.02})
    assert quiet(["train", str(model_file), "--out", str(tmp / "whole"), "--quiet"]) == 0
    metrics = (tmp / "whole" / "metrics.jsonl").read_bytes()
    final = weights_of(tmp / "whole")
    steps = json.loads((tmp / "whole" / "manifest.json").read_text())["optimizer"]["step"]
    original = optim.Optimizer.step
    stopped = identical = 0
    for k in range(n):
        sig, at = rng.choice([signal.SIGINT, signal.SIGTERM]), rng.randint(1, steps - 1)

        def step_then_signal(self: Any, params: Any, grads: Any, at: int = at, sig: int = sig) -> None:
            original(self, params, grads)
            if self.step_count == at:
                os.kill(os.getpid(), sig)

        out = tmp / f"cut{k}"
        with mock.patch.object(optim.Optimizer, "step", step_then_signal):
            status = quiet(["train", str(model_file), "--out", str(out), "--quiet"])
        stopped += status == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig]
        if quiet(["train", "--resume", str(out), "--quiet"]) == 0:
            resumed = weights_of(out)
            identical += ((out / "metrics.jsonl").read_bytes() == metrics
                          and all(final[key].tobytes() == resumed[key].tobytes() for key in final))
    row("SIGINT/SIGTERM at a random step: stopped and saved (exit 130/143)", stopped, n, f"({steps} steps per run)")
    row("  ... resumed: losses and weights equal to the uninterrupted run's, bit for bit", identical, n)


# -- damaged weights files ------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def damage_figures(tmp: Path, truncations: int, flips: int, rng: random.Random, registry: nnplug.Registry) -> None:
    model_file = tiny_model(tmp, epochs=1)
    run = tmp / "run"
    assert quiet(["train", str(model_file), "--out", str(run), "--quiet"]) == 0
    assert quiet(["train", str(model_file), "--out", str(tmp / "other"), "--quiet", "--seed", "7"]) == 0
    name = json.loads((run / "manifest.json").read_text())["weights"]["file"]
    good = (run / name).read_bytes()

    manifest = (run / "manifest.json").read_text()

    def refused(content: bytes, forge: bool = False) -> bool:
        """Put ``content`` in place of the weights (``forge``: with its SHA-256 in the manifest)."""
        (run / name).write_bytes(content)
        if forge:
            forged = json.loads(manifest)
            forged["weights"]["sha256"] = checkpoint.sha256_of(run / name)
            (run / "manifest.json").write_text(json.dumps(forged))
        try:
            checkpoint.load_checkpoint(run, registry)
        except nnplug.ConfigError:
            return True
        finally:
            (run / "manifest.json").write_text(manifest)
        return False

    cut = sum(refused(good[: rng.randrange(len(good))]) for _ in range(truncations))
    flipped = 0
    for _ in range(flips):
        data = bytearray(good)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        flipped += refused(bytes(data))
    marker = tmp / "payload-ran"
    buffer = io.BytesIO()
    np.savez(buffer, **{"hidden/w": np.array([_Payload(str(marker))], dtype=object)})
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("readme.txt", "not weights")
    foreign = {
        "another run's weights (other numbers)": (tmp / "other" / name).read_bytes(),
        "random bytes of the same length": rng.randbytes(len(good)),
        "a zip holding no arrays": zipped.getvalue(),
        "a pickle payload": buffer.getvalue(),
        "a bare pickle": pickle.dumps({"hidden/w": np.zeros(3)}),
    }
    refused_foreign = sum(refused(content) for content in foreign.values())
    forged = {"a pickle payload": buffer.getvalue(), "a bare pickle": foreign["a bare pickle"],
              "a zip holding no arrays": zipped.getvalue()}
    refused_forged = sum(refused(content, forge=True) for content in forged.values())
    (run / name).write_bytes(good)
    checkpoint.load_checkpoint(run, registry)  # the control: the intact file loads
    row("weights file truncated at a random length: refused", cut, truncations, f"({len(good)} bytes)")
    row("weights file with one random bit flipped: refused", flipped, flips)
    row("foreign files in place of the weights: refused", refused_foreign, len(foreign),
        "(caught by the SHA-256)")
    row("  ... the same with a forged SHA-256: refused, never unpickled", refused_forged, len(forged),
        f"(pickle payload ran: {'YES' if marker.exists() else 'no'})")


# -- model files --------------------------------------------------------------------------


def model_file_figures(n_documents: int, registry: nnplug.Registry) -> None:
    corpus = sorted(p for p in (TESTS / "data" / "malformed").iterdir() if p.name != "expected.yaml")
    clean = 0
    for path in corpus:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            status = main(["validate", str(path)])
        clean += status == 2 and err.getvalue().startswith("nnplug: error: ") and "Traceback" not in err.getvalue()
    row("malformed model files (tests/data/malformed): exit 2, one clean message", clean, len(corpus))

    outcomes: Counter[str] = Counter()
    worst = {"seconds": 0.0, "bytes": 0}

    @settings(max_examples=n_documents, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=faultkit.documents())
    def fuzz(case: tuple[Any, str]) -> None:
        document, fmt = case
        text = faultkit.dump(document, fmt)
        if text is None:
            return
        with tempfile.TemporaryDirectory() as tmp, mock.patch.object(build, "MAX_PARAMETERS", 200_000):
            path = Path(tmp) / f"fuzz.{fmt}"
            path.write_text(text)
            try:
                outcome = faultkit.build_bounded(path, registry)
            except Exception as exc:  # anything else is the bug this counts
                outcomes[f"other: {type(exc).__name__}"] += 1
                return
        outcomes[outcome.kind] += 1
        worst["seconds"] = max(worst["seconds"], outcome.seconds)
        worst["bytes"] = max(worst["bytes"], outcome.peak_bytes)

    fuzz()
    tried = sum(outcomes.values())
    good = outcomes["model"] + outcomes["ConfigError"] + outcomes["ShapeError"]
    row("random model documents: a model or a ConfigError/ShapeError", good, tried,
        f"({outcomes['model']} models, {outcomes['ConfigError']} ConfigError, {outcomes['ShapeError']} ShapeError; "
        f"slowest {worst['seconds'] * 1000:.0f} ms, peak {worst['bytes'] / 1e6:.1f} MB)")


# -- plugins --------------------------------------------------------------------------------


def plugin_figures(tmp: Path) -> None:
    site = tmp / "site"
    site.mkdir()
    sys.path.insert(0, str(site))
    named = healthy = tried = 0
    for kind in faultkit.PLUGIN_FAULT_KINDS:
        for position in faultkit.POSITIONS:
            fault = faultkit.install_plugin_fault(site, kind, position)
            registry = nnplug.Registry()
            info = next(p for p in registry.plugins if p.name == fault.module)
            tried += 1
            named += (info.status == "failed" and info.distribution == fault.dist and info.version == fault.version
                      and fault.phrase in (info.error or "") and fault.type_name not in registry)
            healthy += all(t in registry for t in [*fault.healthy_types, "dense", "softmax_cross_entropy"])
            for path in site.iterdir():  # one broken plugin at a time
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    sys.path.remove(str(site))
    kinds, positions = len(faultkit.PLUGIN_FAULT_KINDS), len(faultkit.POSITIONS)
    row(f"plugin faults ({kinds} kinds x {positions} load positions): healthy plugins all loaded", healthy, tried)
    row("  ... broken plugin named (distribution, version, error), nothing half-registered", named, tried)


def main_figures() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N: a smoke run")
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args()
    n = (10, 10, 20, 40, 50) if args.quick else (80, 60, 200, 400, 1000)
    rng = random.Random(args.seed)
    registry = nnplug.load_registry()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for sub in ("kill", "interrupt", "damage", "plugins"):
            (root / sub).mkdir()
        kill_figures(root / "kill", n[0], rng, registry)
        interrupt_figures(root / "interrupt", n[1], rng)
        damage_figures(root / "damage", n[2], n[3], rng, registry)
        model_file_figures(n[4], registry)
        plugin_figures(root / "plugins")
    print(f"| fault (seed {args.seed}) | passed | |\n|---|---|---|")
    for what, count, note in ROWS:
        print(f"| {what} | {count} | {note} |")
    print(f"\n{time.perf_counter() - started:.0f} s; python3 scripts/fault_figures.py --seed {args.seed}")


if __name__ == "__main__":
    main_figures()
