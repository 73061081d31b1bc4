"""Closed-form references from the backprop derivation, for dense, activations and the losses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

import nnplug
from nnplug.testing import draw_values

REGISTRY = nnplug.load_registry()
BUILTIN = [t for t in REGISTRY.types if REGISTRY.plugin_of(t).name == "nnplug_layers"]


def layer(type_name, **config):
    return REGISTRY.get(type_name)(config)


def test_dense_gradients_are_delta_transpose_a_and_the_batch_sum():
    rng = np.random.default_rng(0)
    a, delta = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    dense = layer("dense", units=4)
    params = dense.init_params((3,), rng)
    y, cache = dense.forward(params, a, training=True)
    np.testing.assert_allclose(y, a @ params["w"].T + params["b"])
    dx, grads = dense.backward(params, cache, delta)
    np.testing.assert_allclose(grads["w"], delta.T @ a)  # ∂L/∂W = δᵀA
    np.testing.assert_allclose(grads["b"], delta.sum(axis=0))  # ∂L/∂b = Σδ
    np.testing.assert_allclose(dx, delta @ params["w"])


def test_dense_weight_layout_is_pytorch_linear():
    dense = layer("dense", units=7)
    assert dense.param_shapes((3,)) == {"w": (7, 3), "b": (7,)}
    assert {k: v.shape for k, v in dense.init_params((3,), np.random.default_rng(0)).items()} == {
        "w": (7, 3), "b": (7,)}


def test_dense_called_directly_keeps_a_float32_input_float32():
    rng = np.random.default_rng(0)
    dense = layer("dense", units=4)
    params = dense.init_params((3,), rng)  # float64, as init_params draws them
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y, cache = dense.forward(params, x, training=True)
    dx, grads = dense.backward(params, cache, np.ones_like(y))
    assert y.dtype == dx.dtype == grads["w"].dtype == grads["b"].dtype == np.float32
    np.testing.assert_allclose(y, x @ params["w"].T + params["b"], rtol=1e-5)
    # integer inputs keep float weights: float results, not weights truncated to integers
    ints = np.arange(6).reshape(2, 3)
    np.testing.assert_allclose(dense.forward(params, ints, training=False)[0], ints @ params["w"].T + params["b"])


def test_softmax_cross_entropy_gradient_is_softmax_minus_onehot_over_n():
    rng = np.random.default_rng(1)
    z, labels = rng.standard_normal((6, 4)), np.array([0, 3, 1, 1, 2, 0])
    loss = layer("softmax_cross_entropy")
    value, cache = loss.forward(z, labels)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    onehot = np.eye(4)[labels]
    assert value == pytest.approx(-np.mean(np.log(p[np.arange(6), labels])))
    np.testing.assert_allclose(loss.backward(cache), (p - onehot) / 6)
    value_onehot, cache_onehot = loss.forward(z, onehot)
    assert value_onehot == pytest.approx(value)
    np.testing.assert_allclose(loss.backward(cache_onehot), (p - onehot) / 6)


def test_softmax_cross_entropy_stays_finite_for_huge_logits():
    loss = layer("softmax_cross_entropy")
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=np.float32)
    value, cache = loss.forward(z, np.array([1, 0]))
    assert np.isfinite(value) and value == pytest.approx((2e4 + 2e4 + np.log(2)) / 2, rel=1e-5)
    grad = loss.backward(cache)
    assert np.isfinite(grad).all() and grad.dtype == np.float32


@pytest.mark.parametrize(("z", "labels", "expected"), [
    (np.array([[3e38, -3e38]], dtype=np.float32), [0], 0.0),  # the spread overflows float32
    (np.array([[-1e308, 1e308]]), [1], 0.0),  # ... and float64
    (np.array([[0.0, -np.inf, 1.0]]), [2], np.log1p(np.exp(-1.0))),  # a class ruled out
])
def test_softmax_cross_entropy_is_finite_when_non_target_classes_are_minus_inf(z, labels, expected):
    loss = layer("softmax_cross_entropy")
    for target in (np.array(labels), np.eye(z.shape[1], dtype=z.dtype)[labels]):
        value, cache = loss.forward(z, target)
        assert value == pytest.approx(expected, abs=1e-12) and np.isfinite(loss.backward(cache)).all()


def test_softmax_cross_entropy_shifts_each_row_by_its_own_max():
    # rows 200 apart: a shift by the batch's max would underflow exp() of the low row in float32
    z = np.array([[0.0, 1.0], [200.0, 201.0]], dtype=np.float32)
    value, cache = layer("softmax_cross_entropy").forward(z, np.array([1, 1]))
    assert value == pytest.approx(np.log1p(np.exp(-1.0)), rel=1e-6)
    p = 1 / (1 + np.exp(1.0))  # softmax of the wrong class in both rows
    np.testing.assert_allclose(layer("softmax_cross_entropy").backward(cache),
                               np.array([[p, -p], [p, -p]]) / 2, rtol=1e-5)


def test_accuracy_is_the_same_for_labels_and_their_one_hot_rows():
    loss = layer("softmax_cross_entropy")
    pred = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0], [1.0, 0.0, 4.0], [5.0, 1.0, 0.0], [0.0, 1.0, 0.5]])
    labels = np.array([0, 1, 1, 0, 2])  # 3 of 5 right
    assert loss.accuracy(pred, labels) == pytest.approx(0.6)
    assert loss.accuracy(pred, np.eye(3)[labels]) == pytest.approx(0.6)


def test_leaky_relu_gradient_at_zero_is_alpha_as_pytorch():
    torch = pytest.importorskip("torch")
    x = np.array([-2.0, -0.0, 0.0, 3.0])
    leaky = layer("leaky_relu", alpha=0.2)
    _, cache = leaky.forward({}, x, training=True)
    dx, _ = leaky.backward({}, cache, np.ones(4))
    t = torch.tensor(x, requires_grad=True)
    torch.nn.functional.leaky_relu(t, 0.2).sum().backward()
    np.testing.assert_allclose(dx, t.grad.numpy())
    np.testing.assert_allclose(dx, [0.2, 0.2, 0.2, 1.0])


@pytest.mark.parametrize(("type_name", "x"), [
    ("add", (np.ones((2, 3)), np.ones((2, 3)))),
    ("concat", (np.ones((2, 3)), np.ones((2, 2)))),
    ("flatten", np.ones((2, 3, 2))),
])
def test_moving_layers_hand_back_input_gradients_of_their_own(type_name, x):
    # each input gradient is a new array: editing one changes neither δ nor the other input's
    obj = layer(type_name)
    y, cache = obj.forward({}, x, training=True)
    dy = np.arange(float(y.size)).reshape(y.shape)
    dxs, _ = obj.backward({}, cache, dy)
    dxs = dxs if isinstance(dxs, tuple) else (dxs,)
    for k, dx in enumerate(dxs):
        assert not np.shares_memory(dx, dy)
        assert not any(np.shares_memory(dx, other) for other in dxs[k + 1:])


def test_concat_along_an_axis_past_the_inputs_rank_is_a_shape_error():
    with pytest.raises(nnplug.ShapeError, match="concat along axis 3 expects two inputs of one rank with that axis"):
        layer("concat", axis=3).output_shape(((3, 4), (5, 4)))


def test_relu_passes_the_gradient_through_nan_as_pytorch_does():
    relu = layer("relu")
    _, cache = relu.forward({}, np.array([np.nan, -1.0, -0.0, 0.0, 2.0]), training=True)
    np.testing.assert_array_equal(relu.backward({}, cache, np.full(5, 3.0))[0], [3.0, 0.0, 0.0, 0.0, 3.0])


def test_sigmoid_stays_finite_and_exact_at_extremes():
    y, _ = layer("sigmoid").forward({}, np.array([[-1e4, 1e4, 0.0]], dtype=np.float32), training=False)
    np.testing.assert_array_equal(y, np.array([[0.0, 1.0, 0.5]], dtype=np.float32))


@pytest.mark.parametrize("bad,phrase", [
    (np.array([0, 5]), "label 5 is outside the 3 classes"),
    (np.array([0, 3]), "label 3 is outside the 3 classes"),  # K itself: one past the last class
    (np.array([0, -1]), "label -1 is outside"),
    (np.array([0.0, 1.0]), "labels must be integers"),
    (np.zeros((2, 2)), "does not fit logits"),
    # soft rows must be distributions: a row summing to 2, a row with a negative entry
    (np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "each one-hot target row must sum to 1"),
    (np.array([[1.5, -0.5, 0.0], [0.0, 0.0, 1.0]]), "finite and non-negative"),
])
def test_softmax_cross_entropy_refuses_targets_that_do_not_fit(bad, phrase):
    with pytest.raises(nnplug.ShapeError, match=phrase):
        layer("softmax_cross_entropy").forward(np.zeros((2, 3)), bad)


def test_mse_is_the_mean_over_all_elements_and_its_gradient():
    rng = np.random.default_rng(2)
    pred, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    loss = layer("mse")
    value, cache = loss.forward(pred, target)
    assert value == pytest.approx(np.mean((pred - target) ** 2))  # as torch.nn.MSELoss
    np.testing.assert_allclose(loss.backward(cache), 2 * (pred - target) / pred.size)
    with pytest.raises(nnplug.ShapeError, match="target shape"):
        loss.forward(pred, target[:, :2])


def test_two_layer_mlp_matches_hand_written_backprop():
    model = nnplug.Model.from_config({
        "input": [3], "dtype": "float64", "seed": 5,
        "layers": [{"type": "dense", "units": 4, "name": "l1"}, {"type": "sigmoid", "name": "act"},
                   {"type": "dense", "units": 2, "name": "l2"}],
        "loss": {"type": "softmax_cross_entropy"},
    })
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((5, 3)), np.array([0, 1, 1, 0, 1])
    w1, b1, w2, b2 = (model.params[n][k] for n in ("l1", "l2") for k in ("w", "b"))
    # Hand-written forward and backward.
    z1 = x @ w1.T + b1
    a1 = 1 / (1 + np.exp(-z1))
    z2 = a1 @ w2.T + b2
    p = np.exp(z2 - z2.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d2 = (p - np.eye(2)[t]) / 5
    d1 = (d2 @ w2) * a1 * (1 - a1)
    loss, grads = model.loss_and_grads(x, t)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(5), t])))
    np.testing.assert_allclose(grads["l2"]["w"], d2.T @ a1, rtol=1e-12)
    np.testing.assert_allclose(grads["l2"]["b"], d2.sum(0), rtol=1e-12)
    np.testing.assert_allclose(grads["l1"]["w"], d1.T @ x, rtol=1e-12)
    np.testing.assert_allclose(grads["l1"]["b"], d1.sum(0), rtol=1e-12)
    assert grads["act"] == {}


def test_concat_joins_channels_and_splits_the_gradient_back():
    concat = layer("concat")
    a, b = np.ones((2, 3, 4)), np.zeros((2, 5, 4))
    assert concat.output_shape(((3, 4), (5, 4))) == (8, 4)
    y, cache = concat.forward({}, (a, b), training=True)
    assert y.shape == (2, 8, 4)
    dy = np.arange(64.0).reshape(2, 8, 4)
    (da, db), _ = concat.backward({}, cache, dy)
    np.testing.assert_array_equal(da, dy[:, :3])
    np.testing.assert_array_equal(db, dy[:, 3:])
    with pytest.raises(nnplug.ShapeError, match="equal on every other axis"):
        concat.output_shape(((3, 4), (5, 5)))


@pytest.mark.parametrize("type_name", BUILTIN)
def test_every_builtin_passes_the_gradient_checker_on_drawn_cases(type_name):
    cls = REGISTRY.get(type_name)
    cases = cls.gradcheck_cases()
    assert cases is not None, f"{type_name} offers no gradcheck_cases()"

    @given(case=cases, batch=st.integers(2, 3), seed=st.integers(0, 2**32 - 1))
    def check(case, batch, seed):
        rng = np.random.default_rng(seed)
        obj = cls(case.config)
        xs = [draw_values(case.values, (batch, *s), rng) for s in case.in_shapes]
        if isinstance(obj, nnplug.Loss):
            target = obj.example_target(xs[0].shape, rng)
            report = nnplug.gradcheck(obj, xs[0], target, seed=seed, raise_on_failure=False)
        else:
            x = tuple(xs) if cls.n_inputs > 1 else xs[0]
            report = nnplug.gradcheck(obj, x, seed=seed, raise_on_failure=False)
        if report.kinks and not report.failures:
            reject()  # a non-differentiable point: draw again
        report.raise_if_failed()

    check()
