"""Small model files and datasets shared by the training, checkpoint, data and CLI tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml


def blob_data(path: Path, n: int = 96, classes: int = 3, seed: int = 0, **extra: Any) -> Path:
    """A separable 3-class problem as a .npz: x (n, 1, 4, 4) float64, y (n,) int64."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centers = rng.normal(size=(classes, 1, 4, 4)) * 2
    x = centers[y] + rng.normal(size=(n, 1, 4, 4)) * 0.5
    np.savez(path, x=x, y=y, **extra)
    return path


def tiny_model(tmp_path: Path, *, epochs: int = 3, batch_size: int = 16, optimizer: dict[str, Any] | None = None,
               data: dict[str, Any] | None = None, name: str = "tiny.yaml", seed: int = 0,
               dtype: str = "float64") -> Path:
    """A dense model on ``blob_data`` (written next to it as ``blobs.npz``)."""
    if data is None:
        blob_data(tmp_path / "blobs.npz")
        data = {"source": "npz", "path": "blobs.npz", "validation": 0.25}
    description = {
        "name": "tiny",
        "input": [1, 4, 4],
        "dtype": dtype,
        "seed": seed,
        "layers": [{"type": "flatten"}, {"type": "dense", "name": "hidden", "units": 8},
                   {"type": "relu"}, {"type": "dense", "name": "logits", "units": 3}],
        "loss": {"type": "softmax_cross_entropy"},
        "data": data,
        "train": {"epochs": epochs, "batch_size": batch_size,
                  "optimizer": optimizer or {"type": "adam", "lr": 0.01}},
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(description, sort_keys=False))
    return path


def weights_of(run_dir: Path) -> dict[str, np.ndarray]:
    """The weights file a run's manifest names, read without pickles."""
    import json

    manifest = json.loads((run_dir / "manifest.json").read_text())
    with np.load(run_dir / manifest["weights"]["file"], allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
