"""A model copied, deep-copied or pickled (multiprocessing's spawn start method pickles what it
hands a worker) computes exactly what the original does, and owns its own weights."""

from __future__ import annotations

import copy
import pickle

import numpy as np

import nnplug

MODEL = {
    "input": [1, 6, 6],
    "dtype": "float64",
    "layers": [
        {"type": "conv2d", "name": "conv", "filters": 3, "kernel_size": 3},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "dense", "name": "out", "units": 4},
    ],
    "loss": {"type": "softmax_cross_entropy"},
}


def _batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 1, 6, 6)), rng.integers(0, 4, 3)


def test_a_pickled_model_computes_the_same_loss_and_gradients():
    model = nnplug.Model.from_config(MODEL)
    x, target = _batch()
    loss, grads = model.loss_and_grads(x, target)
    restored = pickle.loads(pickle.dumps(model))
    loss2, grads2 = restored.loss_and_grads(x, target)
    assert abs(loss2 - loss) <= 1e-12 * abs(loss)
    for node, own in grads.items():
        for name, g in own.items():
            np.testing.assert_allclose(grads2[node][name], g, rtol=1e-12, atol=0)
    assert sorted(restored.registry.types) == sorted(model.registry.types)


def test_a_deep_copied_model_owns_its_weights():
    model = nnplug.Model.from_config(MODEL)
    x, _ = _batch()
    y = model.forward(x)
    twin = copy.deepcopy(model)
    twin.params["out"]["w"][...] = 0
    twin.params["out"]["b"][...] = 0
    np.testing.assert_allclose(model.forward(x), y, rtol=1e-12, atol=0)
    assert np.abs(twin.forward(x)).max() == 0  # zero weights and bias give exact zeros


def test_a_pickled_registry_knows_the_same_types():
    registry = nnplug.load_registry()
    restored = pickle.loads(pickle.dumps(registry))
    assert restored.types == registry.types  # the same classes, by reference
    assert [p.status for p in restored.plugins] == [p.status for p in registry.plugins]


def test_a_pickled_model_sees_in_place_edits_of_its_params():
    model = nnplug.Model.from_config(MODEL)
    x, _ = _batch()
    model.forward(x)  # the params' read-only views are made and kept
    restored = pickle.loads(pickle.dumps(model))
    restored.params["out"]["w"] *= 0
    restored.params["out"]["b"] *= 0
    assert np.abs(restored.forward(x)).max() == 0
