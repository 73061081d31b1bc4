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


def _plugin(*classes: object) -> object:
    class Plugin:
        @nnplug.hookimpl
        def nnplug_register_layers(self) -> list[object]:
            return list(classes)

    return Plugin()


def test_a_type_of_a_plugin_refused_for_another_class_is_told_where_it_comes_from():
    relu = nnplug.load_registry().get("relu")
    registry = nnplug.Registry(plugins=[_plugin(relu, "not a class")], autoload=False, strict=False)
    message = registry.unknown_type_message("relu")
    assert message.startswith("type 'relu' comes from plugin 'Plugin', which failed: ")
    assert "'not a class' is not a class" in message


def test_a_long_plugin_error_is_cut_to_200_characters_where_unknown_types_list_it():
    registry = nnplug.Registry(plugins=[_plugin("x" * 500)], autoload=False, strict=False)
    listed = registry.unknown_type_message("nope").split("plugins that failed to load: plugin 'Plugin': ")[1]
    assert listed.startswith("'xxx") and len(listed.split(";")[0]) == 200 and listed.split(";")[0].endswith("...")


def test_a_plugin_both_named_and_blocked_stays_blocked():
    registry = nnplug.Registry(plugins=["nnplug_layers"], blocked=["nnplug_layers"])
    assert "dense" not in registry


def test_a_hook_returning_a_class_instead_of_a_list_fails_the_plugin_with_a_message():
    relu = nnplug.load_registry().get("relu")

    class Plugin:
        @nnplug.hookimpl
        def nnplug_register_layers(self) -> object:
            return relu

    registry = nnplug.Registry(plugins=[Plugin()], autoload=False, strict=False)
    assert registry.plugins[-1].status == "failed"
    assert "expected a list of classes" in registry.plugins[-1].error


def test_a_hook_taking_arguments_the_spec_lacks_fails_the_plugin_with_one_line():
    class Plugin:
        @nnplug.hookimpl
        def nnplug_register_layers(self, extra: object) -> list[type]:
            return []

    registry = nnplug.Registry(plugins=[Plugin()], autoload=False, strict=False)
    error = registry.plugins[-1].error
    assert registry.plugins[-1].status == "failed"
    # pluggy's message spans lines: joined, it stays whole wherever an error is quoted by its first line
    assert error.startswith("invalid hook implementation: ")
    assert "\n" not in error and "extra" in error
