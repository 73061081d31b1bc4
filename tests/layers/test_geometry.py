"""Shared window geometry: the padded input conv2d and the poolings allocate is size-checked
when the model is built, not found out by a MemoryError in training."""

from __future__ import annotations

from pathlib import Path

import pytest

import nnplug
from nnplug.build import MAX_ACTIVATION
from nnplug.cli import main


def one_layer(layer: dict) -> dict:
    return {"input": [1, 8, 8], "layers": [layer, {"type": "flatten"}, {"type": "dense", "units": 2}],
            "loss": {"type": "softmax_cross_entropy"}}


def test_the_padded_input_cap_is_the_executors_cap_on_outputs():
    from nnplug_layers.geometry import MAX_PADDED_VALUES

    assert MAX_PADDED_VALUES == MAX_ACTIVATION


@pytest.mark.parametrize("layer", [
    # PyTorch's rule (padding at most half the window) holds in each: the output stays small
    # (9×9, 1×1, 8×8, 2×2) while the padded input has 3.6e9 cells per example.
    {"type": "maxpool2d", "name": "pool", "pool_size": 60000, "padding": 30000, "stride": 1},
    {"type": "avgpool2d", "name": "pool", "pool_size": 60000, "padding": 30000},
    {"type": "maxpool2d", "name": "pool", "pool_size": 60000, "padding": "same", "stride": 1},
    {"type": "conv2d", "name": "pool", "filters": 1, "kernel_size": 1, "stride": 60000, "padding": 30000},
], ids=["maxpool2d", "avgpool2d", "same", "conv2d-strided"])
def test_a_huge_padded_input_is_refused_at_build_naming_the_node(layer):
    pattern = (r"layers\[0\] 'pool' \(\w+\): \w+ (window|kernel) \(\d+, \d+\) with padding .* pads the input "
               r"\(1, 8, 8\) to \(1, 600\d\d, 600\d\d\): 3,60\d,\d{3},\d{3} values per example, "
               r"more than 2,147,483,648")
    with pytest.raises(nnplug.ShapeError, match=pattern):
        nnplug.Model.from_config(one_layer(layer))


def test_validate_refuses_huge_pooling_padding_naming_file_and_node(tmp_path: Path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text("input: [1, 8, 8]\n"
                    "layers:\n"
                    "  - {type: maxpool2d, name: pool, pool_size: 60000, padding: 30000, stride: 1}\n"
                    "  - {type: flatten}\n"
                    "  - {type: dense, units: 10}\n"
                    "loss: {type: softmax_cross_entropy}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: layers[0] 'pool' (maxpool2d): maxpool2d window (60000, 60000)" in err
    assert "(line 3)" in err and "Traceback" not in err


def test_a_node_after_a_huge_output_leaves_the_blame_on_that_output():
    config = one_layer({"type": "conv2d", "filters": 1, "kernel_size": 2, "padding": 10**5})
    config["layers"].insert(1, {"type": "maxpool2d", "pool_size": 3, "padding": 1})
    with pytest.raises(nnplug.ShapeError, match=r"layers\[0\] 'conv2d_0' \(conv2d\): its output"):
        nnplug.Model.from_config(config)


@pytest.mark.parametrize(("layer", "shape"), [
    ({"type": "maxpool2d", "pool_size": 3, "padding": 1, "stride": 1}, (1, 8, 8)),
    ({"type": "avgpool2d", "pool_size": 9, "padding": "same"}, (1, 1, 1)),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": "same"}, (2, 8, 8)),
])
def test_ordinary_padding_is_still_accepted(layer, shape):
    assert nnplug.Model.from_config(one_layer(layer)).node(f"{layer['type']}_0").out_shape == shape
