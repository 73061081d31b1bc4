"""``nnplug validate`` and the summary work from shapes: a large model's declared weights are never drawn."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any, Literal

import pytest
from fakedist import good_plugin_source, install_fake_dist
from faultkit import model_text

import nnplug
from nnplug.cli import main
from nnplug.modelfile import build_model

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
REGISTRY = nnplug.load_registry()


def _wide_mlp(tmp_path: Path) -> Path:
    """26.8 million float64 weights: 214 MB if drawn."""
    path = tmp_path / "wide.yaml"
    path.write_text(model_text({"type": "flatten"}, {"type": "dense", "units": 400_000},
                               input_shape=(1, 8, 8), dtype="float64"))
    return path


def test_validate_prints_the_parameter_counts_without_allocating_the_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _wide_mlp(tmp_path)
    tracemalloc.start()
    try:
        assert main(["validate", str(path)]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines()[2:5]}
    assert rows == {"flatten_0": "0", "dense_1": "26,000,000", "dense_2": "800,002"}
    assert "input (1, 8, 8), dtype float64, 26,800,002 parameters in total" in out
    assert peak < 20_000_000, f"validate traced {peak:,} bytes"


def test_validate_never_calls_init_params_of_a_layer_that_declares_param_shapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(self: Any, in_shape: Any, rng: Any) -> Any:
        raise AssertionError("init_params called by validate")

    monkeypatch.setattr(REGISTRY.get("dense"), "init_params", refuse)
    assert main(["validate", str(_wide_mlp(tmp_path))]) == 0
    assert capsys.readouterr().out.endswith("wide.yaml: valid\n")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_summary_from_shapes_is_the_summary_from_the_weights(example: Path) -> None:
    drawn = build_model(example, REGISTRY)
    counted = build_model(example, REGISTRY, init=False)
    assert counted.params == {}
    assert counted.summary() == drawn.summary()
    assert counted.parameter_counts() == drawn.parameter_counts()
    assert counted.parameter_count() == drawn.parameter_count() > 0


def test_a_layer_without_param_shapes_is_drawn_to_be_counted(
    site: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, modules = site
    undeclared = ("    def output_shape", "    def init_params(self, in_shape, rng):\n"
                  "        return {'w': np.zeros((300, *in_shape))}\n    def output_shape")
    install_fake_dist(root, "bulkydist", "bulky", good_plugin_source("bulky").replace(*undeclared))
    modules.append("bulky")
    path = tmp_path / "model.yaml"
    path.write_text(model_text({"type": "bulky", "name": "suspect"}))
    assert main(["validate", str(path)]) == 0
    rows = {line.split()[0]: line.split()[-1] for line in capsys.readouterr().out.splitlines()[2:4]}
    assert rows == {"suspect": "1,200", "dense_1": "10"}


def test_validate_checks_the_data_the_file_names_as_train_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runkit import blob_data, tiny_model

    model = tiny_model(tmp_path)
    assert main(["validate", str(model)]) == 0
    assert "data: 72 training and 24 validation examples" in capsys.readouterr().out
    # validate used to say "valid" here; train then refused the file
    blob_data(tmp_path / "blobs.npz", classes=5)  # labels 3 and 4 do not fit the 3 logits
    assert main(["validate", str(model)]) == 2
    assert "y does not fit the loss" in capsys.readouterr().err
    (tmp_path / "blobs.npz").unlink()
    assert main(["validate", str(model)]) == 2
    assert "blobs.npz" in capsys.readouterr().err
    assert main(["validate", str(model), "--no-data"]) == 0  # the model alone
    out = capsys.readouterr().out
    assert out.rstrip().endswith("tiny.yaml: valid") and "data:" not in out


def test_every_branchs_shape_error_is_reported_at_once_each_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # two branches that each do not fit: validate used to stop at the first, one run per error
    path = tmp_path / "two.yaml"
    path.write_text("input: [1, 8, 8]\n"
                    "layers:\n"
                    "  - {type: conv2d, name: c1, filters: 2, kernel_size: 9}\n"
                    "  - {type: flatten, name: f1}\n"
                    "  - {type: conv2d, name: c2, filters: 2, kernel_size: 3, inputs: [input]}\n"
                    "  - {type: maxpool2d, name: p2, pool_size: 12}\n"
                    "  - {type: flatten, name: f2}\n"
                    "  - {type: concat, inputs: [f1, f2]}\n"
                    "  - {type: dense, units: 3}\n"
                    "loss: {type: softmax_cross_entropy}\n")
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2  # the nodes after them read shapes that do not exist: not errors of their own
    assert "layers[0] 'c1' (conv2d): conv2d kernel (9, 9) is larger" in lines[0] and lines[0].endswith("(line 3)")
    assert f"{path}: layers[3] 'p2' (maxpool2d)" in lines[1] and lines[1].endswith("(line 6)")


class _BoomConfig(nnplug.LayerConfig):
    type: Literal["boom_in_output_shape"] = "boom_in_output_shape"


class _Boom(nnplug.Layer):
    Config = _BoomConfig

    def output_shape(self, in_shape: Any) -> Any:
        raise RuntimeError("exploded")


def test_a_plugin_breaking_after_a_misfit_is_reported_with_it() -> None:
    # the plugin's error used to replace the shape error found before it
    class Plugin:
        @nnplug.hookimpl
        def nnplug_register_layers(self) -> list[type]:
            return [_Boom]

    registry = nnplug.Registry(plugins=[Plugin(), "nnplug_layers"])
    layers = [{"type": "conv2d", "name": "c1", "filters": 2, "kernel_size": 9},
              {"type": "boom_in_output_shape", "name": "b", "inputs": ["input"]},
              {"type": "flatten", "inputs": ["b"]}, {"type": "dense", "units": 2}]
    with pytest.raises(nnplug.PluginError) as info:
        nnplug.Model.from_config({"input": [1, 8, 8], "layers": layers, "loss": {"type": "softmax_cross_entropy"}},
                                 registry=registry)
    first, second = str(info.value).splitlines()
    assert "'c1' (conv2d): conv2d kernel (9, 9) is larger" in first
    assert "'b' (boom_in_output_shape, plugin 'Plugin'): output_shape raised RuntimeError: exploded" in second
