"""A key given twice is named with the path of its object in the notation of every other message
(``layers[1]``, ``train -> optimizer``), whether the file is YAML or JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

import nnplug
from nnplug.modelfile import read_document

NODE_TWICE = {
    "m.yaml": "input: [4]\nlayers:\n  - {type: relu}\n  - {type: dense, units: 2, units: 3}\nloss: {type: mse}\n",
    "m.json": '{"input": [4], "layers": [{"type": "relu"}, {"type": "dense", "units": 2, "units": 3}], '
              '"loss": {"type": "mse"}}',
}
SECTION_TWICE = {
    "m.yaml": "input: [4]\nlayers: [{type: relu}]\nloss: {type: mse}\ntrain:\n  optimizer: {lr: 0.1, lr: 0.2}\n",
    "m.json": '{"input": [4], "layers": [{"type": "relu"}], "loss": {"type": "mse"}, '
              '"train": {"optimizer": {"lr": 0.1, "lr": 0.2}}}',
}


@pytest.mark.parametrize("name", sorted(NODE_TWICE))
def test_a_duplicate_key_in_a_node_is_named_by_the_nodes_index_in_brackets(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(NODE_TWICE[name])
    with pytest.raises(nnplug.ConfigError) as info:
        read_document(path)
    assert "layers[1]" in str(info.value) and "duplicate key 'units'" in str(info.value)


@pytest.mark.parametrize("name", sorted(SECTION_TWICE))
def test_a_duplicate_key_in_a_nested_section_is_named_by_its_arrowed_path(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(SECTION_TWICE[name])
    with pytest.raises(nnplug.ConfigError) as info:
        read_document(path)
    assert "train -> optimizer" in str(info.value) and "duplicate key 'lr'" in str(info.value)


def test_a_toml_key_given_twice_is_shown_with_the_line_that_repeats_it(tmp_path: Path) -> None:
    # tomllib says only "Cannot overwrite a value (at line 8, column 10)": the line names the key
    path = tmp_path / "m.toml"
    path.write_text('input = [4]\nloss = {type = "mse"}\n[[layers]]\ntype = "relu"\n[[layers]]\n'
                    'type = "dense"\nunits = 2\nunits = 3\n')
    with pytest.raises(nnplug.ConfigError) as info:
        read_document(path)
    assert "line 8" in str(info.value) and "units = 3" in str(info.value)
