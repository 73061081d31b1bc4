"""The checker's numerics at the edges: wide tensors, overflow, large inputs and outputs,
float32's coarse step, tiny parameters. Correct layers pass; wrong ones fail, and the report
says why."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from numeric_layers import Elementwise, Gate, LayerNorm, LayerScale, MaskedFill, SoftSign

import nnplug
from nnplug._gradcheck_probe import Probe, compared, settle
from nnplug._gradcheck_report import GradcheckReport
from nnplug.testing import Case, ConformanceError, check_layer


def _normal(shape, seed=100):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_mistake_in_one_column_of_a_wide_input_is_caught_beyond_the_sample(mode):
    # 2 x 2000 entries, 200 sampled: the last column's 2 entries are rarely among them
    wrong = Elementwise({"column": True, "wrong": 1.05})
    for seed in range(5):
        report = nnplug.gradcheck(wrong, _normal((2, 2000)), mode=mode, seed=seed, raise_on_failure=False)
        assert report.failures, str(report)
    assert nnplug.gradcheck(Elementwise({}), _normal((2, 2000))).ok


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_failed_direction_is_followed_to_the_wrong_entry_the_sample_missed(mode):
    report = nnplug.gradcheck(Elementwise({"column": True, "wrong": 2.0}), _normal((2, 2000)), mode=mode,
                              max_entries=10, seed=0, raise_on_failure=False)
    assert report.worst.index in {(0, 1999), (1, 1999)}
    assert report.worst.analytic == pytest.approx(2 * report.worst.numeric, rel=1e-6)
    assert report.n_forward < 2 + 2 * 10 + 2 * 3 + 4 * 2 * 12 + 2  # about 2 log2(4000) probes to find it


def test_directions_no_bisection_can_follow_say_the_sample_missed_the_mistake(monkeypatch):
    monkeypatch.setattr(sys.modules["nnplug.gradcheck"], "locate", lambda *args: None)
    report = nnplug.gradcheck(Elementwise({"column": True, "wrong": 2.0}), _normal((2, 2000)), mode="fast",
                              max_entries=10, seed=0, raise_on_failure=False)
    assert report.failures and all(isinstance(f.index, str) for f in report.failures)
    assert "every entry sampled passed" in str(report) and "raise max_entries" in str(report)


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("wrong", [1.0, 0.5])
def test_an_output_overflowing_within_the_step_fails_as_unresolved_whatever_the_backward(wrong, mode):
    edge = np.log(np.finfo(np.float64).max) - 1e-7  # exp(edge) is finite, exp(edge + 1e-6) is not
    x = np.array([[edge, 25.0], [edge, 24.5]])
    with np.errstate(over="ignore", invalid="ignore"):  # the layer's own overflow
        report = nnplug.gradcheck(Elementwise({"fn": "exp", "scale": 1e-10, "wrong": wrong}), x, mode=mode,
                                  raise_on_failure=False)
    overflowing = [f for f in report.failures if isinstance(f.index, tuple) and f.index[1] == 0]
    assert len(overflowing) == 2 and all(f.unresolved_noise == np.inf for f in overflowing)
    assert "not finite at this point or within one step of it" in str(overflowing[0])
    assert {f.index for f in report.failures if isinstance(f.index, tuple)} == ({(0, 0), (1, 0)} if wrong == 1.0
                                                                                 else {(0, 0), (0, 1), (1, 0), (1, 1)})


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("layer,shift", [(Elementwise({"fn": "identity", "offset": -1e5}), 1e5),
                                         (LayerNorm({}), 3e5), (LayerNorm({}), 1e7)])
def test_correct_layers_on_large_inputs_pass(layer, shift, mode):
    # x + h rounds at 1e5 (the step taken is not h), and a layer norm loses the inputs' low digits
    for seed in range(5):
        x = shift + _normal((3, 8), seed=1000 + seed)
        assert nnplug.gradcheck(layer, x, mode=mode, seed=seed).ok


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("shift", [0.0, 3e5, 1e7])
def test_a_one_percent_mistake_on_large_inputs_is_still_caught(shift, mode):
    for seed in range(5):
        x = shift + _normal((3, 8), seed=1000 + seed)
        assert not nnplug.gradcheck(LayerNorm({"wrong": 1.01}), x, mode=mode, seed=seed, raise_on_failure=False).ok


def test_the_random_weighting_is_not_an_input_drawn_from_the_same_seed():
    # R = x would make a layer norm's input gradient zero, and any mistake in it invisible
    x = np.random.default_rng(0).standard_normal((3, 8))
    assert not nnplug.gradcheck(LayerNorm({"wrong": 1.01}), x, seed=0, raise_on_failure=False).ok


def test_a_plainly_wrong_gradient_beside_large_outputs_is_reported_wrong_not_unresolved():
    report = nnplug.gradcheck(Elementwise({"fn": "identity", "offset": 1e6, "wrong": 2.0}), _normal((3, 20)),
                              raise_on_failure=False)
    assert report.failures and not any(f.unresolved_noise for f in report.failures)
    assert report.worst.analytic == pytest.approx(2 * report.worst.numeric, rel=1e-3)


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_outputs_near_the_ends_of_float64_are_checked_like_ordinary_ones(scale):
    x = _normal((3, 4))
    assert nnplug.gradcheck(Elementwise({"scale": scale}), x).ok
    assert not nnplug.gradcheck(Elementwise({"scale": scale, "wrong": 1.01}), x, raise_on_failure=False,
                                atol=0.0).ok


@pytest.mark.parametrize("config", [{"fn": "quartic"}, {"fn": "tanh", "scale": 100.0}, {"fn": "exp", "scale": 100.0}])
def test_float32_checks_pass_correct_curved_layers(config):
    # float32's step is 1e-2: a curve's one-sided slopes differ by f''·h, which is not a kink
    for seed in range(10):
        check_layer(Elementwise, Case(config, ((6,),)), seed=seed, dtype="float32")


@pytest.mark.parametrize("config", [{"fn": "quartic", "wrong": 1.1}, {"fn": "tanh", "scale": 100.0, "wrong": 1.05}])
def test_float32_checks_still_catch_wrong_curved_layers(config):
    for seed in range(5):
        with pytest.raises(ConformanceError):
            check_layer(Elementwise, Case(config, ((6,),)), seed=seed, dtype="float32")


def test_a_gate_initialised_at_one_millionth_cannot_hide_a_dropped_branch():
    for seed in range(5):
        check_layer(LayerScale, Case({}, ((4,),)), seed=seed)
        with pytest.raises(ConformanceError, match="gradient"):
            check_layer(LayerScale, Case({"drop_branch": True}, ((4,),)), seed=seed)


def _measured(numeric, noise_at_unit_step):
    """A stand-in for finite differences: the derivative ``numeric(h)`` with rounding noise
    ``noise_at_unit_step / h``, as outputs of 1e7 give."""
    return lambda h: Probe(numeric(h) * h, numeric(h) * h, h, h, noise_at_unit_step / h)


def _report():
    return GradcheckReport("stand-in", "full", "float64", 1e-6, 1e-5, 1e-6)


def test_coarse_steps_that_agree_on_a_miss_report_a_wrong_gradient():
    probe, _ = settle(_measured(lambda h: 1e-3, 1e-10), _report(), 2e-3, 0.0)
    assert probe.verdict(_report(), 2e-3, 0.0, kink_test=False) == "off"


def test_a_coarse_step_missing_by_its_truncation_error_is_not_called_a_wrong_gradient():
    # 1e-3 + 1e4 h²: right at small steps, which are too noisy; the coarse ones drift with h
    probe, _ = settle(_measured(lambda h: 1e-3 + 1e4 * h * h, 1e-10), _report(), 1e-3, 0.0)
    assert probe.verdict(_report(), 1e-3, 0.0, kink_test=False) == "unresolved"


def test_a_fit_made_by_a_coarse_steps_truncation_error_is_not_taken():
    # right derivative 1e-3, analytic 20% high; the step of 1e-3 (the first one quiet enough)
    # overshoots by exactly that much, and its halves and doubles show the drift
    probe, _ = settle(_measured(lambda h: 1e-3 * (1 + 2e5 * h * h), 5e-10), _report(), 1.2e-3, 0.0)
    assert probe.verdict(_report(), 1.2e-3, 0.0, kink_test=False) == "unresolved"


def test_a_coarse_fit_stands_where_twice_its_step_would_cross_a_kink():
    crossed = _measured(lambda h: 1e-3 if h < 1.5e-3 else 0.5e-3, 5e-10)
    probe, _ = settle(crossed, _report(), 1e-3, 0.0)
    assert probe.verdict(_report(), 1e-3, 0.0, kink_test=False) == "fits"


def test_a_coarse_fit_stands_where_half_its_step_is_noisier_than_estimated():
    # the half step's rounding is twice what its noise says; twice the step confirms the fit
    noisy_half = _measured(lambda h: 1e-3 + (3e-6 if abs(h - 5e-4) < 1e-12 else 0.0), 5e-10)
    probe, _ = settle(noisy_half, _report(), 1e-3, 0.0)
    assert probe.verdict(_report(), 1e-3, 0.0, kink_test=False) == "fits"


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_float32_coarse_steps_do_not_pass_a_wrong_gradient_on_large_outputs(mode):
    # exp(x) + 1000 in float32: only a step near 1 beats the rounding, and there the central
    # difference overshoots by sinh(1) - 1 = 18%, so a gradient 20% too large used to fit
    for seed in range(20):
        x = np.random.default_rng(seed).uniform(0.5, 1.5, (2, 1))
        wrong = Elementwise({"fn": "exp", "offset": 1000.0, "wrong": 1.2})
        assert not nnplug.gradcheck(wrong, x, mode=mode, dtype="float32", seed=seed, raise_on_failure=False).ok
        right = Elementwise({"fn": "identity", "scale": 3.0, "offset": 1000.0})
        assert nnplug.gradcheck(right, x, mode=mode, dtype="float32", seed=seed, raise_on_failure=False).ok


def test_the_checkers_own_steps_do_not_warn_of_overflow_the_callers_point_does_not_have():
    # exp(x) in float32 overflows at x + 100 (the coarsest step), not at x itself
    x = np.random.default_rng(0).uniform(0.5, 1.5, (2, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = nnplug.gradcheck(Elementwise({"fn": "exp", "offset": 1000.0}), x, dtype="float32",
                                  raise_on_failure=False)
    assert report.n_forward > 20  # the coarse steps were taken
    with pytest.warns(RuntimeWarning, match="overflow"):  # the caller's own point still warns
        nnplug.gradcheck(Elementwise({"fn": "exp"}), np.full((2, 1), 100.0, dtype=np.float32),
                         dtype="float32", raise_on_failure=False)


def test_an_unresolved_float32_check_points_to_float64():
    # a curve beside outputs of 1000 in float32: no step both beats the rounding and keeps the
    # truncation error within tolerance
    x = np.random.default_rng(0).uniform(0.5, 1.5, (2, 1))
    report = nnplug.gradcheck(Elementwise({"fn": "quartic", "offset": 1000.0}), x, dtype="float32",
                              raise_on_failure=False)
    assert report.failures[0].unresolved_noise and "dtype='float64'" in str(report)
    assert nnplug.gradcheck(Elementwise({"fn": "quartic", "offset": 1000.0}), x.astype(np.float64)).ok


def test_rounding_beside_a_zero_gradient_is_not_a_relative_error_of_one():
    # conv2d's README run showed "worst rel. error 1.00e+00" on a passing row: analytic 0, numeric -1.8e-10
    result = compared(_report(), "x", (0, 0), 0.0, Probe(-1.8e-16, -1.8e-16, 1e-6, 1e-6, 0.0), 0.0, kink_test=True)
    assert not result.bad and result.entry.rel_error == pytest.approx(1.8e-4)
    wrong = compared(_report(), "x", (0, 0), 2e-3, Probe(1e-9, 1e-9, 1e-6, 1e-6, 0.0), 0.0, kink_test=True)
    assert wrong.bad and wrong.entry.rel_error == pytest.approx(0.5)


# -- found by review: flat entries, kinks under coarse steps, float32's allowance, streams ----




@pytest.mark.parametrize("dtype,x", [
    ("float32", np.random.default_rng(1).permutation(384).reshape(2, 3, 8, 8) / 50.0),  # 0.02 apart
    ("float64", 5e3 + np.random.default_rng(1).permutation(384).reshape(2, 3, 8, 8) * 5e-5),
])
def test_a_correct_max_pool_passes_though_coarse_steps_would_cross_its_window_max(dtype, x):
    maxpool = nnplug.load_registry().get("maxpool2d")({"pool_size": 2})
    for mode in ("full", "fast"):
        report = nnplug.gradcheck(maxpool, x, mode=mode, dtype=dtype, raise_on_failure=False)
        assert report.ok, str(report)


@pytest.mark.parametrize("layer,x,atol", [
    (MaskedFill({}), _normal((2, 8)), None),
    (Elementwise({"fn": "identity", "offset": 1e6}), np.maximum(_normal((2, 1000)), 0), None),
    (nnplug.load_registry().get("relu")({}), _normal((2, 8)), 0.0),
])
def test_an_entry_that_moves_nothing_is_flat_beside_huge_terms_or_at_atol_zero(layer, x, atol):
    for mode in ("full", "fast"):
        assert nnplug.gradcheck(layer, x, mode=mode, atol=atol, raise_on_failure=False).ok


def test_float32_rounding_allowance_does_not_hide_a_three_percent_mistake():
    for seed in range(10):
        x = _normal((3, 8), seed=seed)
        right = nnplug.gradcheck(Elementwise({"offset": 100.0}), x, dtype="float32", seed=seed, raise_on_failure=False)
        wrong = nnplug.gradcheck(Elementwise({"offset": 100.0, "wrong": 1.03}), x, dtype="float32", seed=seed,
                                 raise_on_failure=False)
        assert right.ok and not wrong.ok


def test_a_huge_value_in_one_input_does_not_blur_the_check_of_another():
    x0, sign = _normal((2, 5)), np.sign(_normal((2, 5), seed=7))
    assert nnplug.gradcheck(Gate({}), (x0, 1e11 * sign)).ok
    assert not nnplug.gradcheck(Gate({"wrong": 1.0005}), (x0, 1e6 * sign), raise_on_failure=False).ok


def test_a_kink_outside_the_sample_found_by_bisection_is_reported_as_a_kink():
    x = _normal((2, 2000))
    x[1, 1777] = 0.0
    relu = nnplug.load_registry().get("relu")({})
    for mode in ("full", "fast"):
        report = nnplug.gradcheck(relu, x, mode=mode, raise_on_failure=False)
        assert not report.failures and [k.index for k in report.kinks] == [(1, 1777)], str(report)


def test_no_direction_is_drawn_from_the_callers_stream():
    # x from default_rng(seed), the checker's first direction from it too, would be x itself:
    # a layer norm is flat along its own input, and a 50% mistake invisible there
    for seed in range(10):
        x = np.random.default_rng(seed).standard_normal((3, 8))
        report = nnplug.gradcheck(LayerNorm({"wrong": 1.5}), x, mode="fast", seed=seed, n_directions=1,
                                  raise_on_failure=False)
        assert report.failures


def test_a_wrong_gradient_on_a_float32_curve_is_reported_wrong_not_as_a_kink():
    for seed in range(5):
        report = nnplug.gradcheck(Elementwise({"fn": "quartic", "wrong": 1.1}), _normal((3, 6), seed=seed),
                                  dtype="float32", seed=seed, raise_on_failure=False)
        assert report.failures and not report.kinks


def test_a_small_positive_parameter_stays_positive_when_perturbed():
    for seed in range(10):
        check_layer(SoftSign, Case({}, ((4,),)), seed=seed)


def test_float32_fast_mode_stays_a_few_evaluations_per_tensor_on_large_layers():
    for layer, x in [(Elementwise({}), _normal((4, 5000))),
                     (nnplug.load_registry().get("dense")({"units": 256}), 10 * _normal((4, 256)))]:
        report = nnplug.gradcheck(layer, x, mode="fast", dtype="float32")
        assert report.n_forward <= 2 + 3 * 3 * 6  # three directions per tensor, each at up to three steps


@pytest.mark.parametrize("seed", [1, 3, 4])  # draws with a window whose two largest are 2e-4 to 1e-3 apart
def test_a_max_pool_tie_nearer_than_float32s_step_is_a_kink_not_a_wrong_gradient(seed):
    maxpool = nnplug.load_registry().get("maxpool2d")({"pool_size": 2})
    x = np.random.default_rng(100 + seed).standard_normal((3, 2, 6, 6))
    report = nnplug.gradcheck(maxpool, x, dtype="float32", seed=seed, raise_on_failure=False)
    assert report.kinks and not report.failures, str(report)


def test_a_relu_model_whose_float32_step_crosses_kinks_reports_kinks_not_a_wrong_gradient():
    # a conv weight moved by 1e-2 carries several ReLU inputs across 0: the central difference
    # moves with the step, which a wrong gradient on a smooth function never does
    model = nnplug.Model.from_file(Path(__file__).parent.parent / "examples" / "digits_cnn.yaml")
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((4, 1, 8, 8)), rng.integers(0, 10, 4)
    report = nnplug.gradcheck(model, x, target, dtype="float32", raise_on_failure=False)
    assert report.kinks and not report.failures, str(report)


def test_float64_full_mode_fails_a_relative_mistake_of_5e_5_and_passes_one_of_1e_8():
    # rtol 1e-5 in float64: a relative mistake of 5e-5 on O(1) gradients is out of tolerance,
    # a relative 1e-8 (rounding, not a mistake) within it
    x = _normal((3, 4))
    wrong = nnplug.gradcheck(Elementwise({"fn": "tanh", "wrong": 1 + 5e-5}), x, mode="full",
                             raise_on_failure=False)
    assert wrong.failures and not wrong.ok, str(wrong)
    assert wrong.worst.analytic == pytest.approx((1 + 5e-5) * wrong.worst.numeric, rel=1e-7)
    assert nnplug.gradcheck(Elementwise({"fn": "tanh", "wrong": 1 + 1e-8}), x, mode="full").ok


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_a_layer_whose_gradients_are_all_tiny_is_checked_at_their_scale(mode):
    # y = 1e-6·tanh(x): every gradient is at or below the default atol of 1e-6, which used to
    # pass any mistake; the atol is lowered to rtol × the largest gradient, or to the rounding
    # of the inputs' size (2e-9 here) where that is more
    x = _normal((3, 4))
    correct = nnplug.gradcheck(Elementwise({"scale": 1e-6}), x, mode=mode)
    assert correct.ok and correct.atol_scaled and correct.atol < 1e-8
    assert "(atol scaled to the largest gradient)" in str(correct)
    wrong = nnplug.gradcheck(Elementwise({"scale": 1e-6, "wrong": 1.05}), x, mode=mode, raise_on_failure=False)
    assert wrong.failures, str(wrong)
    # an atol given is the caller's; ordinary gradients keep the default
    assert nnplug.gradcheck(Elementwise({"scale": 1e-6, "wrong": 1.05}), x, mode=mode, atol=1e-6).ok
    assert not nnplug.gradcheck(Elementwise({}), x, mode=mode).atol_scaled


def test_a_gradient_zero_but_for_rounding_keeps_an_atol_above_the_rounding():
    # no window reads the pixel: scipy's FFT correlation still rounds at the inputs' size
    conv = nnplug.load_registry().get("conv2d")({"filters": 1, "kernel_size": [2, 1], "stride": [3, 1],
                                                 "padding": 2, "bias": False, "engine": "scipy"})
    rng = np.random.default_rng(0)
    params = conv.init_params((1, 1, 1), rng)
    report = nnplug.gradcheck(conv, rng.standard_normal((5, 1, 1, 1)), params, mode="fast")
    assert report.ok and report.atol > 1e-10, str(report)


def test_a_square_near_zero_is_a_curve_not_a_kink_in_fast_mode():
    # inputs of 1e-5: every gradient is small, so atol is too, and the one-sided slopes of x²
    # (±h apart) would read as a kink; a tenth of the step shrinks their gap tenfold: a curve
    x = 1e-5 * _normal((3, 4))
    for mode in ("fast", "full"):
        report = nnplug.gradcheck(Elementwise({"fn": "square"}), x, mode=mode)
        assert report.ok and report.atol_scaled and not report.kinks, str(report)


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_a_wrong_zero_gradient_of_small_derivatives_fails(mode):
    # a backward of zeros has no scale to lower atol by: the derivatives measured give it
    x = _normal((3, 4))
    report = nnplug.gradcheck(Elementwise({"scale": 1e-6, "wrong": 0.0}), x, mode=mode, raise_on_failure=False)
    assert report.failures and report.atol_scaled, str(report)
    assert nnplug.gradcheck(Elementwise({"scale": 0.0}), x, mode=mode).ok  # truly flat: still fine


def test_rounding_beside_outputs_of_1e8_is_measured_not_assumed():
    # tanh(x) + 1e8: 8 ulps of 1e8 per term is 20 times the rounding there; nearby steps
    # measure it, and the correct layer passes where it was unresolved; a 1% mistake fails
    for seed in range(6):
        x = np.random.default_rng(seed).standard_normal((2, 5))
        assert nnplug.gradcheck(Elementwise({"offset": 1e8}), x, mode="full", seed=seed).ok
        wrong = nnplug.gradcheck(Elementwise({"offset": 1e8, "wrong": 1.01}), x, mode="full", seed=seed,
                                 raise_on_failure=False)
        assert wrong.failures, str(wrong)


def test_float32_curves_beside_outputs_of_1000_mostly_resolve_and_mistakes_still_fail():
    passed = 0
    for seed in range(10):
        x = np.random.default_rng(seed).standard_normal((2, 5))
        passed += nnplug.gradcheck(Elementwise({"offset": 1000.0}), x, mode="full", dtype="float32", seed=seed,
                                   raise_on_failure=False).ok
        for wrong in (1.05, 0.95):
            report = nnplug.gradcheck(Elementwise({"offset": 1000.0, "wrong": wrong}), x, mode="full",
                                      dtype="float32", seed=seed, raise_on_failure=False)
            assert not report.ok, str(report)
    assert passed >= 5  # (0 of 10 when 8 ulps per term were assumed)
