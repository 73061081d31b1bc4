"""The public surface: ``__all__`` is honest, and the core never imports the built-in layers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nnplug

CORE = Path(nnplug.__file__).parent


def test_all_names_exist_and_are_documented():
    for name in nnplug.__all__:
        assert hasattr(nnplug, name), name
        obj = getattr(nnplug, name)
        if callable(obj):
            assert obj.__doc__, f"nnplug.{name} has no docstring"


def test_public_classes_are_in_all():
    public = {n for n, v in vars(nnplug).items() if isinstance(v, type) and not n.startswith("_")}
    assert public <= set(nnplug.__all__)


def test_error_family_matches_the_design():
    assert issubclass(nnplug.ConfigError, (nnplug.NnplugError, ValueError))
    assert issubclass(nnplug.ShapeError, ValueError) and issubclass(nnplug.ShapeError, nnplug.NnplugError)
    assert issubclass(nnplug.GradientCheckError, AssertionError)
    assert issubclass(nnplug.PluginError, nnplug.NnplugError)


def test_core_source_never_imports_the_builtin_layers():
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] == "nnplug_layers" for n in names), path


def test_importing_nnplug_and_loading_plugins_lazily():
    code = (
        "import sys, nnplug\n"
        "assert 'nnplug_layers' not in sys.modules, 'imported at import time'\n"
        "registry = nnplug.load_registry()\n"
        "assert 'nnplug_layers' in sys.modules and 'dense' in registry\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_assert_statements_check_inputs_in_the_core():
    offenders = []
    for path in CORE.rglob("*.py"):
        if path.name == "testing.py" or path.name.startswith("_harness"):
            continue  # test helpers report with assertions on purpose
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assert):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
