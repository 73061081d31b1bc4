"""check_loss on a third party's loss: targets handed over in the predictions' dtype, the
value a mean over the batch, example_target required to draw them."""

from __future__ import annotations

import types
from typing import Literal

import numpy as np
import pytest
from hypothesis import strategies as st

import nnplug
from nnplug.testing import Case, ConformanceError, check_loss


class SummedSquaresConfig(nnplug.LayerConfig):
    type: Literal["summed_squares"] = "summed_squares"


class SummedSquares(nnplug.Loss):
    """Σ (pred − target)² over the batch, not its mean: consistent with its own backward."""

    Config = SummedSquaresConfig

    def forward(self, pred, target):
        r = pred - target  # the harness hands float targets over in pred's dtype, as a model does
        return float((r * r).sum()), r

    def backward(self, cache):
        return 2 * cache

    def example_target(self, pred_shape, rng):
        return rng.standard_normal(pred_shape)  # float64 whatever the predictions' dtype

    @classmethod
    def gradcheck_cases(cls):
        return st.just(Case({}, ((3,),)))


def test_a_loss_summing_over_the_batch_instead_of_the_mean_is_named():
    # its gradient is right, so only the batch given twice tells the sum from the mean
    with pytest.raises(ConformanceError) as info:
        check_loss(SummedSquares, Case({}, ((3,),)), seed=0)
    assert info.value.check == "batch mean" and "mean over the batch" in str(info.value)


def test_a_loss_whose_example_target_is_float64_passes_the_float32_pass():
    class MeanSquares(SummedSquares):
        def forward(self, pred, target):
            r = pred - target
            return float((r * r).sum() / len(r)), r

        def backward(self, cache):
            return 2 * cache / len(cache)

    assert check_loss(MeanSquares, Case({}, ((3,),)), seed=0).report.ok


def test_a_loss_with_cases_but_no_example_target_is_told_what_to_define():
    class NoTargets(SummedSquares):
        example_target = nnplug.Loss.example_target

    with pytest.raises(ConformanceError, match=r"defines no example_target\(pred_shape, rng\)") as info:
        check_loss(NoTargets, Case({}, ((3,),)), seed=0)
    assert info.value.check == "example_target"


def test_a_refused_float_target_names_the_dtype_given_as_well_as_the_one_cast_to():
    model = nnplug.Model.from_config({"input": [4], "layers": [{"type": "dense", "units": 3}],
                                      "loss": {"type": "softmax_cross_entropy"}})
    labels = np.array([0.0, 2.0])  # integer-valued float64 labels, as read from a CSV
    with pytest.raises(nnplug.ShapeError, match="given as float64 and cast to the model's float32"):
        model.loss_and_grads(np.ones((2, 4)), labels)


class _PickyLossConfig(nnplug.LayerConfig):
    type: Literal["picky_loss"] = "picky_loss"


class _PickyLoss(SummedSquares):
    """A loss plugin whose checks break with something other than nnplug's errors."""

    Config = _PickyLossConfig  # type: ignore[assignment]

    def check_pred_shape(self, pred_shape):
        raise ValueError("picky about shapes")


class _BrokenInitLoss(_PickyLoss):
    def __init__(self, config=None):
        raise KeyError("setting")


@pytest.mark.parametrize(("cls", "message"), [
    (_PickyLoss, r"loss \(picky_loss, plugin 'picky'\): check_pred_shape raised ValueError: picky about "
                 r"shapes; received \(3,\) from 'dense_0'"),
    (_BrokenInitLoss, r"loss \(picky_loss, plugin 'picky'\): creating the loss raised KeyError"),
])
def test_a_loss_plugin_breaking_while_the_model_is_built_is_named_not_a_traceback(cls, message):
    # a layer's output_shape or __init__ raising was named; the loss's escaped as a bare ValueError
    module = types.ModuleType("picky")
    module.nnplug_register_layers = nnplug.hookimpl(lambda: [cls])  # type: ignore[attr-defined]
    registry = nnplug.Registry(plugins=["nnplug_layers", module])
    config = {"input": [4], "layers": [{"type": "dense", "units": 3}], "loss": {"type": "picky_loss"}}
    with pytest.raises(nnplug.PluginError, match=message):
        nnplug.Model.from_config(config, registry)
