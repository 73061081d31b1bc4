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


CASES = [(text, "layers[1]", "units", name) for name, text in NODE_TWICE.items()] + \
        [(text, "train -> optimizer", "lr", name) for name, text in SECTION_TWICE.items()]


@pytest.mark.parametrize(("text", "where", "key", "name"), CASES, ids=[f"{w}-{n}" for _, w, _, n in CASES])
def test_a_duplicate_key_is_named_by_its_path_as_every_message_writes_it(
    tmp_path: Path, text: str, where: str, key: str, name: str
) -> None:
    # a node by its index in brackets, a nested section by its arrowed path, in every format
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(nnplug.ConfigError) as info:
        read_document(path)
    assert where in str(info.value) and f"duplicate key '{key}'" in str(info.value)


def test_a_toml_key_given_twice_is_shown_with_the_line_that_repeats_it(tmp_path: Path) -> None:
    # tomllib says only "Cannot overwrite a value (at line 8, column 10)": the line names the key
    path = tmp_path / "m.toml"
    path.write_text('input = [4]\nloss = {type = "mse"}\n[[layers]]\ntype = "relu"\n[[layers]]\n'
                    'type = "dense"\nunits = 2\nunits = 3\n')
    with pytest.raises(nnplug.ConfigError) as info:
        read_document(path)
    assert "line 8" in str(info.value) and "units = 3" in str(info.value)


def test_yaml_merge_keys_are_not_duplicate_keys(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: *a\n  <<: *b\n")
    assert read_document(path)[0]["c"] == {"x": 1, "y": 2}


def test_a_yaml_key_given_three_times_points_each_repeat_at_the_first(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("input: [4]\ntrain:\n  epochs: 1\n  epochs: 2\n  epochs: 3\n")
    with pytest.raises(nnplug.ConfigError) as info:
        read_document(path)
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [
        "duplicate key 'epochs' in train (line 4); first given on line 3",
        "duplicate key 'epochs' in train (line 5); first given on line 3"]
