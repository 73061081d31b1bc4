"""Optimizer settings and state beyond the update rules of test_train: the documented default
learning rates, and a float32 optimizer restored from its state taking the very same steps."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest

from nnplug.optim import OptimizerConfig, make_optimizer


def test_the_default_learning_rate_is_001_for_sgd_and_0001_for_adam() -> None:
    assert OptimizerConfig(type="sgd").learning_rate == pytest.approx(0.01)  # README "Optimizers"
    assert OptimizerConfig(type="adam").learning_rate == pytest.approx(0.001)
    assert OptimizerConfig().learning_rate == pytest.approx(0.001)  # adam is the default type
    assert OptimizerConfig(type="sgd", lr=0.5).learning_rate == pytest.approx(0.5)


def _params() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {"a": {"w": rng.standard_normal(50).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}}


def _grads(step: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(step + 1)
    return {"a": {"w": rng.standard_normal(50).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}}


@pytest.mark.parametrize(("kind", "extra"), [("adam", {}), ("sgd", {"momentum": 0.9, "nesterov": True})])
def test_a_float32_optimizer_restored_from_its_state_takes_the_same_steps_bit_for_bit(
        kind: Literal["sgd", "adam"], extra: dict) -> None:
    config = OptimizerConfig(type=kind, lr=0.01, weight_decay=0.01, **extra)
    straight = _params()
    opt = make_optimizer(config, straight)
    for step in range(6):
        opt.step(straight, _grads(step))

    resumed = _params()
    first = make_optimizer(config, resumed)
    for step in range(3):
        first.step(resumed, _grads(step))
    arrays, scalars = first.state_dict()
    second = make_optimizer(config, resumed)  # a resumed run: fresh state, then the checkpoint's
    second.load_state_dict({k: v.copy() for k, v in arrays.items()}, dict(scalars))
    assert {a.dtype for a in second.state.values()} == {np.dtype(np.float32)}
    for step in range(3, 6):
        second.step(resumed, _grads(step))
    for name, w in straight["a"].items():
        assert resumed["a"][name].dtype == np.float32
        assert resumed["a"][name].tobytes() == w.tobytes(), name
