"""nnplug.testing's helpers: Case, the strategies plugin authors reuse, the pytest helpers and
the opt-in pytest plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnplug
from nnplug import testing
from nnplug.testing import Case

REGISTRY = nnplug.load_registry()

test_relu_in_one_line = testing.layer_test("relu")
test_mse_in_one_line = testing.layer_test("mse")


def test_layer_test_is_named_after_the_type_and_runs_under_hypothesis():
    test = testing.layer_test("dense")
    assert test.__name__ == "test_dense_keeps_layer_contract"
    assert hasattr(test, "hypothesis")
    test()


def test_layer_test_can_take_the_authors_own_settings():
    from hypothesis import settings

    test = settings(max_examples=2)(testing.layer_test("dense"))  # a profile without the stock deadline
    test()


@pytest.mark.parametrize("make", [lambda s: testing.layer_test("dense", settings=s),
                                  lambda s: testing.all_layers_test(REGISTRY, types=["dense"], settings=s)])
def test_helpers_take_settings_and_still_lift_the_stock_deadline(make):
    from hypothesis import settings

    # hypothesis's stock deadline, as a plugin author's default profile has it: an @settings
    # on the returned test would be refused (it already carries one), settings= is not.
    test = make(settings(max_examples=2, deadline=200))
    used = test._hypothesis_internal_use_settings
    assert used.max_examples == 2 and used.deadline is None
    with pytest.raises(Exception, match="already been decorated"):
        settings(max_examples=3)(test)


@pytest.mark.parametrize("make", [lambda s: testing.layer_test("dense", settings=s),
                                  lambda s: testing.all_layers_test(REGISTRY, types=["dense"], settings=s)])
def test_helpers_that_carry_settings_anyway_skip_hypothesis_explain_phase(make):
    # a decorated test takes no @settings of the author's, so explain buys nothing there; it
    # cost a plugin author 7 s per failing type to point at lines inside nnplug
    from hypothesis import Phase, settings

    used = make(settings(max_examples=2, deadline=200))._hypothesis_internal_use_settings
    assert Phase.explain not in used.phases and Phase.shrink in used.phases


def test_the_pytest_plugins_check_skips_hypothesis_explain_phase():
    # explain re-runs a failing gradient check dozens of times to say what the message says
    from hypothesis import Phase, settings

    from nnplug import _pytest_checks

    assert Phase.explain in settings.default.phases  # the loaded profile (ci or dev) has it
    used = getattr(_pytest_checks.test_layer_keeps_the_contract, "_hypothesis_internal_use_settings", None)
    assert used is not None and Phase.explain not in used.phases and Phase.shrink in used.phases


# -- Case and the strategies -----------------------------------------------------------------


def test_case_normalises_shapes_and_its_repr_pastes_back():
    case = Case({"units": 2}, [[np.int64(3)]], values="off_zero")
    assert case.in_shapes == ((3,),)
    assert eval(repr(case), {"Case": Case}) == case


@pytest.mark.parametrize("bad", [(), ((0, 2),), ("3",), ((2.5,),), ((True,),)])
def test_case_refuses_shapes_that_are_not_positive_int_tuples(bad):
    with pytest.raises(nnplug.ConfigError, match="in_shapes"):
        Case({}, bad)


def test_case_refuses_an_unknown_value_kind():
    with pytest.raises(nnplug.ConfigError, match="available: distinct, normal, off_zero"):
        Case({}, ((2,),), values="uniform")


@given(testing.conv_geometry())
def test_conv_geometry_always_holds_a_window(g):
    (c, h, w), (kh, kw), (sh, sw), (ph, pw) = g.in_shape, g.kernel, g.stride, g.padding
    assert c >= 1 and h + 2 * ph >= kh and w + 2 * pw >= kw
    assert g.out_hw == ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
    assert min(g.out_hw) >= 1
    assert g.config()["kernel_size"] == [kh, kw]


@given(testing.pool_geometry())
def test_pool_geometry_pads_at_most_half_a_window(g):
    assert all(p <= k // 2 for p, k in zip(g.padding, g.kernel))
    assert min(g.out_hw) >= 1 and g.config("pool_size")["pool_size"] == list(g.kernel)


@given(st.data())
def test_off_zero_and_distinct_arrays_stay_off_kinks(data):
    shape = data.draw(testing.shapes(max_dims=2))
    away = data.draw(testing.arrays(shape, "off_zero"))
    assert away.shape == shape and np.all(np.abs(away) >= testing.KINK_MARGIN)
    spread = np.sort(data.draw(testing.arrays(shape, "distinct")).ravel())
    assert np.all(np.diff(spread) >= 4.0 / spread.size - 1e-12)
    # a max of |x| must not tie either (-0.8 beside 0.8 did), nor an |x| sit at its kink
    magnitudes = np.sort(np.abs(spread))
    assert magnitudes[0] > 0 and np.all(np.diff(magnitudes) >= 1.0 / spread.size)


@pytest.mark.parametrize("size", [2, 7, 64, 1000])
def test_drawn_distinct_values_have_distinct_magnitudes_none_zero(size):
    values = testing.draw_values("distinct", (size,), np.random.default_rng(size))
    assert len(np.unique(values)) == size and len(np.unique(np.abs(values))) == size and np.all(values != 0)


@given(st.integers(1, 6), st.integers(2, 5), st.data())
def test_labels_and_one_hot_targets_fit_softmax_cross_entropy(n, k, data):
    labels = data.draw(testing.labels(n, k))
    assert labels.shape == (n,) and labels.min() >= 0 and labels.max() < k
    onehot = data.draw(testing.one_hot(n, k))
    np.testing.assert_allclose(onehot.sum(axis=1), 1.0)
    loss = REGISTRY.get("softmax_cross_entropy")()
    pred = np.zeros((n, k))
    assert np.isfinite(loss.forward(pred, labels)[0]) and np.isfinite(loss.forward(pred, onehot)[0])


def test_draw_values_refuses_an_unknown_kind():
    with pytest.raises(nnplug.ConfigError, match="unknown value kind"):
        testing.draw_values("lumpy", (2,), np.random.default_rng(0))


def test_checkable_types_splits_by_gradcheck_cases():
    with_cases, without = testing.checkable_types(REGISTRY)
    assert {"dense", "relu", "mse", "softmax_cross_entropy"} <= set(with_cases)
    assert set(with_cases) | set(without) == set(REGISTRY.types)


# -- the opt-in pytest plugin ----------------------------------------------------------------


def _pytest(tmp_path, *args):
    (tmp_path / "conftest.py").write_text(  # the caller's profile decides the number of examples
        "from hypothesis import settings\n"
        "settings.register_profile('quick', max_examples=5)\n"
        "settings.load_profile('quick')\n"
    )
    (tmp_path / "test_user.py").write_text(
        "import sys\n"
        "def test_user_code_sees_no_registry():\n"
        "    assert 'nnplug_layers' not in sys.modules\n"
    )
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "nnplug.pytest_plugin", "-p", "no:cacheprovider",
                           "-q", *args], capture_output=True, text=True, cwd=tmp_path)


def test_pytest_plugin_checks_the_named_types_only(tmp_path):
    result = _pytest(tmp_path, "--nnplug-layers", "relu,mse", "--nnplug-mode", "fast")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_pytest_plugin_changes_nothing_without_its_option(tmp_path):
    result = _pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_pytest_plugin_refuses_an_unknown_type_as_a_usage_error(tmp_path):
    result = _pytest(tmp_path, "--nnplug-layers", "relux")
    assert result.returncode == 4
    assert "--nnplug-layers: unknown type 'relux'" in result.stderr and "did you mean 'relu'" in result.stderr


def test_pytest_plugin_runs_the_named_types_beside_the_given_paths(tmp_path):
    (tmp_path / "test_mine.py").write_text("def test_mine():\n    pass\n")
    result = _pytest(tmp_path, "--nnplug-layers=relu", "--nnplug-mode", "fast", "test_mine.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout  # the relu check and the user's test


def test_pytest_plugin_says_a_path_after_the_bare_option_was_taken_as_type_names(tmp_path):
    (tmp_path / "tests").mkdir()
    result = _pytest(tmp_path, "--nnplug-layers", "tests")
    assert result.returncode == 4
    assert "'tests' is not a layer type; did you mean to pass it as a path?" in result.stderr
    assert "--nnplug-layers=NAMES" in result.stderr


def test_pytest_plugin_node_ids_name_the_checks_module_outside_the_rootdir(tmp_path):
    result = _pytest(tmp_path, "--nnplug-layers=relu", "--collect-only")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nnplug/_pytest_checks.py::test_layer_keeps_the_contract[relu]" in result.stdout.splitlines()


_PLAIN_ENV = {"PATH", "HOME", "TMPDIR", "LANG", "VIRTUAL_ENV", "SYSTEMROOT"}


@pytest.mark.parametrize("on_ci", [False, True], ids=["local", "ci"])
def test_a_failing_layer_test_offers_no_patch_to_nnplugs_own_source(tmp_path, on_ci):
    # hypothesis's pytest plugin offers `git apply` of a patch adding @example to the failing
    # test function: for layer_test that function is nnplug's, not the user's file. On CI
    # (CI=true) hypothesis loads its own ci profile, whose explain phase prints the draws its own way.
    tests_dir = Path(__file__).parent
    (tmp_path / "test_bug.py").write_text(
        f"import sys\nsys.path.insert(0, {str(tests_dir)!r})\n"
        "import buggy_layers\nimport nnplug.testing\n"
        "test_bug = nnplug.testing.layer_test('buggy_relu_mask_ge', plugins=[buggy_layers])\n"
    )
    # Only what Python and pytest need: hypothesis takes many CI services' variables
    # (GITHUB_ACTIONS, GITLAB_CI, ...) as CI, so removing CI alone would not make it local.
    env = {k: v for k, v in os.environ.items() if k in _PLAIN_ENV or k.startswith(("LC_", "PYTHON"))}
    if on_ci:
        env["CI"] = "true"
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_bug.py"],
                            capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    # the failing case is still shown: in the error, and as hypothesis's draw
    assert "config {}, input shapes ((1,),)" in result.stdout
    assert "Draw 1 (case): " in result.stdout
    assert "git apply" not in result.stdout and not (tmp_path / ".hypothesis" / "patches").exists()


class _SumTwoConfig(nnplug.LayerConfig):
    type: Literal["sum_two"] = "sum_two"


class _StackedDx(nnplug.Layer):
    """y = a + b, whose backward returns both input gradients stacked in one array."""

    Config = _SumTwoConfig
    n_inputs = 2

    def output_shape(self, in_shape):
        return in_shape[0]

    def forward(self, params, x, *, training):
        return x[0] + x[1], None

    def backward(self, params, cache, dy):
        return np.stack([dy, dy]), {}


def test_a_stacked_array_for_several_input_gradients_is_named_as_such():
    # len(stack) == 2 == n_inputs, so the message used to read "returned 1 input gradients for 2 inputs"
    with pytest.raises(testing.ConformanceError, match=r"returned ndarray as dx, expected a tuple of 2 input"):
        testing.check_layer(_StackedDx, Case({}, ((3,), (3,))), seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3))
    with pytest.raises(nnplug.PluginError, match=r"returned ndarray as dx, expected a tuple of 2 input"):
        nnplug.gradcheck(_StackedDx(), (x, x.copy()))


class _OneDx(_StackedDx):
    def backward(self, params, cache, dy):
        return (dy,), {}


def test_a_tuple_of_too_few_input_gradients_says_how_many():
    x = np.random.default_rng(0).standard_normal((2, 3))
    with pytest.raises(nnplug.PluginError, match=r"returned 1 input gradients, expected a tuple of 2"):
        nnplug.gradcheck(_OneDx(), (x, x.copy()))  # read "returned tuple as dx, expected a tuple"
