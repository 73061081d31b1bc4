"""A type whose plugin is installed but blocked (-p no:NAME) or broken is reported as such,
not as unknown or uninstalled: the user's fix is to unblock or repair it, not to install it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakedist import good_plugin_source, install_fake_dist
from runkit import tiny_model

import nnplug
from nnplug.checkpoint import load_checkpoint
from nnplug.cli import main


def test_an_unknown_type_names_the_plugins_blocked_with_p_no(site):
    root, modules = site
    install_fake_dist(root, "nnplug-shade", "nnplug_test_shade", good_plugin_source("test_shade"))
    modules.append("nnplug_test_shade")
    message = nnplug.Registry(blocked=["nnplug-shade"]).unknown_type_message("test_shade")
    assert "blocked with -p no:NAME: nnplug_test_shade (distribution nnplug-shade)" in message


def test_an_unknown_type_mentions_no_blocked_plugins_when_none_is():
    assert "blocked" not in nnplug.Registry().unknown_type_message("test_nowhere")


@pytest.fixture
def run(tmp_path: Path) -> Path:
    assert main(["train", str(tiny_model(tmp_path, epochs=1)), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    return tmp_path / "run"


def test_a_run_whose_plugin_is_blocked_says_blocked_not_uninstalled(run: Path, capsys):
    with pytest.raises(nnplug.ConfigError) as caught:
        load_checkpoint(run, nnplug.Registry(blocked=["nnplug_layers"]))
    message = str(caught.value)
    assert "not installed" not in message
    assert "dense (from nnplug " in message
    assert "installed, but its plugin 'nnplug_layers' is blocked (-p no:nnplug_layers)" in message
    assert main(["-p", "no:nnplug_layers", "evaluate", str(run)]) == 2
    assert "is blocked (-p no:nnplug_layers)" in capsys.readouterr().err


def test_a_run_whose_plugin_failed_to_load_names_its_error(run: Path, site):
    root, modules = site
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["layer_types"]["test_cracked"] = "nnplug-cracked"
    manifest["plugins"]["nnplug-cracked"] = "3.0"
    (run / "manifest.json").write_text(json.dumps(manifest))
    install_fake_dist(root, "nnplug-cracked", "nnplug_test_cracked", "raise ImportError('no frobnicate')\n",
                      version="3.0")
    modules.append("nnplug_test_cracked")
    with pytest.raises(nnplug.ConfigError, match=r"test_cracked \(from nnplug-cracked 3.0; installed, but its "
                                                 r"plugin 'nnplug_test_cracked' failed to load: .*no frobnicate"):
        load_checkpoint(run, nnplug.Registry())


def test_a_run_with_autoload_off_names_the_p_option_that_loads_its_plugin(run: Path, monkeypatch):
    monkeypatch.setenv("NNPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    with pytest.raises(nnplug.ConfigError) as caught:
        load_checkpoint(run, nnplug.Registry())
    message = str(caught.value)
    assert "not installed" not in message
    assert "dense (from nnplug " in message and "installed, but not loaded: add -p nnplug_layers" in message


GAIN_V1 = good_plugin_source("test_gain").replace(
    'type: Literal["test_gain"] = "test_gain"', 'type: Literal["test_gain"] = "test_gain"\n    gain: float = 2.0')


def test_a_run_a_plugin_upgrade_no_longer_reads_names_both_versions(site, tmp_path: Path):
    import yaml

    root, modules = site
    install_fake_dist(root, "nnplug-gain", "nnplug_test_gain", GAIN_V1, version="1.0")
    modules.append("nnplug_test_gain")
    model = tiny_model(tmp_path, epochs=1)
    description = yaml.safe_load(model.read_text())
    description["layers"].insert(2, {"type": "test_gain", "gain": 3.0})
    model.write_text(yaml.safe_dump(description))
    assert main(["train", str(model), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    # version 2.0 drops the `gain` field the saved model file holds
    for old in root.glob("nnplug_gain-1.0.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    from fakedist import forget_modules
    forget_modules("nnplug_test_gain")
    (root / "nnplug_test_gain.py").unlink()
    import importlib
    import shutil
    shutil.rmtree(root / "__pycache__", ignore_errors=True)
    importlib.invalidate_caches()
    install_fake_dist(root, "nnplug-gain", "nnplug_test_gain", good_plugin_source("test_gain"), version="2.0")
    with pytest.raises(nnplug.ConfigError, match=r"gain: unknown field") as caught:
        load_checkpoint(tmp_path / "run", nnplug.Registry())
    assert "the run was saved with nnplug-gain 1.0; nnplug-gain 2.0 is installed" in str(caught.value.problems)


@pytest.mark.parametrize("named_by", ["cracked", "nnplug-cracked-too", "nnplug_test_cracked_too"])
def test_a_broken_plugin_asked_for_by_any_of_its_names_is_an_error_naming_it(site, named_by: str):
    # -p and plugins=[...] take the entry point's, the distribution's or the module's name alike
    root, modules = site
    install_fake_dist(root, "nnplug-cracked-too", "nnplug_test_cracked_too", "raise ImportError('no frobnicate')\n",
                      entry_name="cracked")
    modules.append("nnplug_test_cracked_too")
    with pytest.raises(nnplug.PluginError, match=r"plugin 'cracked' failed to load: import failed: .*no frobnicate"):
        nnplug.Registry(plugins=[named_by])
