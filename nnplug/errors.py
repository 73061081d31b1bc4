"""The one family of errors nnplug raises on bad input, bad plugins and failed checks."""

from __future__ import annotations


class NnplugError(Exception):
    """Base of every error nnplug raises on purpose; the CLI prints it without a traceback."""


class PluginError(NnplugError):
    """A plugin failed to load, broke the layer contract, or misbehaved at run time."""


class ConfigError(NnplugError, ValueError):
    """A model file or layer configuration is invalid.

    ``problems`` lists every problem found, one line each, so a file's errors are reported
    at once rather than one per run.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems: list[str] = list(problems) if problems else [message]
        super().__init__(message)


class ShapeError(NnplugError, ValueError):
    """An array shape does not fit a layer (wrong rank, kernel larger than its input, ...)."""


class NumericalError(NnplugError, FloatingPointError):
    """A loss, activation or gradient became NaN or infinite."""


class GradientCheckError(NnplugError, AssertionError):
    """An analytic gradient disagrees with finite differences; ``report`` holds the details."""

    def __init__(self, message: str, report: object | None = None) -> None:
        self.report = report
        super().__init__(message)


def exception_text(exc: BaseException) -> str:
    """``Type: message``, or just ``Type`` when the exception says nothing (a bare
    ``raise NotImplementedError``), for messages that quote what a plugin raised."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
