"""Reading a model file at its limits: a file growing past the size limit while read, a number
no parser can hold, and the weights ``build_model(init=False)`` still draws for a small model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import nnplug
from nnplug import modelfile
from nnplug.modelfile import build_model, read_document


def test_a_file_that_grows_past_the_size_limit_while_read_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a file still being written (or a /proc-like file that reports size 0) is read past its
    # stat size: what is read is held to the limit too
    monkeypatch.setattr(modelfile, "MAX_FILE_BYTES", 100)
    path = tmp_path / "m.json"
    path.write_text("{" + " " * 120 + "}")
    real_stat = Path.stat

    def small_stat(self: Path, **kwargs: bool) -> os.stat_result:
        info = real_stat(self, **kwargs)
        if self != path:
            return info
        fields = list(info)
        fields[6] = 10  # st_size, as stat said before the file grew
        return os.stat_result(fields)

    monkeypatch.setattr(Path, "stat", small_stat)
    with pytest.raises(nnplug.ConfigError, match="more than the 100 bytes a model file may hold"):
        read_document(path)


@pytest.mark.parametrize(("name", "text"), [("m.json", '{"seed": ' + "1" * 5000 + "}"),
                                            ("m.yaml", "seed: " + "1" * 5000 + "\n"),
                                            ("m.toml", "seed = " + "1" * 5000 + "\n")])
def test_an_integer_too_long_to_read_is_a_config_error_naming_the_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(nnplug.ConfigError, match=rf"^{path}: a value cannot be read: Exceeds the limit"):
        read_document(path)


MLP = "input: [3]\nlayers:\n  - {type: dense, units: 2}\nloss: {type: mse}\n"  # 3 * 2 + 2 = 8 parameters


@pytest.mark.parametrize(("draw_up_to", "drawn"), [(7, False), (8, True)])
def test_a_model_built_without_init_draws_its_weights_when_it_has_at_most_draw_up_to(
        tmp_path: Path, draw_up_to: int, drawn: bool) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MLP)
    model = build_model(path, nnplug.load_registry(), init=False, draw_up_to=draw_up_to)
    assert model.parameter_count() == 8
    assert bool(model.params.get("dense_0")) is drawn


def test_a_json_syntax_error_is_told_once_with_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"a": 1,\n "b": [1, 2,]}')
    with pytest.raises(nnplug.ConfigError) as info:
        read_document(path)
    assert str(info.value) == f"{path}: JSON syntax error (line 2, column 13): Expecting value"


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_an_empty_yaml_file_is_told_it_is_empty(tmp_path: Path, text: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(nnplug.ConfigError) as info:
        read_document(path)
    assert str(info.value) == f"{path}: the file is empty"
