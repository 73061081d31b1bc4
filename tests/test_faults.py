"""Issue 8 under faults, as a user meets them through ``nnplug``: broken plugins named with
distribution, version and error; layers misbehaving during training named with node, type
and plugin; bad data refused before a weight changes; the parameter budget and random model
documents within fixed time and memory; losses finite at extreme logits.

Hostile command lines (empty, binary, tampered files...) are in ``test_faults_cli.py``.
"""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import yaml
from fakedist import good_plugin_source, install_fake_dist
from faultkit import (
    BUILD_FAULTS,
    PLUGIN_FAULT_KINDS,
    RUNTIME_FAULTS,
    Outcome,
    build_bounded,
    build_fault_source,
    documents,
    dump,
    install_plugin_fault,
    model_text,
    runtime_fault_source,
)
from hypothesis import given
from runkit import tiny_model, weights_of

import nnplug
from nnplug import build
from nnplug.checkpoint import load_checkpoint
from nnplug.cli import main


def _clean_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("nnplug: error: "), err
    return err


# -- plugins ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PLUGIN_FAULT_KINDS)
def test_failed_plugin_is_named_in_the_listing_and_where_its_type_is_used(
    site: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    root, modules = site
    fault = install_plugin_fault(root, kind)
    modules += fault.modules

    assert main(["plugins"]) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if line.startswith(fault.module + " "))
    assert row.split()[1:4] == [fault.dist, fault.version, "failed"]
    errors = listing.split("\nerrors:\n")[1]
    assert f"{fault.module} (distribution {fault.dist} {fault.version}): " in errors
    assert fault.phrase in errors

    uses_it = tmp_path / "uses_it.yaml"
    uses_it.write_text(model_text({"type": fault.type_name}))
    assert main(["validate", str(uses_it)]) == 2
    warning, err = _warning_then(capsys)
    assert err.startswith("nnplug: error: ")
    assert f"distribution {fault.dist} {fault.version}" in err and fault.phrase in err

    healthy = tmp_path / "healthy.yaml"  # the same registry still serves the healthy plugins
    healthy.write_text(model_text(*({"type": t} for t in fault.healthy_types)))
    assert main(["validate", str(healthy)]) == 0
    warning, rest = _warning_then(capsys)  # ...and says, once, that one plugin is broken
    assert rest == "" and f"distribution {fault.dist} {fault.version} (plugin '{fault.module}') failed" in warning
    assert f"-p no:{fault.module}" in warning
    assert main(["-p", f"no:{fault.module}", "validate", str(healthy)]) == 0
    assert capsys.readouterr().err == ""


def _warning_then(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """A command's one warning line about a failed plugin, and the rest of its stderr."""
    warning, _, rest = capsys.readouterr().err.partition("\n")
    assert warning.startswith("nnplug: warning: ") and "Traceback" not in rest, warning + rest
    return warning, rest


@pytest.mark.parametrize("kind", sorted(BUILD_FAULTS))
def test_layer_breaking_while_the_model_is_built_is_named_with_node_and_plugin(
    site: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    root, modules = site
    type_name, module = f"fragile_{kind}", f"fragile_{kind}"
    install_fake_dist(root, f"fragiledist_{kind}", module, build_fault_source(kind, type_name))
    modules.append(module)
    model_file = tmp_path / "model.yaml"
    node = {"type": type_name, "name": "suspect", **({"k": 2} if "validator" in kind else {})}
    model_file.write_text(model_text(node))
    # (a small model's weights are drawn by validate too: a broken init_params shows there)
    assert main(["validate", str(model_file)]) == 2
    err = _clean_error(capsys)
    assert ("'suspect'" in err or "layers[0]" in err) and type_name in err and BUILD_FAULTS[kind][2] in err
    if "validator" not in kind:  # named where the file holds it, the way a shape error is
        assert err.startswith(f"nnplug: error: {model_file}: layers[0] 'suspect' ({type_name}, plugin "
                              f"fragiledist_{kind}): ") and err.rstrip().endswith("(line 4)"), err
    assert f"fragiledist_{kind}" in err or f"{module}." in err  # the plugin, by distribution or module


@pytest.mark.parametrize("kind", sorted(RUNTIME_FAULTS))
def test_layer_misbehaving_during_train_is_named_with_node_type_and_plugin(
    site: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    root, modules = site
    type_name, module = f"suspect_{kind}", f"plugin_{kind}"
    install_fake_dist(root, f"dist_{kind}", module, runtime_fault_source(kind, type_name), version="0.7")
    modules.append(module)
    model_file = tiny_model(tmp_path, dtype="float32", epochs=1)
    description = yaml.safe_load(model_file.read_text())
    description["layers"].insert(1, {"type": type_name, "name": "suspect"})
    model_file.write_text(yaml.safe_dump(description))

    assert main(["train", str(model_file), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = _clean_error(capsys)
    assert f"node 'suspect' ({type_name}, plugin dist_{kind})" in err
    assert RUNTIME_FAULTS[kind][2] in err
    # ...and says where training stands and how to go on
    assert f"at epoch 1, batch 1; the last good checkpoint (after 0 epoch(s)) is in {tmp_path / 'run'}" in err
    assert f"nnplug train --resume {shlex.quote(str(tmp_path / 'run'))}` once fixed" in err
    ckpt = load_checkpoint(tmp_path / "run", nnplug.load_registry())  # the initial checkpoint stays
    assert ckpt.progress["epoch"] == 0 and ckpt.optim_scalars["step"] == 0


# -- data ------------------------------------------------------------------------------

X = np.random.default_rng(0).normal(size=(96, 1, 4, 4))
Y = np.arange(96) % 3
BAD_DATA: dict[str, tuple[dict[str, Any], str]] = {
    "nan": ({"x": np.where(X > 2, np.nan, X)}, "NaN or infinite"),
    "inf": ({"x": np.where(X < -2, -np.inf, X)}, "NaN or infinite"),
    "nan_in_validation": ({"x_val": np.full((4, 1, 4, 4), np.nan), "y_val": Y[:4]}, "NaN or infinite"),
    "label_out_of_range": ({"y": np.where(Y == 2, 3, Y)}, "label 3 is outside the 3 classes"),
    "negative_label": ({"y": np.where(Y == 2, -1, Y)}, "label -1 is outside"),
    "object": ({"x": X.astype(object)}, "without unpickling"),
    "strings": ({"x": X.astype(str)}, "(string)"),
    "complex": ({"x": X + 1j}, "(complex)"),
    "overflows_float32": ({"x": X * 1e300}, "overflows float32"),
}


def _write_data(path: Path, problem: str) -> None:
    arrays: dict[str, Any] = {"x": X, "y": Y, **BAD_DATA[problem][0]}
    np.savez(path, **arrays)


def _files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())}


@pytest.mark.parametrize("problem", sorted(BAD_DATA))
def test_bad_data_is_refused_before_a_weight_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    model_file = tiny_model(tmp_path, epochs=1, dtype="float32")
    run_dir = tmp_path / "run"
    assert main(["train", str(model_file), "--out", str(run_dir), "--quiet"]) == 0
    saved, weights = _files(run_dir), weights_of(run_dir)
    _write_data(tmp_path / "blobs.npz", problem)  # the data changes under the saved run

    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--quiet"]) == 2
    err = _clean_error(capsys)
    assert BAD_DATA[problem][1] in err and str(tmp_path / "blobs.npz") in err
    assert _files(run_dir) == saved  # manifest, weights, optimizer state, metrics: all as they were
    assert all(np.array_equal(w, weights_of(run_dir)[k]) for k, w in weights.items())

    assert main(["train", str(model_file), "--out", str(tmp_path / "fresh"), "--quiet"]) == 2
    assert BAD_DATA[problem][1] in _clean_error(capsys)
    assert not (tmp_path / "fresh").exists()  # refused before a run directory existed


# -- model files: the parameter budget and random documents -----------------------------


@pytest.mark.parametrize(("layers", "input_shape", "count"), [
    # conv2d: F*3*3*3 + F weights, then dense(2) on F*6*6 features
    ([{"type": "conv2d", "filters": 10**9, "kernel_size": 3}, {"type": "flatten"}], (3, 8, 8),
     10**9 * 28 + 2 * 10**9 * 36 + 2),
    ([{"type": "dense", "units": 10**12}], (4,), 10**12 * 5 + 2 * 10**12 + 2),
    ([{"type": "dense", "units": 2**63}], (1,), 2 * 2**63 + 2 * 2**63 + 2),  # past int64
    ([{"type": "conv2d", "filters": 2, "kernel_size": 10**5, "padding": "same"}, {"type": "flatten"}],
     (1, 8, 8), 2 * 10**10 + 2 + 2 * 2 * 64 + 2),
])
def test_huge_layer_is_refused_before_allocation_with_the_parameter_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layers: list[dict[str, Any]],
    input_shape: tuple[int, ...], count: int,
) -> None:
    registry = nnplug.load_registry()
    if any(layer["type"] not in registry for layer in layers):
        pytest.skip("conv2d is not installed")
    path = tmp_path / "huge.yaml"
    path.write_text(model_text(*layers, input_shape=input_shape))
    outcome = build_bounded(path, registry)
    assert outcome.kind == "ShapeError" and f"{count:,} parameters" in outcome.message
    assert outcome.peak_bytes < 4_000_000  # refused from the shapes alone, no weight allocated
    assert main(["validate", str(path)]) == 2
    assert f"{count:,} parameters, more than the budget" in _clean_error(capsys)


_UNDECLARED_INIT = ("    def output_shape", "    def init_params(self, in_shape, rng):\n"
                    "        return {'w': np.zeros((300, *in_shape))}\n    def output_shape")


def test_parameters_a_plugin_does_not_declare_count_against_the_budget_as_they_are_drawn(
    site: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, modules = site
    install_fake_dist(root, "bulkydist", "bulky", good_plugin_source("bulky").replace(*_UNDECLARED_INIT))
    modules.append("bulky")
    monkeypatch.setattr(build, "MAX_PARAMETERS", 1000)  # bulky draws 300 * 4 = 1200, no param_shapes
    path = tmp_path / "model.yaml"
    path.write_text(model_text({"type": "bulky", "name": "suspect"}))
    assert main(["validate", str(path)]) == 2
    err = _clean_error(capsys)
    assert f"{path}: layers[0] 'suspect' (bulky): the model has 1,200 parameters once this node's init_params" in err
    # a declared layer over the budget is refused from shapes, counting the undeclared one as "at least"
    path.write_text(model_text({"type": "bulky"}, {"type": "dense", "units": 300}))
    assert main(["validate", str(path)]) == 2
    assert "at least 2,102 parameters (1 node(s) declare no param_shapes)" in _clean_error(capsys)


FUZZ_BUDGET = 200_000  # parameters, patched in so that a fuzzed model stays small
FUZZ_SECONDS = 5.0
FUZZ_BYTES = 64_000_000  # the budget's weights in float64, a few copies, and the parsers


@given(case=documents())
def test_random_documents_give_a_model_or_a_clean_error_in_bounded_time_and_memory(
    case: tuple[Any, str],
) -> None:
    document, fmt = case
    text = dump(document, fmt)
    if text is None:
        return
    registry = _fuzz_registry()
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(build, "MAX_PARAMETERS", FUZZ_BUDGET):
        path = Path(tmp) / f"fuzz.{fmt}"
        path.write_text(text)
        outcome: Outcome = build_bounded(path, registry)
    assert outcome.kind == "model" or outcome.message.strip()
    assert outcome.seconds < FUZZ_SECONDS, outcome
    assert outcome.peak_bytes < FUZZ_BYTES, outcome


_REGISTRY: list[nnplug.Registry] = []


def _fuzz_registry() -> nnplug.Registry:
    if not _REGISTRY:
        _REGISTRY.append(nnplug.load_registry())
    return _REGISTRY[0]


# -- numerics ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_and_sigmoid_stay_finite_at_extreme_logits(dtype: type) -> None:
    registry = nnplug.load_registry()
    loss_cls, sigmoid_cls = registry.get("softmax_cross_entropy"), registry.get("sigmoid")
    loss = loss_cls(loss_cls.Config())
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    for target in (np.array([1, 2, 2]), np.eye(3, dtype=dtype)[[1, 2, 2]]):
        value, cache = loss.forward(z, target)
        grad = loss.backward(cache)
        expected = (2e4 + np.log(3) + 2e4 + np.log(2)) / 3  # -log softmax of each labelled logit
        assert np.isfinite(value) and value == pytest.approx(expected, rel=1e-5)
        assert np.isfinite(grad).all() and grad.dtype == dtype
    sigmoid = sigmoid_cls(sigmoid_cls.Config())
    x = np.array([[-1e4, 1e4, 0.0, -745.0, 745.0]], dtype=dtype)
    y, cache = sigmoid.forward({}, x, training=True)
    dx, _ = sigmoid.backward({}, cache, np.ones_like(x))
    assert np.isfinite(y).all() and np.isfinite(dx).all() and y.dtype == dx.dtype == dtype
    np.testing.assert_allclose(y[0, :3], [0.0, 1.0, 0.5])
    np.testing.assert_allclose(dx[0, :3], [0.0, 0.0, 0.25])


def test_the_untouched_arrays_train(tmp_path: Path) -> None:
    """The control for the data refusals above: X and Y themselves are accepted."""
    model_file = tiny_model(tmp_path, epochs=1, dtype="float32")
    np.savez(tmp_path / "blobs.npz", x=X, y=Y)
    assert main(["train", str(model_file), "--out", str(tmp_path / "run"), "--quiet"]) == 0
