"""examples/plugin, installed as a user would (pip, into a fresh virtual environment that sees
this nnplug): the command line lists it, validates and trains a model file using it, checks
its gradients and includes it in the schema; its three-line test file passes."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment over the system site-packages with nnplug-swish pip-installed."""
    for needed in ("pip", "setuptools"):  # found, not imported: pip's distutils shim must stay unloaded
        if importlib.util.find_spec(needed) is None:
            pytest.skip(f"{needed} is not installed")
    base = tmp_path_factory.mktemp("example_plugin")
    src = base / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    # No pip of its own: the system's pip, seen through the system site-packages, installs into it.
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(base / "venv")
    python = base / "venv" / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--no-input", "-q", str(src)], check=True,
                   capture_output=True, cwd=base)
    return python


def nnplug_cli(python: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "nnplug", *args], capture_output=True, text=True, cwd=cwd)


def test_nnplug_plugins_lists_the_installed_distribution(env):
    result = nnplug_cli(env, "plugins")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "nnplug-swish" in line)
    assert row.split()[:4] == ["swish", "nnplug-swish", "0.1.0", "loaded"]
    assert "swish, channel_scale" in row


def test_a_model_file_using_the_plugin_validates(env):
    result = nnplug_cli(env, "validate", "examples/plugin/swish_mlp.yaml")
    assert result.returncode == 0, result.stderr
    assert "channel_scale" in result.stdout and "valid" in result.stdout


def test_the_model_trains_from_the_command_line(env, tmp_path):
    result = nnplug_cli(env, "train", "examples/plugin/swish_mlp.yaml", "--epochs", "1",
                        "--out", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run").is_dir() and any((tmp_path / "run").iterdir())


def test_a_few_gradient_steps_lower_the_loss(env):
    code = (
        "import numpy as np, nnplug\n"
        "model = nnplug.Model.from_file('examples/plugin/swish_mlp.yaml')\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.standard_normal((16, 1, 8, 8)); t = rng.integers(0, 10, 16)\n"
        "first, _ = model.loss_and_grads(x, t)\n"
        "for _ in range(20):\n"
        "    loss, grads = model.loss_and_grads(x, t)\n"
        "    for node, ps in grads.items():\n"
        "        for k, g in ps.items():\n"
        "            model.params[node][k] = model.params[node][k] - 0.1 * g\n"
        "assert grads['scale']['weight'].shape == (32,)\n"
        "print(first, model.loss_and_grads(x, t)[0])\n"
    )
    result = subprocess.run([str(env), "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    first, last = map(float, result.stdout.split())
    assert last < 0.9 * first


def test_nnplug_gradcheck_checks_the_plugin_layers(env):
    result = nnplug_cli(env, "gradcheck", "swish", "channel_scale", "--examples", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if "nnplug-swish" in line]
    assert len(rows) == 2 and all("passed" in row for row in rows)
    assert "2 types checked, 2 passed, 0 failed; 16 examples" in result.stdout


def test_nnplug_schema_includes_the_plugin_layers(env):
    result = nnplug_cli(env, "schema")
    assert result.returncode == 0, result.stderr
    text = json.dumps(json.loads(result.stdout))
    for needle in ('"swish"', '"channel_scale"', '"beta"'):
        assert needle in text


def test_the_plugins_three_line_test_file_passes(env):
    tests = env.parents[2] / "src" / "tests" / "test_nnplug_swish.py"  # the copy: hypothesis writes beside it
    assert len(tests.read_text().strip().splitlines()) == 3
    (tests.parent / "conftest.py").write_text(  # the author's profile sets the number of examples
        "from hypothesis import settings\n"
        "settings.register_profile('quick', max_examples=10)\n"
        "settings.load_profile('quick')\n"
    )
    result = subprocess.run([str(env), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                            capture_output=True, text=True, cwd=tests.parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
