"""Fast mode's directions on a model whose float32 step of 1e-2 crosses kinks (leaky_relu
inputs, max-pool ties): a correct model passes, a wrong weight gradient still fails."""

from __future__ import annotations

import buggy_layers
import numpy as np
import pytest

import nnplug

REGISTRY = nnplug.Registry(plugins=[buggy_layers])


def _pools_model(conv_type: str) -> nnplug.Model:
    """conv (stride 2) -> leaky_relu -> max-pool 'same' -> avg-pool, and a second avg-pool
    branch, concatenated into a dense head: many kinks within a step of 1e-2."""
    return nnplug.Model.from_config({
        "input": [2, 10, 11], "seed": 5,
        "layers": [
            {"type": conv_type, "name": "c", "filters": 4, "kernel_size": 3, "stride": 2, "padding": [1, 2]},
            {"type": "leaky_relu", "name": "l"},
            {"type": "maxpool2d", "name": "mps", "pool_size": [2, 3], "padding": "same", "stride": 1},
            {"type": "avgpool2d", "name": "aps", "pool_size": 3, "stride": 2, "padding": "same"},
            {"type": "avgpool2d", "name": "api", "pool_size": 2, "stride": 1, "padding": 1, "inputs": ["l"]},
            {"type": "global_avgpool", "name": "g1", "inputs": ["aps"]},
            {"type": "global_avgpool", "name": "g2", "inputs": ["api"]},
            {"type": "concat", "name": "cc", "inputs": ["g1", "g2"]},
            {"type": "dense", "name": "head", "units": 4},
        ],
        "loss": {"type": "softmax_cross_entropy"},
    }, REGISTRY)


def _batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, 2, 10, 11)), rng.integers(0, 4, 3)


@pytest.mark.parametrize("seed", [34, 14, 33])
def test_a_direction_whose_float32_step_crosses_a_kink_is_settled_at_a_finer_step(seed):
    # seed 34: the first direction over c/w missed by 90% at 1e-2 (FAILED, "the mistake is in
    # entries the sample missed"); at 1e-3 it fits, as an entry's difference does (settle).
    # Seeds 14 and 33: a missed direction sent c/w to its entries, which met kinks there.
    x, target = _batch(seed)
    report = nnplug.gradcheck(_pools_model("conv2d"), x, target, mode="fast", dtype="float32", seed=seed,
                              raise_on_failure=False)
    assert report.ok, str(report)


@pytest.mark.parametrize("seed", [34, 14, 33])
def test_a_wrong_weight_gradient_still_fails_fast_mode_among_the_same_kinks(seed):
    x, target = _batch(seed)
    report = nnplug.gradcheck(_pools_model("buggy_conv2d_dw_rotated"), x, target, mode="fast",
                              dtype="float32", seed=seed, raise_on_failure=False)
    assert {failure.tensor for failure in report.failures} == {"c/w"}, str(report)
