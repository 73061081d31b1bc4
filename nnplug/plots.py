"""Training curves of a run, drawn with matplotlib (the ``examples`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curves(run_dir: Path, history: list[dict[str, Any]]) -> Path:
    """Write ``curves.png``: loss and accuracy per epoch. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [m["train_loss"] for m in history], label="train")
    if any(m.get("val_loss") is not None for m in history):
        ax_loss.plot(epochs, [m["val_loss"] for m in history], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    for key, label in (("train_accuracy", "train"), ("val_accuracy", "validation")):
        if any(m.get(key) is not None for m in history):
            ax_acc.plot(epochs, [m[key] for m in history], label=label)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
