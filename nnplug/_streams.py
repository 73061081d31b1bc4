"""Standard streams whose reader went away (``nnplug train ... | head -1``).

Python ignores SIGPIPE, so writing to a pipe nobody reads any more raises
``BrokenPipeError``. Following Python's documented recipe (the ``signal`` module's note on
SIGPIPE), the stream's file descriptor is then pointed at ``os.devnull``, so that the
interpreter's final flush of what is still buffered cannot fail again at exit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


def silence(stream: TextIO | None) -> None:
    """Point ``stream``'s file descriptor at ``os.devnull`` (when it has one)."""
    if stream is None:
        return
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream (io.StringIO, pytest's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def silence_broken_streams() -> None:
    """Flush stdout and stderr; silence each whose reader has gone. Called once a command
    stopped on a ``BrokenPipeError``: its remaining output, and the error, go nowhere."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            silence(stream)
        except (OSError, ValueError):  # closed, or another failure: nothing more to say on it
            pass


class PipeTolerant:
    """Wraps a text stream so that a reader going away drops the output instead of raising:
    a training run must not die, nor stop before saving, because ``| head`` exited.

    Attributes:
        broken: whether the reader has gone (every later write is dropped).
    """

    def __init__(self, stream: TextIO, on_broken: Any = None) -> None:
        self._stream = stream
        self._on_broken = on_broken
        self.broken = False

    def _lost(self) -> None:
        self.broken = True
        silence(self._stream)
        if self._on_broken is not None:
            self._on_broken()

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._lost()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._lost()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...: the wrapped stream's
        return getattr(self._stream, name)


@contextmanager
def output_may_close(consequence: str) -> Iterator[None]:
    """Within the block, a closed stdout or stderr drops what is printed to it instead of
    raising; the first time stdout goes, a warning on stderr says ``consequence``."""
    def warn() -> None:
        print(f"nnplug: warning: stdout was closed (its reader exited); {consequence}", file=sys.stderr,
              flush=True)

    saved = sys.stdout, sys.stderr
    if sys.stderr is not None:
        sys.stderr = PipeTolerant(sys.stderr)
    if sys.stdout is not None:
        sys.stdout = PipeTolerant(sys.stdout, on_broken=warn)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
