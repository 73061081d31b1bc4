"""The registry: discovery through entry points, broken plugins set aside, conflicts refused."""

from __future__ import annotations

import itertools
import uuid
from typing import Literal

import pytest
from fakedist import good_plugin_source, install_fake_dist

import nnplug
from nnplug.cli import main
from nnplug.registry import contract_problem

BROKEN_SOURCES = {
    "import_fails": "raise ImportError('missing dependency frobnicate')\n",
    "hook_raises": (
        "import nnplug\n"
        "@nnplug.hookimpl\n"
        "def nnplug_register_layers():\n"
        "    raise RuntimeError('hook exploded')\n"
    ),
    "returns_non_class": (
        "import nnplug\n"
        "@nnplug.hookimpl\n"
        "def nnplug_register_layers():\n"
        "    return [42]\n"
    ),
    "returns_none": (
        "import nnplug\n"
        "@nnplug.hookimpl\n"
        "def nnplug_register_layers():\n"
        "    return None\n"
    ),
    "bad_hook_signature": (
        "import nnplug\n"
        "@nnplug.hookimpl\n"
        "def nnplug_register_layers(unexpected_argument):\n"
        "    return []\n"
    ),
    "forgot_hookimpl_marker": good_plugin_source("forgotten").replace("@nnplug.hookimpl\n", ""),
    "exits_at_import": "import sys\nsys.exit(3)\n",
    "no_config": (
        "import nnplug\n"
        "class NoConfig(nnplug.Layer):\n"
        "    pass\n"
        "@nnplug.hookimpl\n"
        "def nnplug_register_layers():\n"
        "    return [NoConfig]\n"
    ),
    "type_not_literal": (
        "import nnplug\n"
        "class C(nnplug.LayerConfig):\n"
        "    type: str = 'loose'\n"
        "class Loose(nnplug.Layer):\n"
        "    Config = C\n"
        "@nnplug.hookimpl\n"
        "def nnplug_register_layers():\n"
        "    return [Loose]\n"
    ),
    "not_a_layer": (
        "import nnplug\n"
        "class Stranger:\n"
        "    pass\n"
        "@nnplug.hookimpl\n"
        "def nnplug_register_layers():\n"
        "    return [Stranger]\n"
    ),
}


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_builtin_layers_are_discovered_through_the_entry_point_group():
    registry = nnplug.load_registry()
    info = registry.plugin_of("dense")
    assert info.name == "nnplug_layers"
    assert info.distribution == "nnplug"
    assert info.status == "loaded"
    assert {"dense", "relu", "add", "concat"} <= set(registry.layer_types())
    assert {"softmax_cross_entropy", "mse"} <= set(registry.loss_types())


@pytest.mark.parametrize("kind", sorted(BROKEN_SOURCES))
@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_broken_plugin_is_set_aside_and_healthy_ones_still_load(site, kind, position):
    root, created = site
    # Distribution names sort in load order; place the broken one first, between, or last.
    order = {"first": ("a", "m", "z"), "middle": ("m", "a", "z"), "last": ("z", "a", "m")}[position]
    broken_dist = f"{order[0]}broken-{kind.replace('_', '-')}"
    broken_mod = _unique("broken")
    install_fake_dist(root, broken_dist, broken_mod, BROKEN_SOURCES[kind], version="3.1")
    good_types = []
    for letter in order[1:]:
        mod = _unique("good")
        type_name = _unique("double")
        install_fake_dist(root, f"{letter}good-{mod}", mod, good_plugin_source(type_name))
        created.append(mod)
        good_types.append(type_name)
    created.append(broken_mod)

    registry = nnplug.Registry()

    for type_name in good_types:
        assert registry.get(type_name).type_name() == type_name
    assert registry.get("dense") is not None  # the built-ins survive a clash
    info = next(p for p in registry.plugins if p.name == broken_mod)
    assert info.status == "failed"
    assert info.distribution == broken_dist and info.version == "3.1"
    assert info.error
    assert broken_dist in info.label and "3.1" in info.label
    registered_by_broken = [t for t, c in registry.types.items() if registry.plugin_of(t) is info]
    assert registered_by_broken == []  # nothing half-registered


@pytest.mark.parametrize("clasher_dist", ["aa-clasher", "zz-clasher"])
def test_type_claimed_twice_is_refused_for_both_whatever_the_load_order(site, clasher_dist):
    root, created = site
    mod = _unique("clash")
    own_type = _unique("own")
    source = good_plugin_source("relu") + good_plugin_source(own_type).replace(
        "@nnplug.hookimpl\ndef nnplug_register_layers():", "def _unused():"
    ).replace("import nnplug", "")
    source = source.replace("return [Relu]", f"return [Relu, {own_type.title().replace('_', '')}]")
    install_fake_dist(root, clasher_dist, mod, source, version="0.9")
    created.append(mod)
    registry = nnplug.Registry()
    with pytest.raises(nnplug.PluginError) as err:
        registry.get("relu")
    assert clasher_dist in str(err.value) and "distribution nnplug" in str(err.value)
    assert "dense" in registry  # the rest of both plugins still load
    assert own_type in registry
    info = next(p for p in registry.plugins if p.name == mod)
    assert "'relu'" in info.error
    assert set(registry.conflicts) == {"relu"}


def test_the_listing_marks_a_type_claimed_twice_as_not_registered(site, capsys):
    root, created = site
    mod = _unique("clash")
    install_fake_dist(root, "zz-clasher", mod, good_plugin_source("relu"), version="0.9")
    created.append(mod)
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith((mod, "nnplug_layers"))]
    assert len(rows) == 2 and all("relu (claimed twice: not registered)" in row for row in rows)


def test_every_other_command_warns_of_a_type_claimed_twice(site, capsys):
    # gradcheck used to check one type fewer, exit 0 and say nothing
    root, created = site
    mod = _unique("clash")
    install_fake_dist(root, "zz-clasher", mod, good_plugin_source("relu"), version="0.9")
    created.append(mod)
    assert main(["gradcheck", "sigmoid", "--examples", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "nnplug: warning: type 'relu' is claimed by both" in err and "zz-clasher" in err


def test_with_every_plugin_blocked_an_unknown_type_says_none_are_registered_and_why():
    with pytest.raises(nnplug.PluginError, match=r"no types are registered \(autoload=False: name plugins"):
        nnplug.Registry(autoload=False).get("dense")
    with pytest.raises(nnplug.PluginError, match=r"no types are registered \(every plugin failed or was blocked"):
        nnplug.Registry(blocked=["nnplug_layers"]).get("dense")


@pytest.mark.parametrize("value", ["1", "yes", "off", "TRUE"])
def test_with_autoload_disabled_an_unknown_type_names_the_variable_and_its_value(monkeypatch, value):
    monkeypatch.setenv("NNPLUG_DISABLE_PLUGIN_AUTOLOAD", value)
    with pytest.raises(nnplug.PluginError, match=rf"NNPLUG_DISABLE_PLUGIN_AUTOLOAD='{value}' is set, so only "
                                                 r"plugins named with -p NAME load"):
        nnplug.Registry().get("dense")


@pytest.mark.parametrize("value", ["", "0", "false", "FALSE", " False "])
def test_an_empty_zero_or_false_autoload_variable_leaves_autoload_on(monkeypatch, value):
    monkeypatch.setenv("NNPLUG_DISABLE_PLUGIN_AUTOLOAD", value)
    assert "dense" in nnplug.Registry()


def test_gradcheck_and_evaluate_say_autoload_is_off_when_nothing_is_registered(monkeypatch, tmp_path, capsys):
    from runkit import tiny_model

    from nnplug.cli import main

    assert main(["train", str(tiny_model(tmp_path, epochs=1)), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    monkeypatch.setenv("NNPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert main(["gradcheck"]) == 2  # a check that checked nothing does not pass
    assert "no layer or loss types are registered (NNPLUG_DISABLE_PLUGIN_AUTOLOAD='1' is set" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    assert "not loaded: dense (from nnplug" in (err := capsys.readouterr().err)
    assert "(NNPLUG_DISABLE_PLUGIN_AUTOLOAD='1' is set, so only plugins named with -p NAME load)" in err


def test_a_plugin_with_one_bad_class_registers_none_of_its_classes(site):
    root, created = site
    mod = _unique("mixed")
    good_type = _unique("fine")
    source = good_plugin_source(good_type).replace(
        "return [", "return [int, "
    )
    install_fake_dist(root, "mixed-dist", mod, source)
    created.append(mod)
    registry = nnplug.Registry()
    assert good_type not in registry
    with pytest.raises(nnplug.PluginError, match="mixed-dist"):
        registry.get(good_type)


def test_forgotten_hookimpl_marker_is_explained(site):
    root, created = site
    mod = _unique("unmarked")
    install_fake_dist(root, "unmarked-dist", mod, BROKEN_SOURCES["forgot_hookimpl_marker"])
    created.append(mod)
    info = next(p for p in nnplug.Registry().plugins if p.name == mod)
    assert info.status == "failed" and "@nnplug.hookimpl" in info.error


def test_contract_problems_name_the_class():
    class NotALayer:
        pass

    assert "NotALayer" in contract_problem(NotALayer)
    assert "not a class" in contract_problem(3)

    class Orphan(nnplug.Layer):
        pass

    assert "no Config" in contract_problem(Orphan)

    class Both(nnplug.Layer, nnplug.Loss):
        pass

    assert "subclasses both nnplug.Layer and nnplug.Loss" in contract_problem(Both)


@pytest.mark.parametrize(("field", "annotation"), [("inputs", int), ("name", int), ("name", "str | None"),
                                                  ("name", "str | None = None")])  # the last drops the name pattern
def test_a_config_redefining_the_graphs_keys_is_refused(field, annotation):
    # `inputs: int = 3` in a plugin's Config used to drop its nodes from the graph: a KeyError traceback
    annotation, _, default = annotation.partition(" = ") if isinstance(annotation, str) else (annotation, "", "")
    namespace = {"__annotations__": {"type": Literal["hides_keys"], field: annotation},
                 "type": "hides_keys", field: 3 if annotation is int else None if default else "fixed"}
    config = type("HidesKeys", (nnplug.LayerConfig,), namespace)
    layer = type("HidesKeysLayer", (nnplug.Layer,), {"Config": config})
    assert f"Config redefines {field!r}" in contract_problem(layer)


def test_unknown_type_lists_available_and_nearest_match():
    registry = nnplug.load_registry()
    with pytest.raises(nnplug.PluginError) as err:
        registry.get("dnese")
    message = str(err.value)
    assert "did you mean 'dense'" in message
    assert "relu" in message and "softmax_cross_entropy" in message


def test_disabled_autoload_loads_only_named_plugins(site, monkeypatch):
    root, created = site
    mod = _unique("optin")
    type_name = _unique("optin")
    install_fake_dist(root, "optin-dist", mod, good_plugin_source(type_name))
    created.append(mod)
    monkeypatch.setenv("NNPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")

    nothing = nnplug.load_registry()
    assert nothing.types == {}
    assert {p.status for p in nothing.plugins} == {"disabled"}

    named = nnplug.load_registry(plugins=["nnplug_layers", "optin-dist"])
    assert "dense" in named and type_name in named
    assert len([p for p in named.plugins if p.status == "loaded"]) == 2


def test_a_plugin_is_named_by_its_module_as_well_as_its_entry_point_and_distribution(site):
    root, created = site
    mod, type_name = _unique("acme_mod"), _unique("acme")
    install_fake_dist(root, "acme-layers", mod, good_plugin_source(type_name), entry_name="acme")
    created.append(mod)
    # with autoload on, naming the module used to register it a second time: a raw pluggy error
    named = nnplug.Registry(plugins=[mod])
    assert type_name in named and [p.status for p in named.plugins if p.name == "acme"] == ["loaded"]
    assert not any(p.name == mod for p in named.plugins)
    assert type_name not in nnplug.Registry(blocked=[mod])


def test_blocked_plugin_is_not_loaded():
    registry = nnplug.Registry(blocked=["nnplug_layers"])
    assert "dense" not in registry
    assert next(p for p in registry.plugins if p.name == "nnplug_layers").status == "blocked"


def test_in_process_plugin_object_registers_like_an_installed_one():
    import types

    source = good_plugin_source("tripler").replace("2 * ", "3 * ")
    module = types.ModuleType("inproc_tripler")
    exec(compile(source, "inproc_tripler", "exec", dont_inherit=True), module.__dict__)
    registry = nnplug.Registry(plugins=[module])
    assert registry.get("tripler").__name__ == "Tripler"
    assert registry.plugin_of("tripler").distribution == "-"


def test_plugin_load_order_does_not_change_the_outcome(site):
    root, created = site
    names = []
    for letter in "abc":
        mod = _unique("ordered")
        type_name = _unique("t")
        install_fake_dist(root, f"{letter}-ordered", mod, good_plugin_source(type_name))
        created.append(mod)
        names.append(type_name)
    for _ in itertools.repeat(None, 2):  # loading twice in one process is stable too
        registry = nnplug.Registry()
        assert all(name in registry for name in names)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"plugins": "nnplug_layers"}, r"plugins: expected a list, got str 'nnplug_layers'; write \['nnplug_layers'\]"),
    ({"blocked": "nnplug_layers"}, "blocked: expected a list, got str"),
    ({"plugins": [None]}, "plugins: None is not a plugin"),
    ({"blocked": [3]}, "blocked: expected plugin names"),
])
def test_a_bare_name_or_none_where_a_list_belongs_is_a_config_error(kwargs, message):
    # a bare string used to be read letter by letter: plugins 'n', 'n', 'p', ... all failed
    with pytest.raises(nnplug.ConfigError, match=message):
        nnplug.Registry(**kwargs, autoload=False)


def test_none_for_plugins_or_blocked_means_none():
    registry = nnplug.Registry(None, blocked=None)
    assert "dense" in registry


def test_a_plugin_named_in_the_python_api_that_fails_to_load_raises_naming_it():
    # as `nnplug -p NAME` exits 2: a typo must not surface only at the first registry.get()
    with pytest.raises(nnplug.PluginError, match=r"plugin 'nnplug_no_such_plugin' failed to load: no installed "
                                                 r"plugin .* and no importable module is named 'nnplug_no_such"):
        nnplug.Registry(plugins=["nnplug_no_such_plugin"], autoload=False)
    with pytest.raises(nnplug.PluginError, match="no nnplug_register_layers hook"):
        nnplug.load_registry(plugins=[object()])
    lenient = nnplug.Registry(plugins=["nnplug_no_such_plugin"], autoload=False, strict=False)
    assert [p.status for p in lenient.plugins if p.name == "nnplug_no_such_plugin"] == ["failed"]


def test_an_unknown_type_with_a_look_alike_letter_names_the_letter():
    with pytest.raises(nnplug.PluginError) as info:
        nnplug.load_registry().get("d\u0435nse")  # a Cyrillic 'е'
    assert "did you mean 'dense'?" in str(info.value)
    assert "non-ASCII characters: 'е' (U+0435 CYRILLIC SMALL LETTER IE)" in str(info.value)


def test_a_module_that_exists_but_fails_to_import_keeps_its_own_error(tmp_path, monkeypatch):
    (tmp_path / "nnplug_test_breaks_inside.py").write_text("import nnplug_test_not_there_either\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = nnplug.Registry(plugins=["nnplug_test_breaks_inside"], autoload=False, strict=False)
    assert "No module named 'nnplug_test_not_there_either'" in registry.plugins[-1].error


def test_an_unknown_type_names_failed_plugins_before_the_available_list_and_says_autoload_is_off(monkeypatch):
    monkeypatch.setenv("NNPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = nnplug.Registry(plugins=["nnplug_layers", "nnplug_test_no_such_module"], strict=False)
    message = registry.unknown_type_message("swish")
    failed_at = message.index("plugins that failed to load: plugin 'nnplug_test_no_such_module'")
    assert failed_at < message.index("available:")
    # the type may be in an installed plugin that was not named with -p
    assert "(NNPLUG_DISABLE_PLUGIN_AUTOLOAD='1' is set, so only plugins named with -p NAME load)" in message
