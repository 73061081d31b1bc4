"""Hypothesis profiles: ``ci`` (bounded, derandomized, no deadline) and a faster ``dev``;
the ``site`` fixture the plugin-discovery tests install fake distributions into; and Ctrl-C
as a terminal delivers it, whatever the shell that started pytest did with SIGINT.

CI sets ``CI=true``; ``HYPOTHESIS_PROFILE`` overrides the choice.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakedist import forget_modules
from hypothesis import settings

# A user may keep NNPLUG_DISABLE_PLUGIN_AUTOLOAD=1 in their shell, as PYTEST_DISABLE_PLUGIN_AUTOLOAD:
# then no built-in layer loads and most tests fail. The suite runs without it, subprocesses
# included; a test that wants it sets it. Popped at import: test modules build registries then.
os.environ.pop("NNPLUG_DISABLE_PLUGIN_AUTOLOAD", None)
# PYTEST_ADDOPTS (-v, say) is this run's, already read: the pytest runs the tests start in
# subprocesses, whose output they read, get only their own options
os.environ.pop("PYTEST_ADDOPTS", None)

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", max_examples=8, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, list[str]]]:
    """A fresh folder on sys.path for fake distributions, and a list the test appends the
    modules it installs to; they are forgotten afterwards."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    modules: list[str] = []
    yield root, modules
    forget_modules(*modules)


@pytest.fixture(autouse=True)
def _ctrl_c_as_in_a_terminal() -> Iterator[None]:
    """SIGINT as an interactive Python starts with it. A process started in the background of
    a non-interactive shell (`pytest &` in a script, some CI runners) inherits SIGINT ignored,
    which nnplug leaves ignored, so every test that sends itself SIGINT (test_train,
    test_cli_messages, test_train_stops) failed there."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
