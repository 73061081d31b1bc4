"""Training that can no longer move: optimizer state that overflowed is named, never saved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runkit import blob_data, tiny_model, weights_of

from nnplug.cli import main


def test_adam_state_overflowed_by_huge_gradients_stops_the_run_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # finite float32 inputs of 1e30 give gradients whose squares overflow Adam's v: m / √v is
    # then 0 and the weights would never move again, epoch after epoch, with exit status 0
    blob_data(tmp_path / "blobs.npz")
    with np.load(tmp_path / "blobs.npz") as f:
        np.savez(tmp_path / "huge.npz", x=(f["x"] * 1e30).astype(np.float32), y=f["y"])
    model_file = tiny_model(tmp_path, epochs=3, batch_size=1000, dtype="float32",
                            data={"source": "npz", "path": "huge.npz", "validation": 0.25})
    status = main(["train", str(model_file), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert status != 0
    assert "the optimizer's v for w of node 'hidden' (dense, plugin nnplug) is not finite" in err
    assert "too large for float32" in err and "the weights were not saved" in err
    assert "last good checkpoint (after 0 epoch(s))" in err
    assert all(np.isfinite(w).all() for w in weights_of(tmp_path / "run").values())
