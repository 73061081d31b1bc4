"""The graph executor: ordering, shape inference, fan-out gradients, and plugins caught misbehaving."""

from __future__ import annotations

import types
from typing import Literal

import numpy as np
import pytest
from fakedist import good_plugin_source
from hypothesis import given
from hypothesis import strategies as st

import nnplug


def mlp(**overrides):
    config = {
        "input": [4],
        "dtype": "float64",
        "seed": 3,
        "layers": [
            {"type": "dense", "units": 5, "name": "hidden"},
            {"type": "tanh"},
            {"type": "dense", "units": 3, "name": "out"},
        ],
        "loss": {"type": "softmax_cross_entropy"},
    }
    config.update(overrides)
    return config


def residual():
    return {
        "input": [6],
        "dtype": "float64",
        "layers": [
            {"type": "dense", "units": 6, "name": "stem"},
            {"type": "tanh", "name": "branch"},
            {"type": "add", "name": "sum", "inputs": ["stem", "branch"]},
            {"type": "dense", "units": 3, "name": "head"},
        ],
        "loss": {"type": "softmax_cross_entropy"},
    }


def plugin_module(source: str, name: str):
    module = types.ModuleType(name)
    exec(compile(source, name, "exec", dont_inherit=True), module.__dict__)
    return module


def test_summary_lists_nodes_shapes_and_parameter_counts():
    model = nnplug.Model.from_config(mlp())
    rows = model.summary_rows()
    assert rows == [
        ("hidden", "dense", "input", "(5,)", 4 * 5 + 5),
        ("tanh_1", "tanh", "hidden", "(5,)", 0),
        ("out", "dense", "tanh_1", "(3,)", 5 * 3 + 3),
    ]
    text = model.summary()
    assert "43 parameters in total" in text and "softmax_cross_entropy" in text


def test_one_seed_gives_the_same_parameters_and_another_seed_different_ones():
    a = nnplug.Model.from_config(mlp())
    b = nnplug.Model.from_config(mlp())
    c = nnplug.Model.from_config(mlp(seed=4))
    np.testing.assert_array_equal(a.params["hidden"]["w"], b.params["hidden"]["w"])
    assert not np.allclose(a.params["hidden"]["w"], c.params["hidden"]["w"])


def test_params_are_cast_once_into_the_model_dtype():
    model = nnplug.Model.from_config(mlp(dtype="float32"))
    assert all(a.dtype == np.float32 for p in model.params.values() for a in p.values())
    _loss, grads = model.loss_and_grads(np.ones((2, 4)), np.array([0, 1]))
    assert all(g.dtype == np.float32 for p in grads.values() for g in p.values())


def test_nodes_listed_out_of_order_are_sorted_topologically():
    config = residual()
    config["layers"] = [config["layers"][i] for i in (0, 2, 1, 3)]  # "sum" before "branch"
    config["layers"][2]["inputs"] = ["stem"]  # "branch" now follows "sum" in the file
    config["layers"][3]["inputs"] = ["sum"]
    model = nnplug.Model.from_config(config)
    order = [n.name for n in model.nodes]
    assert order.index("branch") < order.index("sum")


def test_fan_out_gradients_are_summed():
    model = nnplug.Model.from_config(residual())
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((3, 6)), np.array([0, 2, 1])
    nnplug.gradcheck_model(model, x, t)  # stem feeds both branch and sum

    # Hand derivation: d(sum)/d(stem) = I + diag(1 - tanh²), so dstem = dsum * (2 - tanh²(stem)).
    stem = x @ model.params["stem"]["w"].T + model.params["stem"]["b"]
    dsum = np.ones((3, 6))
    head_w = model.params["head"]["w"]
    expected_dstem = dsum * (1 + (1 - np.tanh(stem) ** 2))
    _, grads = model.loss_and_grads(x, t)
    h = stem + np.tanh(stem)
    logits = h @ head_w.T + model.params["head"]["b"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dlogits = (p - np.eye(3)[t]) / 3
    dstem = (dlogits @ head_w) * (expected_dstem / dsum)
    np.testing.assert_allclose(grads["stem"]["w"], dstem.T @ x, rtol=1e-10)


def test_cycle_is_refused_naming_its_nodes_in_the_direction_data_flows():
    config = residual()
    config["layers"][0]["inputs"] = ["sum"]
    with pytest.raises(nnplug.ConfigError, match=r"^layers\[0\] 'stem' \(dense\): is on a cycle of inputs: "
                                                 r"stem -> sum -> stem \(each feeds the next\)"):
        nnplug.Model.from_config(config)


def test_a_long_cycle_is_named_in_a_message_of_bounded_length():
    ring = [{"type": "relu", "name": f"n{k}", "inputs": [f"n{k - 1}"]} for k in range(1000)]
    ring[0]["inputs"] = ["n999"]
    config = {"input": [3], "layers": [*ring, {"type": "dense", "name": "out", "units": 2, "inputs": ["n5"]}],
              "loss": {"type": "softmax_cross_entropy"}}
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.Model.from_config(config)
    message = str(err.value)
    assert "n0 -> n1 -> " in message and "... 990 more ... -> " in message and "n999 -> n0 " in message
    assert len(message) < 300


def test_unknown_input_is_refused_listing_the_nodes():
    config = residual()
    config["layers"][2]["inputs"] = ["stem", "brnach"]
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.Model.from_config(config)
    assert "layers[2] 'sum' (add) -> inputs: unknown node 'brnach'" in str(err.value)
    assert "branch" in str(err.value)


def test_wrong_number_of_inputs_names_the_node():
    config = residual()
    config["layers"][2]["inputs"] = ["stem"]
    with pytest.raises(nnplug.ConfigError, match=r"layers\[2\] 'sum' \(add\) -> inputs: add takes 2"):
        nnplug.Model.from_config(config)


def test_shape_error_names_node_and_the_node_that_produced_its_input():
    config = residual()
    config["layers"][1] = {"type": "dense", "units": 5, "name": "branch"}
    with pytest.raises(nnplug.ShapeError) as err:
        nnplug.Model.from_config(config)
    message = str(err.value)
    assert "layers[2] 'sum' (add)" in message
    assert "(6,) from 'stem'" in message and "(5,) from 'branch'" in message


def test_all_config_errors_are_reported_at_once():
    config = mlp()
    config["layers"][0]["units"] = "5"
    config["layers"][2]["bias"] = 1
    config["layers"].append({"type": "dnse"})
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.Model.from_config(config)
    problems = err.value.problems
    assert any(p.startswith("layers[0] (dense) -> units:") for p in problems)
    assert any(p.startswith("layers[2] (dense) -> bias:") for p in problems)
    assert any("layers[3]" in p and "did you mean 'dense'" in p for p in problems)


def test_a_node_with_bad_fields_still_has_its_inputs_checked_and_so_has_the_loss():
    config = mlp()
    config["layers"][0].update(units=0, name="hidden")
    config["layers"][2]["inputs"] = ["hiden"]
    config["loss"]["inputs"] = ["nowhere"]
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.Model.from_config(config)
    problems = err.value.problems
    assert problems[0].startswith("layers[0] (dense) -> units:")
    assert "inputs: unknown node 'hiden' (did you mean 'hidden'?)" in problems[1]
    assert problems[2].startswith("loss (softmax_cross_entropy) -> inputs: unknown node 'nowhere'")
    assert len(problems) == 3


@pytest.mark.parametrize("broken", [{"type": "relu", "name": 5}, {"type": "rellu"}])
def test_a_broken_nodes_stand_in_name_clashes_with_nothing(broken):
    config = mlp()
    config["layers"] = [{"type": "relu", "name": f"{broken['type']}_1"}, broken, {"type": "dense", "units": 3}]
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.Model.from_config(config)
    assert len(err.value.problems) == 1 and "already used" not in err.value.problems[0]


def test_unknown_inputs_in_a_huge_file_give_messages_of_bounded_length():
    layers = [{"type": "relu", "name": f"n{k}", "inputs": [f"missing{k}"]} for k in range(3000)]
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.Model.from_config({"input": [3], "layers": layers, "loss": {"type": "mse"}})
    problems = err.value.problems
    assert len(problems) == 3000 and max(map(len, problems)) < 400
    assert problems[0].endswith("... (3000 in all)") and problems[-1].endswith("unknown node 'missing2999'")


def test_inputs_that_are_not_names_are_one_problem_not_two():
    config = mlp()
    config["layers"][1]["inputs"] = [0]
    with pytest.raises(nnplug.ConfigError) as err:
        nnplug.Model.from_config(config)
    assert err.value.problems == ["layers[1] (tanh) -> inputs.0: Input should be a valid string (got 0)"]


def test_inference_keeps_no_caches_and_matches_training_forward():
    model = nnplug.Model.from_config(mlp())
    x = np.random.default_rng(1).standard_normal((5, 4))
    y = model.forward(x)
    assert y.shape == (5, 3)
    loss, _ = model.loss_and_grads(x, np.zeros(5, dtype=int))
    value, _ = model.loss.forward(y, np.zeros(5, dtype=int))
    assert loss == pytest.approx(value)


def test_input_of_the_wrong_shape_is_a_shape_error():
    model = nnplug.Model.from_config(mlp())
    with pytest.raises(nnplug.ShapeError, match=r"expected shape \(N, 4\), got \(2, 5\)"):
        model.forward(np.zeros((2, 5)))


SHAPE_LIAR = good_plugin_source("liar").replace("return 2 * x, None", "return 2 * x[:, :1], None")
BACKWARD_LIAR = good_plugin_source("backliar").replace("return 2 * dy, {}", "return 2 * dy[:, :1], {}")
UPCASTER = good_plugin_source("upcaster").replace("return 2 * x, None", "return 2.0 * x.astype('float64'), None")
BARE = good_plugin_source("bare").replace("return 2 * dy, {}", "return 2 * dy")
RAISER = good_plugin_source("raiser").replace("return 2 * x, None", "raise IndexError('oops')")
INPUT_EDITOR = good_plugin_source("inputeditor").replace("return 2 * x, None", "x *= 2\n        return x.copy(), None")
DY_EDITOR = good_plugin_source("dyeditor").replace("return 2 * dy, {}", "dy *= 2\n        return dy.copy(), {}")


@pytest.mark.parametrize(
    "source,type_name,phrase",
    [
        (SHAPE_LIAR, "liar", "forward returned (2, 1), expected (2, 4)"),
        (BACKWARD_LIAR, "backliar", "input gradient 0 of shape (2, 1), expected (2, 4)"),
        (UPCASTER, "upcaster", "forward returned dtype float64 in a float32 model"),
        (RAISER, "raiser", "forward raised IndexError: oops"),
        (BARE, "bare", "backward returned ndarray, expected a pair (dx, {name: gradient})"),
        # editing what it was given would corrupt every other reader of that array, silently
        (INPUT_EDITOR, "inputeditor", "forward raised ValueError: output array is read-only; the contract "
                                      "forbids editing inputs, params or dy: return new arrays"),
        (DY_EDITOR, "dyeditor", "backward raised ValueError: output array is read-only; the contract"),
    ],
)
def test_misbehaving_plugin_is_named_with_its_node(source, type_name, phrase):
    module = plugin_module(source, f"plugin_{type_name}")
    registry = nnplug.Registry(plugins=[module])
    config = {
        "input": [4],
        # after a dense layer, so that its input gradient is needed
        "layers": [{"type": "dense", "units": 4}, {"type": type_name, "name": "suspect"},
                   {"type": "dense", "units": 2}],
        "loss": {"type": "softmax_cross_entropy"},
    }
    model = nnplug.Model.from_config(config, registry)
    with pytest.raises(nnplug.PluginError) as err:
        model.loss_and_grads(np.ones((2, 4)), np.array([0, 1]))
    message = str(err.value)
    assert f"node 'suspect' ({type_name}, plugin 'plugin_{type_name}')" in message
    assert phrase in message


def test_a_layer_editing_its_weights_in_place_is_stopped_and_the_weights_stay():
    from nnplug_layers.dense import Dense, DenseConfig

    class DecayConfig(DenseConfig):
        type: Literal["decaying_dense"] = "decaying_dense"

    class DecayingDense(Dense):  # "inference-time decay": it would drift the model's weights
        Config = DecayConfig

        def forward(self, params, x, *, training):
            params["w"] *= 0.99
            return super().forward(params, x, training=training)

    class Plugin:
        @staticmethod
        @nnplug.hookimpl
        def nnplug_register_layers():
            return [DecayingDense]

    registry = nnplug.Registry(plugins=["nnplug_layers", Plugin])
    model = nnplug.Model.from_config({**mlp(), "layers": [{"type": "decaying_dense", "units": 3, "name": "d"}]},
                                     registry)
    before = model.params["d"]["w"].copy()
    with pytest.raises(nnplug.PluginError, match=r"node 'd' \(decaying_dense, plugin 'Plugin'\): forward raised "
                                                 r"ValueError: .*read-only; the contract forbids editing"):
        model.forward(np.ones((2, 4)))
    np.testing.assert_array_equal(model.params["d"]["w"], before)


ONE_DX_FOR_TWO = """
from typing import Literal
import nnplug

class SumConfig(nnplug.LayerConfig):
    type: Literal["onedx_sum"] = "onedx_sum"

class Sum(nnplug.Layer):
    Config = SumConfig
    n_inputs = 2
    def output_shape(self, in_shapes):
        return in_shapes[0]
    def forward(self, params, xs, *, training):
        return xs[0] + xs[1], None
    def backward(self, params, cache, dy):
        return dy.copy(), {}  # one array for two inputs

@nnplug.hookimpl
def nnplug_register_layers():
    return [Sum]
"""


def test_a_bare_exception_from_a_plugin_is_quoted_without_a_dangling_colon():
    source = good_plugin_source("unfinished").replace("return 2 * x, None", "raise NotImplementedError")
    registry = nnplug.Registry(plugins=[plugin_module(source, "unfinished")])
    model = nnplug.Model.from_config({"input": [3], "layers": [{"type": "unfinished", "name": "u"}],
                                      "loss": {"type": "mse"}}, registry)
    with pytest.raises(nnplug.PluginError) as err:
        model.forward(np.ones((2, 3)))
    assert str(err.value).endswith("forward raised NotImplementedError")


def test_one_input_gradient_for_a_two_input_layer_is_named_not_split_by_rows():
    registry = nnplug.Registry(plugins=[plugin_module(ONE_DX_FOR_TWO, "onedx")])
    model = nnplug.Model.from_config({"input": [3], "layers": [
        {"type": "dense", "units": 3, "name": "a"}, {"type": "dense", "units": 3, "name": "b", "inputs": ["input"]},
        {"type": "onedx_sum", "name": "s", "inputs": ["a", "b"]}], "loss": {"type": "mse"}}, registry)
    # with a batch of 2 the rows of dy used to pass for two gradients of the wrong shape
    with pytest.raises(nnplug.PluginError, match=r"node 's' .*backward returned ndarray as dx, expected a tuple of 2"):
        model.loss_and_grads(np.ones((2, 3)), np.ones((2, 3)))


SHIFT = """
from typing import Literal
import numpy as np
import nnplug

class ShiftConfig(nnplug.LayerConfig):
    type: Literal["shift"] = "shift"

class Shift(nnplug.Layer):
    Config = ShiftConfig
    def output_shape(self, in_shape):
        return in_shape
    def init_params(self, in_shape, rng):
        return {"w": rng.standard_normal(in_shape), "b": rng.standard_normal(in_shape)}
    def forward(self, params, x, *, training):
        return x * params["w"] + params["b"], x
    def backward(self, params, cache, dy):
        return dy * params["w"], {"w": (dy * cache).sum(0), "b": dy.sum(0)}

@nnplug.hookimpl
def nnplug_register_layers():
    return [Shift]
"""


def test_params_given_under_other_names_are_used_by_name():
    # two params of one shape, the same arrays handed back swapped: a cache keyed by the
    # arrays alone used to keep the first mapping
    registry = nnplug.Registry(plugins=[plugin_module(SHIFT, "shift")])
    model = nnplug.Model.from_config({"input": [2], "layers": [{"type": "shift", "name": "s"}],
                                      "loss": {"type": "mse"}, "dtype": "float64"}, registry)
    w, b = model.params["s"]["w"], model.params["s"]["b"]
    x = np.full((1, 2), 2.0)
    model.forward(x)
    np.testing.assert_allclose(model.forward(x, {"s": {"b": w, "w": b}}), x * b + w)


def test_the_callers_input_is_untouched_and_the_output_is_the_callers_to_edit():
    model = nnplug.Model.from_config({"input": [2, 2], "dtype": "float64", "layers": [{"type": "flatten"}],
                                      "loss": {"type": "mse"}})
    x = np.arange(8.0).reshape(2, 2, 2)
    y = model.forward(x)  # flatten's output is a view of what it was given
    y[...] = 0
    np.testing.assert_array_equal(x, np.arange(8.0).reshape(2, 2, 2))
    dense = nnplug.Model.from_config(mlp())
    _, _, dx = dense.loss_and_all_grads(np.ones((2, 4)), np.array([0, 1]))
    out = dense.forward(np.ones((2, 4)))
    out[...] = 0  # what the caller is handed is theirs to edit, though the nodes saw it read-only
    dx[...] = 0


def test_non_finite_loss_names_the_first_node_that_went_non_finite():
    model = nnplug.Model.from_config(mlp())
    model.params["out"]["w"][0, 0] = np.inf
    with pytest.raises(nnplug.NumericalError, match="node 'out'"):
        model.loss_and_grads(np.ones((2, 4)), np.array([0, 1]))


@pytest.mark.parametrize(("x", "target", "message"), [
    (np.full((2, 4), np.nan), np.array([0, 1]), "the model input holds NaN or infinite values"),
])
def test_a_non_finite_input_is_named_before_any_node(x, target, message):
    with pytest.raises(nnplug.NumericalError, match=message):
        nnplug.Model.from_config(mlp()).loss_and_grads(x, target)


def test_a_non_finite_target_is_named_not_blamed_on_the_loss():
    model = nnplug.Model.from_config({**mlp(), "loss": {"type": "mse"}})
    with pytest.raises(nnplug.NumericalError, match="the target holds NaN or infinite values"):
        model.loss_and_grads(np.ones((2, 4)), np.full((2, 3), np.nan))


def _with(params, node, name, value):
    return {n: {**p, **({name: value} if n == node else {})} for n, p in params.items()}


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: _with(p, "out", "b", np.zeros(1)), r"params\['out'\]\['b'\] \(dense\): shape \(1,\), expected \(3,\)"),
    (lambda p: {**p, "out": {"w": p["out"]["w"]}}, r"params\['out'\] \(dense\): holds \['w'\], expected \['b', 'w'\]"),
    (lambda p: _with(p, "hidden", "w", p["hidden"]["w"] + 0j), "expected an array of real numbers, got complex"),
    (lambda p: _with(p, "hidden", "w", p["hidden"]["w"].tolist()), "expected an array of real numbers, got list"),
    (lambda p: [p], r"params: expected \{node: \{name: array\}\}, got list"),
    (lambda p: {**p, "otu": p["out"]}, r"params: no node named 'otu' in this model; nodes: hidden, tanh_1, out"),
    # a layer without parameters used to ignore those it was handed
    (lambda p: {**p, "tanh_1": {"w": np.zeros(3)}}, r"params\['tanh_1'\] \(tanh\): holds \['w'\], expected \[\]"),
])
def test_params_that_do_not_fit_the_model_are_named_not_blamed_on_the_plugin(change, message):
    # b of shape (1,) used to broadcast silently in forward, then fail in backward as the plugin's fault
    model = nnplug.Model.from_config(mlp())
    bad = change(model.params)
    with pytest.raises(nnplug.ShapeError, match=message):
        model.forward(np.ones((2, 4)), bad)
    with pytest.raises(nnplug.ShapeError, match=message):
        model.loss_and_grads(np.ones((2, 4)), np.array([0, 1]), bad)


def test_params_of_another_float_dtype_are_cast_like_inputs():
    single = nnplug.Model.from_config({**mlp(), "dtype": "float32"})
    doubled = {n: {k: v.astype(np.float64) for k, v in p.items()} for n, p in single.params.items()}
    y = single.forward(np.ones((2, 4)), doubled)
    assert y.dtype == np.float32 and np.array_equal(y, single.forward(np.ones((2, 4))))


@pytest.mark.parametrize(("x", "message"), [
    (np.zeros((0, 4)), r"the batch is empty \(shape \(0, 4\)\)"),
    ([[1, 2, 3, 4], [1, 2]], "model input: not an array"),
])
def test_an_empty_batch_or_a_ragged_list_is_a_shape_error(x, message):
    with pytest.raises(nnplug.ShapeError, match=message):
        nnplug.Model.from_config(mlp()).forward(x)


@pytest.mark.parametrize("dtype", [int, "float16", "complex128", "bogus"])
def test_astype_keeps_a_model_float32_or_float64(dtype):
    # astype(int) used to truncate every weight to 0 and return zeros
    with pytest.raises(nnplug.ConfigError, match="a model is float32 or float64"):
        nnplug.Model.from_config(mlp()).astype(dtype)


def test_an_output_too_large_for_any_machine_is_refused_at_build():
    config = {"input": [1, 4, 4], "layers": [{"type": "conv2d", "filters": 1, "kernel_size": 2,
                                              "padding": 10**6}, {"type": "global_avgpool"},
                         {"type": "dense", "units": 2}],
              "loss": {"type": "softmax_cross_entropy"}}
    with pytest.raises(nnplug.ShapeError, match=r"layers\[0\] 'conv2d_0' \(conv2d\): its output .* values per example"):
        nnplug.Model.from_config(config)


def test_a_huge_output_is_blamed_on_its_node_not_on_the_dense_layer_it_swells():
    config = {"input": [1, 4, 4], "layers": [{"type": "conv2d", "filters": 1, "kernel_size": 2,
                                              "padding": 10**5}, {"type": "flatten"}, {"type": "dense", "units": 2}],
              "loss": {"type": "softmax_cross_entropy"}}
    with pytest.raises(nnplug.ShapeError, match=r"layers\[0\] 'conv2d_0' \(conv2d\): its output .* values per example"):
        nnplug.Model.from_config(config)


def test_parameter_budget_is_checked_before_allocation():
    config = mlp()
    config["layers"][0]["units"] = 10**9
    with pytest.raises(nnplug.ShapeError, match="parameters, more than the budget"):
        nnplug.Model.from_config(config)


def test_astype_copies_weights_into_another_dtype():
    model = nnplug.Model.from_config(mlp())
    single = model.astype("float32")
    assert single.params["out"]["w"].dtype == np.float32
    np.testing.assert_allclose(single.params["out"]["w"], model.params["out"]["w"], rtol=1e-6)
    assert model.params["out"]["w"].dtype == np.float64


class _Scale(nnplug.Layer):
    """y = s·x with one parameter s; backward refuses to run when ``strict`` (a spy)."""

    class Config(nnplug.LayerConfig):
        type: Literal["spy_scale"] = "spy_scale"
        strict: bool = False

    def output_shape(self, in_shape):
        return in_shape

    def init_params(self, in_shape, rng):
        return {"s": np.ones(1)}

    def forward(self, params, x, *, training):
        return params["s"] * x, x

    def backward(self, params, cache, dy):
        if self.config.strict:
            raise RuntimeError("input gradient computed")
        return params["s"] * dy, self.param_grads(params, cache, dy)

    def param_grads(self, params, cache, dy):
        return {"s": np.array([np.sum(dy * cache)], dtype=dy.dtype)}


def spy_model(strict: bool) -> nnplug.Model:
    module = types.ModuleType("spy_plugin")
    module.nnplug_register_layers = nnplug.hookimpl(lambda: [_Scale])  # type: ignore[attr-defined]
    registry = nnplug.Registry(plugins=[module])
    config = {"input": [3], "layers": [{"type": "spy_scale", "strict": strict}, {"type": "dense", "units": 2}],
              "loss": {"type": "softmax_cross_entropy"}}
    return nnplug.Model.from_config(config, registry)


def test_training_gradients_skip_the_input_gradient_of_layers_reading_the_input():
    x, labels = np.random.default_rng(0).standard_normal((4, 3)), np.array([0, 1, 1, 0])
    loss, grads = spy_model(strict=True).loss_and_grads(x, labels)  # backward would raise
    with pytest.raises(nnplug.PluginError, match="input gradient computed"):
        spy_model(strict=True).loss_and_all_grads(x, labels)
    loss_all, grads_all, _ = spy_model(strict=False).loss_and_all_grads(x, labels)
    assert loss == loss_all
    for node, own in grads_all.items():
        for name, g in own.items():
            np.testing.assert_array_equal(grads[node][name], g)


def test_conv_net_parameter_gradients_agree_with_and_without_the_input_gradient():
    config = {"input": [2, 9, 9], "dtype": "float64", "layers": [
        {"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": 1},
        {"type": "relu"}, {"type": "flatten"}, {"type": "dense", "units": 4}],
        "loss": {"type": "softmax_cross_entropy"}}
    model = nnplug.Model.from_config(config)
    x, labels = np.random.default_rng(1).standard_normal((5, 2, 9, 9)), np.array([0, 1, 2, 3, 0])
    _, grads = model.loss_and_grads(x, labels)
    _, grads_all, _ = model.loss_and_all_grads(x, labels)
    for node, own in grads_all.items():
        for name, g in own.items():
            np.testing.assert_allclose(grads[node][name], g, rtol=1e-12, atol=1e-14)


def _earliest_ready_first(nodes: list[types.SimpleNamespace]) -> list[str]:
    """The reference: repeatedly take the earliest node of the file whose inputs are all placed."""
    done, order, pending = {"input"}, [], list(nodes)
    while pending:
        ready = next(n for n in pending if all(i in done for i in n.inputs))
        order.append(ready.name)
        done.add(ready.name)
        pending.remove(ready)
    return order


@given(st.data())
def test_topological_order_places_the_earliest_ready_node_of_the_file(data: st.DataObject) -> None:
    from nnplug.build import topological_order

    n = data.draw(st.integers(1, 12))
    rank = data.draw(st.permutations(range(n)))  # a hidden order the edges respect: a DAG
    nodes = []
    for k in range(n):
        earlier = [f"n{j}" for j in range(n) if rank[j] < rank[k]] + ["input"]
        inputs = data.draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=3))  # repeats allowed
        nodes.append(types.SimpleNamespace(name=f"n{k}", inputs=tuple(inputs)))
    order = [node.name for node in topological_order(types.SimpleNamespace(nodes=nodes))]
    assert order == _earliest_ready_first(nodes)


def test_a_file_already_in_order_keeps_its_order_in_the_summary():
    config = {"input": [6], "layers": [  # level by level would list h2 before r1
        {"type": "dense", "name": "h1", "units": 4, "inputs": ["input"]},
        {"type": "relu", "name": "r1"},
        {"type": "dense", "name": "h2", "units": 4, "inputs": ["input"]},
        {"type": "concat", "name": "cat", "inputs": ["r1", "h2"]},
        {"type": "dense", "name": "logits", "units": 3}],
        "loss": {"type": "softmax_cross_entropy"}}
    model = nnplug.Model.from_config(config)
    assert [n.name for n in model.nodes] == ["h1", "r1", "h2", "cat", "logits"]
    rows = [line.split()[0] for line in model.summary().splitlines()[2:7]]
    assert rows == ["h1", "r1", "h2", "cat", "logits"]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: nnplug.Model.from_config(mlp(), "nnplug_layers"), "registry: expected an nnplug.Registry"),
    (lambda: nnplug.Model.from_file(None), "from_file: expected a path to a model file, got NoneType"),
    (lambda: nnplug.Model.from_config({**mlp(), "dtype": np.array(["float32", "float64"])}),
     "dtype: expected 'float32' or 'float64'"),
    (lambda: nnplug.load_registry().get(["dense"]), r"a type name is a string, got list \['dense'\]"),
])
def test_wrong_kinds_of_arguments_are_named_not_raw_type_errors(call, message):
    with pytest.raises(nnplug.NnplugError, match=message):
        call()
    assert [] not in nnplug.load_registry()  # membership of a non-name is just False
