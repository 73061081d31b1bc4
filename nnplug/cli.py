"""The ``nnplug`` command: plugins, validate, train, evaluate, gradcheck, schema.

Exit status: 0 success, 1 a check failed, 2 a usage or input error, 130/143 a training run
stopped by SIGINT/SIGTERM (and saved), 141 (128 + SIGPIPE, what a shell reports for a
command a closed pipe killed) when the reader of the output went away (``| head``): the
command stops quietly, without a traceback. ``train`` alone keeps going: a closed stdout
stops its progress output, never the run, which trains to the end, saves, and exits with the
run's own status. Every ``nnplug.NnplugError`` is printed as one message without a
traceback; any other exception is a bug in nnplug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nnplug._streams import output_may_close, silence_broken_streams
from nnplug.errors import ConfigError, NnplugError, PluginError
from nnplug.registry import Registry, first_line

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_BROKEN_PIPE = 0, 1, 2, 141


def _version() -> str:
    from nnplug.checkpoint import nnplug_version

    return nnplug_version()


def _plugin_option(parser: argparse.ArgumentParser, dest: str) -> None:
    parser.add_argument(
        "-p", dest=dest, action="append", default=[], metavar="NAME",
        help="load plugin NAME (entry point, distribution or module) even when autoload is "
             "disabled; -p no:NAME blocks it, as with pytest",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnplug",
        description="Neural networks whose every layer is a plugin: check, train and evaluate "
                    "models described in YAML, JSON or TOML files.",
    )
    parser.add_argument("--version", action="version", version=f"nnplug {_version()}")
    _plugin_option(parser, "plugin_options")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _plugin_option(p, "plugin_options_after")
        return p

    command("plugins", "list installed plugins: distribution, version, layer types, status")
    p = command("validate", "check a model file and print its summary table")
    p.add_argument("model", metavar="MODEL", help="a .yaml, .yml, .json or .toml model file")
    p.add_argument("--no-data", action="store_true",
                   help="check the model alone, not the data its data section names")
    p = command("train", "train a model file and save a run directory")
    p.add_argument("model", metavar="MODEL", nargs="?", help="the model file (omit with --resume)")
    p.add_argument("--epochs", type=int, help="number of epochs (overrides the file)")
    p.add_argument("--batch-size", type=int, help="mini-batch size (overrides the file)")
    p.add_argument("--lr", type=float, help="learning rate (overrides the file)")
    p.add_argument("--seed", type=int, help="seed for weights and shuffling (overrides the file)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<name>-<time>)")
    p.add_argument("--quiet", action="store_true", help="print only the final line")
    p.add_argument("--plot", action="store_true", help="write curves.png (needs matplotlib)")
    p.add_argument("--resume", metavar="RUN", help="continue the run saved in RUN")
    _threads_option(p)
    p = command("evaluate", "loss and accuracy of a saved run on its validation data")
    p.add_argument("run", metavar="RUN", help="a run directory written by nnplug train")
    p.add_argument("--min-accuracy", type=float, metavar="A",
                   help="exit with status 1 when the accuracy is below A (a fraction, 0-1: "
                        "0.98 for 98%%)")
    _threads_option(p)
    p = command("gradcheck", "property-based gradient checks of installed layer types")
    p.add_argument("types", metavar="TYPE", nargs="*", help="layer or loss types (default: all)")
    p.add_argument("--examples", type=int, default=20, help="hypothesis examples per type (1 to 100,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument("--mode", choices=("fast", "full"), default="fast",
                   help="fast: directional derivatives; full: every entry")
    p.add_argument("--quiet", action="store_true",
                   help="print only failures (with their reproducers) and the summary line")
    command("schema", "print the JSON Schema of model files for the installed plugins")
    return parser


def make_registry(options: Sequence[str]) -> Registry:
    """``-p NAME`` loads NAME, ``-p no:NAME`` blocks it (pytest's convention)."""
    blocked = [o[3:] for o in options if o.startswith("no:")]
    wanted = [o for o in options if not o.startswith("no:")]
    if any(not name for name in blocked + wanted):
        raise ConfigError("-p needs a plugin name (or no:NAME)")
    return Registry(plugins=wanted, blocked=blocked, strict=False)  # _check_requested raises, after any table


def _check_requested(registry: Registry, options: Sequence[str]) -> None:
    try:
        registry.raise_for_named(o for o in options if not o.startswith("no:"))
    except PluginError as exc:
        raise ConfigError(str(exc).replace(" failed to load", " given with -p failed to load", 1)) from None


def _warn_failed_plugins(registry: Registry) -> None:
    """A broken plugin, or a type two plugins claim, must not stop a model that does not use
    it, nor pass unnoticed (``gradcheck`` would otherwise check one type fewer, silently)."""
    for info in registry.plugins:
        if info.status == "failed":
            print(f"nnplug: warning: {info.label} failed to load ({first_line(info.error)}); its layer types "
                  f"are unavailable; `nnplug plugins` shows why, `-p no:{info.name}` skips it",
                  file=sys.stderr)
    for message in registry.conflicts.values():
        print(f"nnplug: warning: {message}", file=sys.stderr)


# -- commands ----------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace, registry: Registry) -> int:
    rows = [("plugin", "distribution", "version", "status", "layer types")]
    errors = []
    for info in registry.plugins:
        types = [f"{t} (claimed twice: not registered)" if t in registry.conflicts else t for t in info.types]
        rows.append((info.name, info.distribution, info.version, info.status, ", ".join(types) or "-"))
        if info.error:
            source = "" if info.distribution == "-" else f" (distribution {info.distribution} {info.version})"
            errors.append(f"  {info.name}{source}: " + info.error.replace("\n", "\n      "))
    if len(rows) == 1:
        print("no plugins installed (and none given with -p)")
        return EXIT_OK
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        if k == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * 11)
    if errors:
        print("\nerrors:")
        print("\n".join(errors))
    return EXIT_OK


#: validate draws the weights (checking every init_params) of models up to this many parameters.
VALIDATE_DRAWS_UP_TO = 20_000_000


def cmd_validate(args: argparse.Namespace, registry: Registry) -> int:
    from nnplug.modelfile import build_model

    # The summary needs shapes, not weights; a small model's are drawn all the same (cheaply),
    # running every init_params as train will
    model = build_model(args.model, registry, init=False, draw_up_to=VALIDATE_DRAWS_UP_TO)
    print(model.summary())
    if model.spec.data is not None and not args.no_data:
        from nnplug.data import load_dataset

        # What train checks before its first step: the arrays exist, fit the input and the loss
        data = load_dataset(model.spec.data, model, base_dir=Path(args.model).parent)
        n_val = 0 if data.x_val is None else len(data.x_val)
        print(f"data: {len(data.x)} training and {n_val} validation examples ({data.origin})")
    print(f"{args.model}: valid")
    return EXIT_OK


def cmd_train(args: argparse.Namespace, registry: Registry) -> int:
    from nnplug.runs import train_command

    return train_command(args, registry)


def cmd_evaluate(args: argparse.Namespace, registry: Registry) -> int:
    from nnplug.checkpoint import load_checkpoint
    from nnplug.data import data_digest, load_dataset
    from nnplug.train import evaluate

    if args.min_accuracy is not None and not 0 <= args.min_accuracy <= 1:
        a = args.min_accuracy
        hint = (f"; {a:g} reads as a percentage: write {a / 100:g} for {a:g}%" if 1 < a <= 100 else "")
        raise ConfigError(f"--min-accuracy: expected a fraction from 0 to 1, got {a:g}{hint}")
    ckpt = load_checkpoint(args.run, registry, optimizer=False)  # scoring needs only the weights
    model = ckpt.model
    if model.spec.data is None:
        raise ConfigError(f"{args.run}: the run's model file has no data section")
    data = load_dataset(model.spec.data, model, base_dir=Path(args.run), saved_run=True)
    trained_on = ckpt.progress.get("data_sha256")  # (absent from runs saved before nnplug kept it)
    if trained_on is not None and trained_on != data_digest(data):
        print(f"nnplug: warning: {args.run}: the data ({data.origin}) differ from the data the run was "
              "trained on (changed since); the scores below are on the data as they are now", file=sys.stderr)
    if data.x_val is not None and data.y_val is not None:
        x, y, which = data.x_val, data.y_val, f"validation examples ({data.origin})"
    else:
        x, y, which = data.x, data.y, f"training examples ({data.origin}; the run holds no validation data)"
    loss, accuracy = evaluate(model, x, y)
    shown = "n/a" if accuracy is None else f"{accuracy:.2%}"
    print(f"{args.run}: loss {loss:.4f}, accuracy {shown} on {len(x)} {which}")
    if args.min_accuracy is not None and accuracy is None:
        loss_type = model.loss.config.type
        # an in-process plugin (Registry(plugins=[module]), -p module) has no distribution: name it
        info = registry.plugin_of(loss_type) if loss_type in registry else None
        plugin = "?" if info is None else info.distribution if info.distribution != "-" else f"plugin {info.name!r}"
        raise ConfigError(f"--min-accuracy: the run's loss ({loss_type}) reports no accuracy (its class, from "
                          f"{plugin}, defines no accuracy(pred, target)); leave the option out for a regression "
                          "model")
    if args.min_accuracy is not None and accuracy < args.min_accuracy:
        print(f"accuracy {shown} is below --min-accuracy {args.min_accuracy:.2%}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_OK


def cmd_gradcheck(args: argparse.Namespace, registry: Registry) -> int:
    try:
        from nnplug.property_runs import MAX_EXAMPLES, gradcheck_main
    except ImportError as exc:
        if exc.name != "nnplug.property_runs":
            raise
        raise ConfigError("gradcheck is not available in this build of nnplug") from None
    if not 1 <= args.examples <= MAX_EXAMPLES:
        raise ConfigError(f"--examples: expected a number from 1 to {MAX_EXAMPLES:,}, got {args.examples}")
    with _hypothesis_storage_outside_cwd():
        return int(gradcheck_main(registry, list(args.types), examples=args.examples,
                                  seed=args.seed, mode=args.mode, quiet=args.quiet))


@contextmanager
def _hypothesis_storage_outside_cwd() -> Iterator[None]:
    """Hypothesis caches what it reads from source files under ``./.hypothesis``; a command
    run from any folder should leave nothing behind, so the cache lives in a temporary folder
    (unless the user chose one with ``HYPOTHESIS_STORAGE_DIRECTORY``)."""
    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        yield
        return
    from hypothesis.configuration import set_hypothesis_home_dir

    with tempfile.TemporaryDirectory(prefix="nnplug-hypothesis-") as scratch:
        set_hypothesis_home_dir(scratch)
        try:
            yield
        finally:
            set_hypothesis_home_dir(None)


def cmd_schema(args: argparse.Namespace, registry: Registry) -> int:
    from nnplug.config import model_json_schema

    print(json.dumps(model_json_schema(registry), indent=2))
    return EXIT_OK


COMMANDS = {
    "plugins": cmd_plugins,
    "validate": cmd_validate,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "gradcheck": cmd_gradcheck,
    "schema": cmd_schema,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    for stream in (sys.stdout, sys.stderr):  # a file name that is not valid UTF-8 is echoed escaped
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        return _main(argv)
    except BrokenPipeError:  # the output's reader went away (`| head`): stop quietly
        silence_broken_streams()
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse reported
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "train":  # a closed stdout stops the progress output, never the run
        with output_may_close("training goes on to the end and saves, without printing its progress"):
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    options: list[str] = [*args.plugin_options, *args.plugin_options_after]
    try:
        registry = make_registry(options)
        if args.command == "plugins":  # the table first: it shows what failed and why
            status = cmd_plugins(args, registry)
            _check_requested(registry, options)
            return status
        _check_requested(registry, options)
        _warn_failed_plugins(registry)
        with _blas_threads(getattr(args, "threads", None)):
            return COMMANDS[args.command](args, registry)
    except ConfigError as exc:  # every problem of a file, each on its own line with its path
        _error("\n".join(exc.problems) if len(exc.problems) > 1 else str(exc))
        return EXIT_USAGE
    except NnplugError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:  # another command, or train before its run directory is made
        _error("interrupted before training started; nothing was saved" if args.command == "train"
               else "interrupted")
        return 130
    except BrokenPipeError:  # the output's reader went away: main stops quietly
        raise
    except OSError as exc:  # the file system refused (permissions, disk full): not a bug
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _error(f"{where}{exc.strerror or exc}")
        return EXIT_USAGE
    except MemoryError as exc:  # an input too large for this machine: say so, not a traceback
        detail = f" ({exc})" if str(exc) else ""
        _error(f"{args.command}: out of memory{detail}; the model or data is too large for this machine")
        return EXIT_USAGE


def _threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads for numpy's BLAS and nnplug's batch splitting (default: BLAS's own "
                        "setting); 1 on a machine whose cores are busy with other work")


@contextmanager
def _blas_threads(threads: int | None) -> Iterator[None]:
    """numpy's BLAS held to ``threads`` threads for the command (the layers split a batch over
    no more threads than BLAS may use); BLAS's own setting when None."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ConfigError(f"--threads: expected a positive number of threads, got {threads}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        yield


def _error(message: str) -> None:
    lines = message.splitlines() or [""]
    print(f"nnplug: error: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"  {line}", file=sys.stderr)


def entry() -> Any:
    """The console script."""
    sys.exit(main())
