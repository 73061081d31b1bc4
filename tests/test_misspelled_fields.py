"""A misspelled key is told the name it nearly spells; an unknown one the names there are."""

from __future__ import annotations

from pathlib import Path

import pytest

import nnplug
from nnplug.modelfile import load_model_file

REGISTRY = nnplug.load_registry()
DENSE = REGISTRY.get("dense")


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(nnplug.ConfigError) as info:
        load_model_file(path, REGISTRY)
    return [p.removeprefix(f"{path}: ") for p in info.value.problems]


MLP = ("input: [1, 8, 8]\nlayers:\n  - {type: flatten}\n  - {type: dense, units: 10}\n"
       "loss: {type: softmax_cross_entropy}\n")


@pytest.mark.skipif("conv2d" not in REGISTRY, reason="conv2d is not installed")
def test_a_misspelled_node_field_is_told_the_field_and_the_field_left_out_is_told_the_misspelling(
    tmp_path: Path,
) -> None:
    problems = _problems(tmp_path, MLP.replace("{type: flatten}", "{type: conv2d, filters: 4, kernal_size: 3}"))
    assert sorted(problems) == [  # (pydantic's order of the two varies between its versions)
        "layers[0] (conv2d) -> kernal_size: unknown field; did you mean 'kernel_size'? (got 3) (line 3)",
        "layers[0] (conv2d) -> kernel_size: Field required; is 'kernal_size' a misspelling of it? "
        "(got {'type': 'conv2d', 'filters': 4, 'kernal_size': 3}) (line 3)",
    ]


@pytest.mark.parametrize(("node", "section", "line"), [
    ("{type: dense, unit: 10}", "layers[1] (dense) -> unit: unknown field; did you mean 'units'?", 4),
    ("{type: dense, units: 10, input: [flatten_0]}", "layers[1] (dense) -> input: unknown field; "
     "did you mean 'inputs'?", 4),
])
def test_a_misspelled_field_of_a_node_suggests_the_field(tmp_path: Path, node: str, section: str, line: int) -> None:
    problems = _problems(tmp_path, MLP.replace("{type: dense, units: 10}", node))
    assert any(p.startswith(section) and p.endswith(f"(line {line})") for p in problems), problems


def test_a_misspelled_field_of_the_loss_train_and_optimizer_suggests_the_field(tmp_path: Path) -> None:
    text = MLP.replace("softmax_cross_entropy}", "softmax_cross_entropy, input: [dense_1]}") + \
        "train: {optimiser: {type: adam}, epoch: 3}\n" + "data: {source: npz, pth: x.npz}\n"
    problems = _problems(tmp_path, text)
    assert [p.split(" (got")[0] for p in problems] == [
        "loss (softmax_cross_entropy) -> input: unknown field; did you mean 'inputs'?",
        "data -> pth: unknown field; did you mean 'path'?",
        "train -> optimiser: unknown field; did you mean 'optimizer'?",
        "train -> epoch: unknown field; did you mean 'epochs'?",
    ]
    nested = _problems(tmp_path, MLP + "train: {optimizer: {type: sgd, lrr: 0.1}}\n")
    assert nested == ["train -> optimizer.lrr: unknown field; did you mean 'lr'? (got 0.1) (line 6)"]


def test_a_misspelled_top_level_key_suggests_the_section(tmp_path: Path) -> None:
    problems = _problems(tmp_path, MLP.replace("layers:", "layres:"))
    assert problems[0] == ("layres: unknown section; did you mean 'layers'? expected one of name, input, dtype, "
                           "seed, layers, loss, data, train (line 2)")
    # beside the section itself, the key is not its misspelling
    problems = _problems(tmp_path, MLP + "layres: []\n")
    assert problems == ["layres: unknown section; expected one of name, input, dtype, seed, layers, loss, data, "
                        "train (line 6)"]


def test_an_unknown_field_near_no_name_lists_the_fields_there_are() -> None:
    with pytest.raises(nnplug.ConfigError) as info:
        nnplug.parse_config(DENSE.Config, {"type": "dense", "units": 3, "zzz": 1}, "layers[0] (dense)")
    assert info.value.problems == [
        "layers[0] (dense) -> zzz: unknown field; the fields are type, name, inputs, units, bias, "
        "kernel_initializer (got 1)"]


def test_a_field_already_given_still_names_the_nearest_but_the_one_left_out_wins() -> None:
    with pytest.raises(nnplug.ConfigError) as info:
        nnplug.parse_config(DENSE.Config, {"type": "dense", "unitss": 3, "bais": True})
    problems = info.value.problems  # (pydantic's order varies between its versions)
    assert "DenseConfig -> unitss: unknown field; did you mean 'units'? (got 3)" in problems
    assert "DenseConfig -> bais: unknown field; did you mean 'bias'? (got True)" in problems
    assert any(p.startswith("DenseConfig -> units: Field required; is 'unitss' a misspelling of it?") for p in problems)
    assert len(problems) == 3


def test_a_field_the_node_already_has_is_not_suggested_for_a_near_miss() -> None:
    # `units: 3, unitss: 4` is a stray key beside units, not its misspelling
    with pytest.raises(nnplug.ConfigError) as info:
        nnplug.parse_config(DENSE.Config, {"type": "dense", "units": 3, "unitss": 4})
    assert info.value.problems == [
        "DenseConfig -> unitss: unknown field; the fields are type, name, inputs, units, bias, "
        "kernel_initializer (got 4)"]


def test_a_loss_reading_a_misspelled_node_is_told_the_node_it_nearly_names() -> None:
    config = {"input": [4], "layers": [{"type": "dense", "units": 3, "name": "logits"}],
              "loss": {"type": "softmax_cross_entropy", "inputs": ["logit"]}}
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.Model.from_config(config, REGISTRY)
    assert err.value.problems == [
        "loss (softmax_cross_entropy) -> inputs: unknown node 'logit' (did you mean 'logits'?); nodes: logits"]


def test_a_loss_reading_an_unknown_node_of_a_large_model_lists_a_bounded_number_of_nodes() -> None:
    layers = [{"type": "relu", "name": f"r{i}"} for i in range(300)]
    config = {"input": [4], "layers": layers, "loss": {"type": "mse", "inputs": ["nowhere"]}}
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.Model.from_config(config, REGISTRY)
    (problem,) = err.value.problems
    assert problem.startswith("loss (mse) -> inputs: unknown node 'nowhere'; nodes: r0, r1,")
    assert problem.endswith("... (300 in all)") and "r299" not in problem


def test_a_loss_reading_two_nodes_is_told_it_reads_one() -> None:
    layers = [{"type": "dense", "units": 3, "name": "a"}, {"type": "dense", "units": 3, "name": "b"}]
    config = {"input": [4], "layers": layers, "loss": {"type": "mse", "inputs": ["a", "b"]}}
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.Model.from_config(config, REGISTRY)
    assert err.value.problems == ["loss (mse) -> inputs: the loss reads one node, such as [b], got ['a', 'b']"]
