"""nnplug: a neural-network layer framework on numpy and scipy in which every layer is a plugin.

The public API lives here; ``__all__`` is the whole of it.
"""

from __future__ import annotations

from importlib import metadata

from nnplug.errors import (
    ConfigError,
    GradientCheckError,
    NnplugError,
    NumericalError,
    PluginError,
    ShapeError,
)
from nnplug.gradcheck import (
    GradcheckReport,
    gradcheck,
    gradcheck_layer,
    gradcheck_loss,
    gradcheck_model,
)
from nnplug.graph import Model
from nnplug.hookspecs import hookimpl, hookspec
from nnplug.layer import Layer, LayerConfig, Loss, parse_config
from nnplug.registry import PluginInfo, Registry, load_registry

try:
    __version__ = metadata.version("nnplug")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "ConfigError",
    "GradcheckReport",
    "GradientCheckError",
    "Layer",
    "LayerConfig",
    "Loss",
    "Model",
    "NnplugError",
    "NumericalError",
    "PluginError",
    "PluginInfo",
    "Registry",
    "ShapeError",
    "__version__",
    "gradcheck",
    "gradcheck_layer",
    "gradcheck_loss",
    "gradcheck_model",
    "hookimpl",
    "hookspec",
    "load_registry",
    "parse_config",
]
