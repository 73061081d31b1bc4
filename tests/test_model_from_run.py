"""``nnplug.Model.from_run``: the trained model of a run directory, for scripts and notebooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runkit import tiny_model, weights_of

import nnplug
from nnplug.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("run")
    assert main(["train", str(tiny_model(tmp_path, epochs=2)), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    return tmp_path / "run"


def test_from_run_gives_the_trained_weights_and_their_predictions(run: Path) -> None:
    model = nnplug.Model.from_run(run)
    for key, value in weights_of(run).items():
        node, name = key.split("/")
        np.testing.assert_array_equal(model.params[node][name], value)
    untrained = nnplug.Model.from_file(run / "model.json")
    x = np.random.default_rng(0).standard_normal((5, 1, 4, 4))
    assert not np.allclose(model.forward(x), untrained.forward(x))
    np.testing.assert_allclose(model.forward(x), nnplug.Model.from_run(str(run)).forward(x), rtol=0, atol=0)


def test_from_run_takes_a_registry_and_refuses_what_is_not_one(run: Path) -> None:
    assert nnplug.Model.from_run(run, nnplug.load_registry()).spec.name == "tiny"
    with pytest.raises(nnplug.ConfigError, match=r"registry: expected an nnplug\.Registry"):
        nnplug.Model.from_run(run, registry="nnplug")  # type: ignore[arg-type]


def test_from_run_of_a_directory_that_holds_no_run_says_so(tmp_path: Path) -> None:
    with pytest.raises(nnplug.ConfigError, match="not a run directory"):
        nnplug.Model.from_run(tmp_path)
    with pytest.raises(nnplug.ConfigError, match="from_run: expected a path to a run directory, got int"):
        nnplug.Model.from_run(3)  # type: ignore[arg-type]
