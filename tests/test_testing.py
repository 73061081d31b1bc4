"""nnplug.testing's conformance harness: every installed layer and loss passes it, and each
property of the layer contract, broken on purpose, is named when it fails."""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kinked import GRID_WITH_ZERO, ShiftedAbs
from kinked import grid_with_zero as grid_with_zero_values
from pydantic import field_serializer

import nnplug
from nnplug import testing
from nnplug.testing import Case, ConformanceError, check_layer, check_loss

REGISTRY = nnplug.load_registry()

# -- every installed layer and loss passes ----------------------------------------------------

test_every_installed_type_keeps_the_contract = testing.all_layers_test(REGISTRY)


def test_check_layer_returns_the_report_batch_and_forward_count():
    result = check_layer("dense", Case({"units": 3}, ((4,),)), seed=3, registry=REGISTRY)
    assert result.report.ok and 2 <= result.batch <= 5 and result.redraws == 0
    assert result.n_forward == result.report.n_forward > 0
    assert result.report.max_rel_error < 1e-5


# -- a minimal correct layer, and one broken variant per property ---------------------------


class ScaleConfig(nnplug.LayerConfig):
    type: Literal["scale_for_tests"] = "scale_for_tests"
    factor: float = 2.0


class Scale(nnplug.Layer):
    """y = factor * x * w, w: (d,) for x: (N, d)."""

    Config = ScaleConfig

    def output_shape(self, in_shape):
        return in_shape

    def param_shapes(self, in_shape):
        return {"w": in_shape}

    def init_params(self, in_shape, rng):
        return {"w": rng.standard_normal(in_shape)}

    def forward(self, params, x, *, training):
        return self.config.factor * x * params["w"], x

    def backward(self, params, cache, dy):
        x = cache
        return self.config.factor * dy * params["w"], {"w": self.config.factor * (dy * x).sum(axis=0)}


CASE = Case({"factor": 1.5}, ((4,),))


def broken(name: str, **methods: Any) -> type:
    return type(name, (Scale,), methods)


def _bad_shape(self, in_shape):
    return (in_shape[0] + 1,)


def _bad_param_shapes(self, in_shape):
    return {"w": (in_shape[0], 1)}


def _missing_grad(self, params, cache, dy):
    dx, _ = Scale.backward(self, params, cache, dy)
    return dx, {}


def _wrong_grad_shape(self, params, cache, dy):
    dx, grads = Scale.backward(self, params, cache, dy)
    return dx, {"w": grads["w"][None]}


def _mutates_dy(self, params, cache, dy):
    dy *= self.config.factor
    return dy * params["w"], {"w": (dy * cache).sum(axis=0)}


def _mutates_input(self, params, x, *, training):
    x += 0.0 * x + 1e-3
    return Scale.forward(self, params, x, training=training)


def _mutates_params(self, params, cache, dy):
    out = Scale.backward(self, params, cache, dy)
    params["w"][...] = 0
    return out


def _aliased_grads(self, params, cache, dy):
    dx, grads = Scale.backward(self, params, cache, dy)
    return dx, {"w": dx[0]} if dx.shape[1:] == grads["w"].shape else grads


def _nondeterministic(self, params, cache, dy):
    dx, grads = Scale.backward(self, params, cache, dy)
    return dx * (1 + 1e-12 * np.random.default_rng().standard_normal()), grads


def _stores_cache_on_self(self, params, x, *, training):
    self.last_input = x
    return Scale.forward(self, params, x, training=training)


def _promotes_float32(self, params, x, *, training):
    y, cache = Scale.forward(self, params, x, training=training)
    return y + np.zeros(y.shape), cache  # a float64 constant promotes a float32 y


def _bad_gradient(self, params, cache, dy):
    dx, grads = Scale.backward(self, params, cache, dy)
    return dx, {"w": grads["w"] * 1.01}


def _crashes(self, params, cache, dy):
    raise IndexError("index 7 is out of bounds")


def _param_grads_disagree(self, params, cache, dy):
    return {"w": 1.01 * Scale.backward(self, params, cache, dy)[1]["w"]}  # backward itself is right


BROKEN = {
    "output_shape": broken("WrongShape", output_shape=_bad_shape),
    "param_shapes": broken("WrongParamShapes", param_shapes=_bad_param_shapes),
    "gradient names": broken("MissingGrad", backward=_missing_grad),
    "gradient shapes": broken("WrongGradShape", backward=_wrong_grad_shape),
    "mutation": broken("MutatesDy", backward=_mutates_dy),
    "aliasing": broken("AliasedGrads", backward=_aliased_grads),  # (dy itself as dx is allowed)
    "determinism": broken("Nondeterministic", backward=_nondeterministic),
    "layer state": broken("StoresCache", forward=_stores_cache_on_self),
    "dtype": broken("PromotesFloat32", forward=_promotes_float32),
    "gradient": broken("BadGradient", backward=_bad_gradient),
    "backward": broken("Crashes", backward=_crashes),
    "param_grads": broken("ParamGradsDisagree", param_grads=_param_grads_disagree),
}


def test_the_correct_reference_layer_passes_in_both_modes():
    for mode in ("full", "fast"):
        assert check_layer(Scale, CASE, seed=0, mode=mode).report.ok


def test_a_param_grads_override_that_agrees_with_backward_passes():
    def param_grads(self, params, cache, dy):
        return {"w": self.config.factor * (dy * cache).sum(axis=0)}

    assert check_layer(broken("ParamGradsRight", param_grads=param_grads), CASE, seed=0).report.ok


@pytest.mark.parametrize("prop", sorted(BROKEN))
def test_each_broken_property_is_named_with_config_and_shapes(prop):
    with pytest.raises(ConformanceError) as info:
        check_layer(BROKEN[prop], CASE, seed=0)
    error = info.value
    assert error.check == prop
    assert isinstance(error, nnplug.GradientCheckError) and isinstance(error, AssertionError)
    assert f"{prop} broken" in str(error)
    assert "config {'factor': 1.5}" in str(error) and "input shapes ((4,),)" in str(error)
    assert error.case == CASE and error.seed == 0


@pytest.mark.parametrize("method", [_mutates_input, _mutates_params])
def test_mutating_inputs_or_params_is_caught(method):
    name = "forward" if method is _mutates_input else "backward"
    with pytest.raises(ConformanceError, match="mutation broken") as info:
        check_layer(broken("Mutates", **{name: method}), CASE)
    assert info.value.check == "mutation"


class TanhInPlace(Scale):
    """y = tanh(x), no parameters; backward works in its cache and returns it as dx."""

    def param_shapes(self, in_shape):
        return {}

    def init_params(self, in_shape, rng):
        return {}

    def forward(self, params, x, *, training):
        y = np.tanh(x)
        return y, y.copy()  # the cache is the layer's own array: no read-only guard stops an edit

    def backward(self, params, cache, dy):
        d = cache  # d = (1 - y²)·δ, written over y: a second backward reads d, not y
        d *= -d
        d += 1
        d *= dy
        return d, {}


def test_a_backward_that_rewrites_its_cache_is_caught_even_when_its_results_are_views_of_it():
    with pytest.raises(ConformanceError, match="determinism broken: a second backward on the same cache"):
        check_layer(TanhInPlace, Case({}, ((4,),)), seed=0)


class Rezero(Scale):
    """y = x + α·x·w with α drawn as 0 (ReZero): the right gradients of w and x involve α."""

    def init_params(self, in_shape, rng):
        return {"w": rng.standard_normal(in_shape), "alpha": np.zeros(1)}

    def param_shapes(self, in_shape):
        return {"w": in_shape, "alpha": (1,)}

    def forward(self, params, x, *, training):
        return x + params["alpha"] * x * params["w"], x

    def backward(self, params, cache, dy):
        x = cache
        return dy * (1 + params["alpha"] * params["w"]), {
            "w": (dy * params["alpha"] * x).sum(axis=0), "alpha": np.atleast_1d((dy * x * params["w"]).sum())}


def _rezero_forgets_alpha(self, params, cache, dy):  # dx = δ: right while α = 0, wrong once training moves it
    _, grads = Rezero.backward(self, params, cache, dy)
    return dy.copy(), grads


def test_parameters_are_moved_off_their_initial_values_so_a_zero_cannot_hide_a_wrong_gradient():
    assert check_layer(Rezero, Case({}, ((4,),)), seed=0).report.ok
    wrong = type("RezeroWrong", (Rezero,), {"backward": _rezero_forgets_alpha})
    for seed in range(3):
        with pytest.raises(ConformanceError, match="gradient broken"):
            check_layer(wrong, Case({}, ((4,),)), seed=seed)
    # params="init" checks init_params' values exactly: α = 0 there, and the mistake hides
    assert check_layer(wrong, Case({}, ((4,),), params="init"), seed=0).report.ok


class LogScale(Scale):
    """y = x · log(w + 1e-3) with w drawn as 0: moved by about ±0.1 it leaves the log's domain;
    a layer whose parameter must stay where it is drawn says so with params='init'."""

    def init_params(self, in_shape, rng):
        return {"w": np.zeros(in_shape)}

    def forward(self, params, x, *, training):
        with np.errstate(invalid="ignore"):
            return x * np.log(params["w"] + 1e-3), x

    def backward(self, params, cache, dy):
        return dy * np.log(params["w"] + 1e-3), {"w": (dy * cache / (params["w"] + 1e-3)).sum(axis=0)}


def test_a_parameter_moved_out_of_its_domain_says_how_to_keep_it():
    with pytest.raises(ConformanceError, match=r"moved off init_params' values: Case\(\.\.\., params='init'\)"):
        for seed in range(10):  # some draw moves a weight below -1e-3
            check_layer(LogScale, Case({}, ((6,),)), seed=seed)
    assert check_layer(LogScale, Case({}, ((6,),), params="init"), seed=0).report.ok


def test_wide_values_reach_far_from_zero_and_a_bad_params_kind_is_refused():
    wide = testing.draw_values("wide", (10_000,), np.random.default_rng(0))
    assert 0.11 < np.mean(np.abs(wide) > 6) < 0.16  # P(|N(0, 4²)| > 6) = P(|Z| > 1.5) = 0.134
    with pytest.raises(nnplug.ConfigError, match=r"Case\.params: expected one of perturbed, init"):
        Case({}, ((2,),), params="trained")


@given(testing.arrays((50,), "wide"))
def test_the_wide_arrays_strategy_draws_finite_values_within_12(a):
    assert np.isfinite(a).all() and np.abs(a).max() <= 12


def test_gradients_sharing_memory_with_each_other_are_caught():
    with pytest.raises(ConformanceError, match="share memory"):
        check_layer(broken("Aliased", backward=_aliased_grads), Case({}, ((4,),)))


class LossyConfig(ScaleConfig):
    type: Literal["lossy_config_for_tests"] = "lossy_config_for_tests"

    @field_serializer("factor")
    def _halve(self, value: float) -> float:
        return value / 2


def test_a_config_that_does_not_survive_a_round_trip_is_caught():
    cls = type("Lossy", (Scale,), {"Config": LossyConfig})
    with pytest.raises(ConformanceError, match="config round trip broken"):
        check_layer(cls, CASE)


def test_a_case_config_the_layer_refuses_is_reported_as_the_cases_fault():
    with pytest.raises(ConformanceError, match="case config broken") as info:
        check_layer("dense", Case({"units": 0}, ((3,),)), registry=REGISTRY)
    assert "units" in str(info.value)


def test_a_case_with_the_wrong_number_of_shapes_is_refused():
    with pytest.raises(ConformanceError, match="case shapes broken"):
        check_layer("add", Case({}, ((3,),)), registry=REGISTRY)


# -- kinks -----------------------------------------------------------------------------------


@pytest.fixture
def grid_with_zero(monkeypatch):
    monkeypatch.setitem(testing.VALUE_KINDS, GRID_WITH_ZERO, grid_with_zero_values)
    return GRID_WITH_ZERO


def test_kinks_are_redrawn_and_counted(grid_with_zero):
    case = Case({}, ((2,),), values=grid_with_zero, params="init")  # values include 0; c is 0 or 0.3
    results = [check_layer(ShiftedAbs, case, seed=s) for s in range(12)]
    assert any(r.redraws > 0 for r in results)
    assert all(r.report.ok and not r.report.kinks for r in results)


def test_a_case_that_always_meets_a_kink_fails_naming_the_kink(grid_with_zero):
    always = type("Abs", (ShiftedAbs,), {"init_params": lambda self, s, rng: {"c": np.zeros(s)}})
    with pytest.raises(ConformanceError, match="met a kink") as info:
        check_layer(always, Case({}, ((2,),), values=grid_with_zero, params="init"), seed=0)
    assert info.value.report is not None and info.value.report.kinks
    assert info.value.check == "kink avoidance"  # the draws are at fault, not the gradient


# -- losses ----------------------------------------------------------------------------------


def test_builtin_losses_pass_with_labels_drawn_by_example_target():
    assert check_loss("softmax_cross_entropy", Case({}, ((5,),)), seed=1, registry=REGISTRY).report.ok
    assert check_loss("mse", Case({}, ((2, 3),)), seed=1, mode="fast", registry=REGISTRY).report.ok


def _loss(name: str, **methods: Any) -> type:
    base = REGISTRY.get("mse")
    return type(name, (base,), methods)


def _zeroes_pred_then_forward(self, pred, target):
    out = REGISTRY.get("mse").forward(self, pred, target)
    pred[...] = 0.0
    return out


@pytest.mark.parametrize(("prop", "methods"), [
    ("mutation", {"forward": _zeroes_pred_then_forward}),
    ("forward", {"forward": lambda self, p, t: (np.ones(2), (p - t).astype(p.dtype))}),
    ("dtype", {"backward": lambda self, c: (c * (2 / c.size)).astype(np.float64)}),
    ("gradient", {"backward": lambda self, c: c / c.size}),
])
def test_check_loss_names_the_broken_property(prop, methods):
    with pytest.raises(ConformanceError) as info:
        check_loss(_loss("BrokenMSE", **methods), Case({}, ((3,),)), seed=0)
    assert info.value.check == prop


def test_layers_and_losses_are_not_mixed_up():
    with pytest.raises(nnplug.PluginError, match="check_loss"):
        check_layer("mse", Case({}, ((3,),)), registry=REGISTRY)
    with pytest.raises(nnplug.PluginError, match="check_layer"):
        check_loss("relu", Case({}, ((3,),)), registry=REGISTRY)


def test_unknown_types_and_types_without_cases_are_clear_errors():
    with pytest.raises(nnplug.PluginError, match="did you mean 'dense'"):
        testing.cases_for("dens", REGISTRY)
    with pytest.raises(nnplug.PluginError, match="no gradcheck_cases"):
        testing.cases_for(Scale)
    with pytest.raises(nnplug.PluginError, match="registered type name or a Layer"):
        check_layer(42, CASE)


class WithoutClassmethod(Scale):
    def gradcheck_cases(self) -> Any:  # the decorator forgotten
        return None


class RaisingCases(Scale):
    @classmethod
    def gradcheck_cases(cls) -> Any:
        raise KeyError("shapes")


def test_gradcheck_cases_without_classmethod_or_raising_is_named_not_a_typeerror():
    with pytest.raises(nnplug.PluginError, match="gradcheck_cases must be a classmethod; decorate it"):
        testing.cases_for(WithoutClassmethod)
    with pytest.raises(nnplug.PluginError, match=r"gradcheck_cases\(\) raised KeyError: 'shapes'"):
        testing.cases_for(RaisingCases)


def test_state_kept_by_output_shape_or_init_params_is_caught():
    def remembers(self, in_shape):
        self.in_shape = in_shape
        return in_shape

    with pytest.raises(ConformanceError, match="layer state broken") as info:
        check_layer(broken("Remembers", output_shape=remembers), CASE)
    assert "in_shape" in str(info.value)


def test_a_case_whose_shapes_the_layer_refuses_blames_the_case_not_output_shape():
    with pytest.raises(ConformanceError, match=r"case shapes broken: dense refuses the case's input shapes \(3, 4\)"):
        check_layer("dense", Case({"units": 2}, ((3, 4),)), registry=REGISTRY)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"registry": "x"}, "registry: expected an nnplug.Registry, got str"),
    ({"seed": -1}, "seed: expected a non-negative int, got -1"),
    ({"seed": 1.5}, "seed: expected a non-negative int, got 1.5"),
    ({"dtype": "float16"}, "dtype: expected"),
    ({"mode": "slow"}, "mode: expected 'full' or 'fast'"),
])
def test_bad_arguments_to_check_layer_are_config_errors(kwargs, message):
    with pytest.raises(nnplug.ConfigError, match=message):
        check_layer("dense", Case({"units": 2}, ((3,),)), **kwargs)


def test_a_case_asking_for_terabytes_is_refused_before_any_array():
    with pytest.raises(nnplug.ConfigError, match="values per example is more than a finite-difference check takes"):
        Case({}, ((10**6, 10**6),))


@pytest.mark.parametrize(("layer", "message"), [
    (broken("NoCache", forward=lambda self, p, x, *, training: x * p["w"]),
     "forward broken: forward returned ndarray, expected a pair (y, cache)"),
    (broken("NoPair", backward=lambda self, p, c, dy: dy * p["w"]),
     "backward broken: backward returned ndarray, expected a pair (dx, {name: gradient})"),
    (broken("GradList", backward=lambda self, p, c, dy: (dy * p["w"], [(dy * c).sum(axis=0)])),
     "backward broken: backward returned list as its gradients, expected {name: gradient}"),
    (broken("WrongDx", backward=lambda self, p, c, dy: (dy[:, :1] * p["w"][:1], Scale.backward(self, p, c, dy)[1])),
     "gradient shapes broken: dx has shape"),
])
def test_what_forward_and_backward_return_is_named_when_it_is_not_the_contracts_pair(layer, message):
    # a forward returning y alone used to be unpacked row by row: "too many values to unpack"
    # or, for a batch of 2, "forward gave (1,), output_shape promised (2, 1)"
    for seed in (11, 1, 4, 0):  # batches of 2, 3, 4 and 5
        with pytest.raises(ConformanceError) as info:
            check_layer(layer, CASE, seed=seed)
        assert message in str(info.value)


@pytest.mark.parametrize(("methods", "message"), [
    ({"forward": lambda self, p, t: float(np.mean((p - t) ** 2))},
     "forward broken: forward returned float, expected a pair (value, cache)"),
    ({"backward": lambda self, c: (c * (2 / c.size), {})},
     "backward broken: backward returned tuple, expected dpred, an array of the prediction's shape (3, 3)"),
])
def test_a_loss_returning_the_wrong_kind_of_thing_is_named(methods, message):
    with pytest.raises(ConformanceError, match=re.escape(message)):
        check_loss(_loss("BrokenMSE", **methods), Case({}, ((3,),)), seed=1)


@pytest.mark.parametrize(("methods", "what"), [
    ({"output_shape": lambda self, s: (5_000_000,)}, "5,000,000 output values per example"),
    ({"param_shapes": lambda self, s: {"w": (5_000_000,)}}, "5,000,000 parameters"),
    ({"init_params": lambda self, s, rng: {"w": np.zeros(5_000_000)}, "param_shapes": lambda self, s: None},
     "5,000,000 parameters"),
])
def test_a_case_building_a_layer_too_large_to_check_is_refused_as_the_cases_fault(methods, what):
    # units: 300_000_000 drawn by a case strategy used to take the machine's memory
    with pytest.raises(ConformanceError) as info:
        check_layer(broken("Huge", **methods), CASE, seed=0)
    assert info.value.check == "case size" and what in str(info.value)


class ForgetsReturn(Scale):
    @classmethod
    def gradcheck_cases(cls) -> Any:
        st.just(CASE)  # the `return` forgotten


def test_gradcheck_cases_returning_none_is_told_apart_from_offering_none():
    with pytest.raises(nnplug.PluginError, match=r"gradcheck_cases\(\) returned None; .*a missing `return`"):
        testing.cases_for(ForgetsReturn)


class _Memo(Scale):
    """Keeps its input in a dict made in __init__: the attribute itself never changes."""

    def __init__(self, config):
        super().__init__(config)
        self._memo = {}

    def forward(self, params, x, *, training):
        self._memo["x"] = x
        return Scale.forward(self, params, x, training=training)

    def backward(self, params, cache, dy):
        return Scale.backward(self, params, self._memo["x"], dy)


def _float32_only_bug(self, params, cache, dy):
    dx, grads = Scale.backward(self, params, cache, dy)
    return (dx * 1.02 if dx.dtype == np.float32 else dx), grads  # (a float32-only branch 2% off)


def _global_random_init(self, in_shape, rng):
    return {"w": np.random.standard_normal(in_shape)}


@pytest.mark.parametrize(("layer", "prop", "phrase"), [
    (_Memo, "layer state", "a forward on other inputs changed what backward computes from an earlier"),
    (broken("Float32Only", backward=_float32_only_bug), "float32", "float32 in gives dx differing from float64's"),
    (broken("GlobalRandom", init_params=_global_random_init), "init_params", "draw from the rng passed in"),
])
def test_contract_breaks_that_used_to_pass_the_harness_are_caught(layer, prop, phrase):
    with pytest.raises(ConformanceError) as info:
        check_layer(layer, CASE, seed=0)
    assert info.value.check == prop and phrase in str(info.value)


def test_an_output_zero_in_exact_arithmetic_is_not_a_float32_failure():
    # the stride skips the only real pixel: y is 0, computed as rounding noise by scipy's engine
    case = Case({"filters": 1, "kernel_size": [2, 1], "stride": [3, 1], "padding": 2, "bias": False,
                 "engine": "scipy"}, ((1, 1, 1),))
    assert check_layer("conv2d", case, seed=0, mode="fast", registry=REGISTRY).report.ok
