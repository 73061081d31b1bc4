"""A pytest plugin that checks every installed layer type: one test per type, with no test code.

Opt in per run (or with ``pytest_plugins = ["nnplug.pytest_plugin"]`` in a conftest)::

    pytest -p nnplug.pytest_plugin --nnplug-layers=              # every type with gradcheck_cases()
    pytest -p nnplug.pytest_plugin --nnplug-layers=swish,dense   # the named ones
    pytest -p nnplug.pytest_plugin --nnplug-layers= --nnplug-mode fast tests  # beside the tests

Write the ``=``: the option's value is optional, so a bare ``--nnplug-layers`` followed by a path
takes the path as the type names (an existing path is refused with that advice).

Each test draws cases and seeds with hypothesis, under the loaded settings profile, and runs
:func:`nnplug.testing.check`. Without ``--nnplug-layers`` the plugin adds options and nothing
else: no registry is loaded and no test is collected. It is not registered as an automatic
``pytest11`` plugin on purpose: importing nnplug (numpy, scipy, pydantic) would then cost every
pytest run in the environment, nnplug user or not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

#: The module holding the one parametrised test this plugin adds.
CHECKS_MODULE = Path(__file__).with_name("_pytest_checks.py")
#: Its tests' node ids start with this wherever nnplug is installed (pytest would make the file
#: part empty for a file outside the rootdir, the usual case: ``::test_layer_keeps_the_contract[relu]``).
CHECKS_NODEID = "nnplug/_pytest_checks.py"
_REGISTRY = pytest.StashKey[Any]()
_TYPES = pytest.StashKey[list[Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nnplug", "nnplug layer checks")
    group.addoption("--nnplug-layers", dest="nnplug_layers", nargs="?", const="", default=None,
                    metavar="NAMES", help="check the installed nnplug layer types (all that offer "
                    "gradcheck_cases(), or the comma-separated NAMES): layer contract and gradients; "
                    "write --nnplug-layers=NAMES (a bare option takes the next word as NAMES)")
    group.addoption("--nnplug-mode", dest="nnplug_mode", choices=("full", "fast"), default="full",
                    help="gradient check mode of --nnplug-layers (default: full)")


def pytest_configure(config: pytest.Config) -> None:
    wanted = config.getoption("nnplug_layers")
    if wanted is None:
        return
    from nnplug.errors import PluginError
    from nnplug.testing import checkable_types

    names = [n.strip() for n in wanted.split(",") if n.strip()] or None
    if names:
        _refuse_paths_taken_as_names(config, names)
    try:
        with_cases, without = checkable_types(_registry(config), names)
    except PluginError as exc:
        raise pytest.UsageError(f"--nnplug-layers: {exc}") from None
    if names and without:
        verb = "offers" if len(without) == 1 else "offer"
        raise pytest.UsageError(f"--nnplug-layers: {', '.join(without)} {verb} no gradcheck_cases()")
    config.stash[_TYPES] = with_cases
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        config.args.append(str(CHECKS_MODULE))  # beside the paths the user named
    else:
        config.args[:] = [str(CHECKS_MODULE)]  # only the layer checks, not the whole suite


def _refuse_paths_taken_as_names(config: pytest.Config, names: list[str]) -> None:
    """``--nnplug-layers tests`` reads ``tests`` as the option's value (argparse's optional
    value), not as a path: say so rather than "unknown type 'tests'"."""
    known = _registry(config).types
    for name in names:
        if name not in known and (config.invocation_params.dir / name).exists():
            raise pytest.UsageError(
                f"--nnplug-layers: {name!r} is not a layer type; did you mean to pass it as a path? "
                "write --nnplug-layers=NAMES (or --nnplug-layers= for every type): a bare "
                "--nnplug-layers takes the word after it as NAMES")


def _registry(config: pytest.Config) -> Any:
    if _REGISTRY not in config.stash:
        from nnplug.registry import load_registry

        config.stash[_REGISTRY] = load_registry()
    return config.stash[_REGISTRY]


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """The checks module under :data:`CHECKS_NODEID`; any other module as pytest makes it."""
    if module_path.name != CHECKS_MODULE.name or _TYPES not in parent.config.stash:
        return None
    if module_path.resolve() != CHECKS_MODULE.resolve():
        return None
    return pytest.Module.from_parent(parent, path=module_path, nodeid=CHECKS_NODEID)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "nnplug_layer_type" in metafunc.fixturenames:
        types: list[Any] = metafunc.config.stash.get(_TYPES, [])
        metafunc.parametrize("nnplug_layer_type", types)


@pytest.fixture(scope="session")
def nnplug_registry(pytestconfig: pytest.Config) -> Any:
    """The registry of installed plugins the layer checks use."""
    return _registry(pytestconfig)


@pytest.fixture(scope="session")
def nnplug_check_mode(pytestconfig: pytest.Config) -> str:
    """``full`` or ``fast``, from ``--nnplug-mode``."""
    return str(pytestconfig.getoption("nnplug_mode"))
