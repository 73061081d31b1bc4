"""Plugins handed to ``Registry(plugins=[...])`` as module objects, as a notebook does after
``import my_plugin``."""

from __future__ import annotations

import nnplug


def test_an_installed_plugin_given_as_its_module_loads_once_beside_autoload():
    import nnplug_layers

    registry = nnplug.Registry(plugins=[nnplug_layers])
    assert registry.get("dense").__name__ == "Dense"
    assert [p.status for p in registry.plugins if p.status == "failed"] == []


def test_an_installed_plugin_given_as_its_module_and_by_name_loads_once():
    import nnplug_layers

    registry = nnplug.load_registry(plugins=[nnplug_layers, "nnplug_layers"])
    assert "conv2d" in registry
    assert not registry.conflicts
