"""A control character in a YAML model file is located by line and column, like any YAML error."""
from __future__ import annotations

from pathlib import Path

import pytest

import nnplug
from nnplug.modelfile import read_document


def test_control_character_is_reported_at_its_line_and_column_not_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text('input: [1, 8, 8]\nlayers:\n  - {type: dense, units: 10, name: "a\x16b"}\n')
    with pytest.raises(nnplug.ConfigError) as err:
        read_document(path)
    message = str(err.value)
    assert message.startswith(f"{path}: invalid YAML")
    assert "#x0016 at line 3, column 38" in message
    assert "offset" not in message
