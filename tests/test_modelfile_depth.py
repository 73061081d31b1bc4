"""Nesting depth of JSON and TOML model files: refused up front, as YAML's is."""
from __future__ import annotations

from pathlib import Path

import pytest

import nnplug
from nnplug.cli import main
from nnplug.modelfile import read_document

# A value nested this deep in a node once reached pydantic's JSON parser and came back as
# "Invalid JSON: recursion limit exceeded at line 1 column C" of text the user never wrote.
DEPTH = 300


def _model_text(kind: str) -> str:
    deep = "[" * DEPTH + "0" + "]" * DEPTH
    if kind == "json":
        return ('{"input": [1, 8, 8], "layers": [{"type": "relu", "extra": DEEP}, {"type": "flatten"}, '
                '{"type": "dense", "units": 10}], "loss": {"type": "softmax_cross_entropy"}}').replace("DEEP", deep)
    return ('input = [1, 8, 8]\nlayers = [{type = "relu", extra = DEEP}, {type = "flatten"}, '
            '{type = "dense", units = 10}]\nloss = {type = "softmax_cross_entropy"}\n').replace("DEEP", deep)


@pytest.mark.parametrize("kind", ["json", "toml", "yaml"])
def test_deeply_nested_value_is_refused_as_too_deep_naming_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    path = tmp_path / f"deep.{kind}"
    path.write_text(_model_text("json" if kind == "yaml" else kind))  # JSON is flow YAML
    assert main(["validate", str(path), "--no-data"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: nested more than 64 levels deep" in err
    assert "Invalid JSON" not in err and "Traceback" not in err


@pytest.mark.parametrize(("name", "prefix", "limit"), [
    ("at.yaml", "a: 1\nb: 2\nc: ", 64), ("at.json", "", 64), ("at.toml", "c = ", 63)])  # a TOML key's table is a level
def test_nesting_up_to_the_limit_is_read_and_one_level_more_is_refused(
        tmp_path: Path, name: str, prefix: str, limit: int) -> None:
    path = tmp_path / name
    path.write_text(prefix + "[" * limit + "]" * limit + "\n")
    read_document(path)  # no error
    path.write_text(prefix + "[" * (limit + 1) + "]" * (limit + 1) + "\n")
    with pytest.raises(nnplug.ConfigError, match="nested more than 64 levels deep") as info:
        read_document(path)
    if name.endswith(".yaml"):  # the scanner knows where: the line of the bracket past the limit
        assert "(line 3)" in str(info.value)
