"""The epoch loop: each epoch's shuffle (from the seed, or none) and the epoch's reported training
loss; evaluate's batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnplug
from nnplug.data import Dataset
from nnplug.optim import OptimizerConfig
from nnplug.train import TrainConfig, Trainer, evaluate

CONFIG = {"input": [3], "dtype": "float64", "seed": 0,
          "layers": [{"type": "dense", "units": 3, "name": "logits"}],
          "loss": {"type": "softmax_cross_entropy"}}


def spied_trainer(tmp_path: Path, n: int, batch_size: int, epochs: int, *, seed: int = 0, shuffle: bool = True):
    """A trainer on n examples whose first feature is the example's index, and the list that
    each step appends (indices of its batch, its loss) to."""
    model = nnplug.Model.from_config(CONFIG)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3))
    x[:, 0] = np.arange(n)  # an example names itself
    data = Dataset(x, np.arange(n) % 3, None, None, "test arrays")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                         optimizer=OptimizerConfig(type="sgd", lr=0.05))
    trainer = Trainer(model, data, config, tmp_path / f"run{seed}", seed)
    steps: list[tuple[np.ndarray, float]] = []
    step = trainer._step

    def spy(xb, yb):
        loss = step(xb, yb)
        steps.append((xb[:, 0].astype(int), loss))
        return loss

    trainer._step = spy  # type: ignore[method-assign]
    return trainer, steps


def test_each_epoch_visits_every_example_once_in_an_order_of_its_own(tmp_path):
    n, bs, epochs = 20, 5, 3
    trainer, steps = spied_trainer(tmp_path, n, bs, epochs)
    assert trainer.run().status == "completed"
    per_epoch = n // bs
    orders = [np.concatenate([i for i, _ in steps[e * per_epoch:(e + 1) * per_epoch]]) for e in range(epochs)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(n))  # a permutation
    # reshuffled every epoch (20! orders: a repeat by chance is out of the question)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])


def test_the_epochs_training_loss_weights_each_batch_by_its_size(tmp_path):
    # 10 examples in batches of 4, 4 and 2: the last batch counts half as much as the others
    trainer, steps = spied_trainer(tmp_path, 10, 4, 1)
    result = trainer.run()
    sizes = [len(i) for i, _ in steps]
    assert sizes == [4, 4, 2]
    expected = sum(len(i) * loss for i, loss in steps) / 10
    assert result.history[0]["train_loss"] == pytest.approx(expected, rel=1e-12)


def _orders(tmp_path: Path, **options) -> list[np.ndarray]:
    trainer, steps = spied_trainer(tmp_path, 12, 4, 2, **options)
    assert trainer.run().status == "completed"
    return [np.concatenate([i for i, _ in steps[e * 3:(e + 1) * 3]]) for e in range(2)]


def test_shuffle_false_keeps_the_files_order_every_epoch(tmp_path):
    for order in _orders(tmp_path, shuffle=False):
        np.testing.assert_array_equal(order, np.arange(12))


def test_the_shuffle_is_drawn_from_the_seed(tmp_path):
    a, b, c = (_orders(tmp_path, seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_evaluate_weights_a_last_partial_batch_by_its_size():
    model = nnplug.Model.from_config(CONFIG)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((10, 3)), rng.integers(0, 3, 10)
    whole = evaluate(model, x, y)  # one batch
    in_fours = evaluate(model, x, y, batch_size=4)  # 4, 4 and 2
    assert in_fours[0] == pytest.approx(whole[0], rel=1e-12)
    assert in_fours[1] == pytest.approx(whole[1], rel=1e-12)
    assert whole[1] == pytest.approx(np.mean(model.forward(x).argmax(axis=1) == y))


def test_the_shuffle_of_each_epoch_is_the_same_in_every_nnplug_version(tmp_path):
    # "same file and seed, same weights" holds across upgrades only if each epoch's order is pinned
    trainer, steps = spied_trainer(tmp_path, 8, 8, 2)
    assert trainer.run().status == "completed"
    assert [i.tolist() for i, _ in steps] == [[3, 2, 1, 0, 6, 4, 7, 5], [4, 3, 6, 1, 7, 2, 5, 0]]
