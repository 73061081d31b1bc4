"""Fake installed distributions for registry tests: a ``*.dist-info`` folder with an
``entry_points.txt`` and a plugin module, placed on ``sys.path``."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

GOOD_LAYER = '''
from typing import Literal
import numpy as np
import nnplug

class {cls}Config(nnplug.LayerConfig):
    type: Literal["{type}"] = "{type}"

class {cls}(nnplug.Layer):
    """y = 2x."""
    Config = {cls}Config
    def output_shape(self, in_shape):
        return in_shape
    def forward(self, params, x, *, training):
        return 2 * x, None
    def backward(self, params, cache, dy):
        return 2 * dy, {{}}

@nnplug.hookimpl
def nnplug_register_layers():
    return [{cls}]
'''


def good_plugin_source(type_name: str) -> str:
    cls = "".join(part.title() for part in type_name.split("_"))
    return GOOD_LAYER.format(cls=cls, type=type_name)


def install_fake_dist(root: Path, dist: str, module: str, source: str, version: str = "1.0",
                      entry_name: str | None = None) -> Path:
    """Write ``module.py`` and ``name-version.dist-info`` under ``root``; ``root`` must be on
    sys.path. The folder's name is escaped as installers write it (runs of ``-_.`` become
    ``_``), so a distribution named ``nnplug-fancy`` is found by either spelling."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{re.sub(r'[-_.]+', '_', dist)}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[nnplug]\n{entry_name or module} = {module}\n")
    return root


def forget_modules(*names: str) -> None:
    for name in names:
        sys.modules.pop(name, None)
