"""A float32 model stays float32 end to end: parameters, every node's activation, every float
array a layer caches, every input and parameter gradient, and the parameters after an
optimizer step. A float64 constant inside a layer would silently promote (issue 7).

Each node's layer is run by hand in topological order through the public layer API, so a
layer that upcasts is named even where the executor would only see its output.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest

import nnplug
from nnplug.optim import OptimizerConfig, make_optimizer

CNN_TYPES = ("conv2d", "maxpool2d", "avgpool2d", "global_avgpool")

# Dense part: flatten, dense, relu, add and concat (a DAG), softmax-CE.
DENSE_LAYERS: list[dict[str, Any]] = [
    {"type": "flatten", "name": "flat"},
    {"type": "dense", "name": "d1", "units": 12},
    {"type": "relu", "name": "r1"},
    {"type": "dense", "name": "d2", "units": 12},
    {"type": "add", "name": "res", "inputs": ["r1", "d2"]},
    {"type": "concat", "name": "cat", "inputs": ["res", "d1"]},
    {"type": "dense", "name": "logits", "units": 5},
]

# CNN part: conv2d (both padding forms), relu, a residual add, max- and avg-pool branches
# joined by concat, global average pooling, flatten, dense, softmax-CE.
CNN_LAYERS: list[dict[str, Any]] = [
    {"type": "conv2d", "name": "c1", "filters": 4, "kernel_size": 3, "padding": "same"},
    {"type": "relu", "name": "r1"},
    {"type": "conv2d", "name": "c2", "filters": 4, "kernel_size": 3, "padding": 1},
    {"type": "add", "name": "res", "inputs": ["r1", "c2"]},
    {"type": "maxpool2d", "name": "maxp", "pool_size": 2, "inputs": ["res"]},
    {"type": "avgpool2d", "name": "avgp", "pool_size": 2, "inputs": ["res"]},
    {"type": "concat", "name": "cat", "inputs": ["maxp", "avgp"]},
    {"type": "conv2d", "name": "c3", "filters": 6, "kernel_size": 3},
    {"type": "global_avgpool", "name": "gap"},
    {"type": "flatten", "name": "flat"},
    {"type": "dense", "name": "logits", "units": 5},
]


def _model(layers: list[dict[str, Any]], input_shape: list[int]) -> nnplug.Model:
    return nnplug.Model.from_config({
        "input": input_shape, "dtype": "float32", "seed": 3, "layers": layers,
        "loss": {"type": "softmax_cross_entropy"},
    })


def _float_arrays(obj: Any) -> list[np.ndarray]:
    """Every floating-point array reachable in a cache (tuples, lists, dicts, objects)."""
    if isinstance(obj, np.ndarray):
        return [obj] if obj.dtype.kind in "fc" else []
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return [a for item in obj for a in _float_arrays(item)]
    if hasattr(obj, "__dict__"):
        return _float_arrays(list(vars(obj).values()))
    return []


def _dtypes_by_hand(model: nnplug.Model, x: np.ndarray, labels: np.ndarray) -> dict[str, str]:
    """Forward and backward node by node; ``{what: dtype}`` for every array met."""
    seen: dict[str, str] = {}
    produced = {node.name for node in model.nodes}
    values = {i: x for node in model.nodes for i in node.inputs if i not in produced}
    caches = {}
    for node in model.nodes:
        y, caches[node.name] = node.layer.forward(model.params[node.name], node.layer_input(values),
                                                  training=True)
        values[node.name] = y
        seen[f"{node.name} ({node.type}) activation"] = y.dtype.name
        for k, a in enumerate(_float_arrays(caches[node.name])):
            seen[f"{node.name} ({node.type}) cache array {k}"] = a.dtype.name
    _, loss_cache = model.loss.forward(values[model.loss_input], labels)
    grads = {model.loss_input: model.loss.backward(loss_cache)}
    seen["loss gradient"] = grads[model.loss_input].dtype.name
    for node in reversed(model.nodes):
        dx, pgrads = node.layer.backward(model.params[node.name], caches.pop(node.name), grads.pop(node.name))
        dxs = tuple(dx) if node.layer.n_inputs > 1 else (dx,)
        for source, d in zip(node.inputs, dxs):
            seen[f"{node.name} ({node.type}) gradient to {source}"] = d.dtype.name
            grads[source] = grads[source] + d if source in grads else d
        for name, g in pgrads.items():
            seen[f"{node.name} ({node.type}) gradient of {name}"] = g.dtype.name
    return seen


def _assert_all_float32(model: nnplug.Model, x: np.ndarray, labels: np.ndarray) -> None:
    seen = {f"{n}.{k} parameter": p.dtype.name for n, ps in model.params.items() for k, p in ps.items()}
    seen.update(_dtypes_by_hand(model, x, labels))
    wrong = {what: dtype for what, dtype in seen.items() if dtype != "float32"}
    assert not wrong, f"upcast in a float32 model: {wrong}"
    # Enough was looked at: every node's activation and every parameter's gradient.
    assert sum(k.endswith("activation") for k in seen) == len(model.nodes)
    assert sum(" gradient of " in k for k in seen) == sum(len(ps) for ps in model.params.values())


def _check_executor_and_optimizers(model: nnplug.Model, x: np.ndarray, labels: np.ndarray) -> None:
    """The executor's own path, fed float64 data, and optimizer steps keep float32 too."""
    assert model.forward(x.astype(np.float64)).dtype == np.float32
    loss, grads, dx = model.loss_and_all_grads(x.astype(np.float64), labels)
    assert np.isfinite(loss)
    assert dx.dtype == np.float32
    assert {g.dtype.name for gs in grads.values() for g in gs.values()} == {"float32"}
    for config in (OptimizerConfig(type="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
                   OptimizerConfig(type="adam", lr=0.01, weight_decay=1e-4)):
        params = {n: {k: v.copy() for k, v in ps.items()} for n, ps in model.params.items()}
        optimizer = make_optimizer(config, params)
        for _ in range(2):
            _, grads = model.loss_and_grads(x, labels, params)
            optimizer.step(params, grads)
        dtypes = {f"{n}.{k}": v.dtype.name for n, ps in params.items() for k, v in ps.items()}
        assert set(dtypes.values()) == {"float32"}, f"{config.type} upcast parameters: {dtypes}"
        assert {a.dtype.name for a in optimizer.state.values()} <= {"float32"}


def test_dense_dag_model_stays_float32_end_to_end() -> None:
    model = _model(DENSE_LAYERS, [2, 3, 4])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 3, 4)).astype(np.float32)
    labels = rng.integers(0, 5, size=6)
    _assert_all_float32(model, x, labels)
    _check_executor_and_optimizers(model, x, labels)


def test_float64_model_stays_float64() -> None:
    """The converse: the same graph in float64 produces float64 everywhere (no downcast)."""
    model = _model(DENSE_LAYERS, [2, 3, 4]).astype("float64")
    x = np.random.default_rng(1).standard_normal((4, 2, 3, 4)).astype(np.float32)
    _, grads, dx = model.loss_and_all_grads(x, np.array([0, 1, 2, 4]))
    assert model.forward(x).dtype == np.float64
    assert dx.dtype == np.float64
    assert {g.dtype.name for gs in grads.values() for g in gs.values()} == {"float64"}


def test_cnn_model_stays_float32_end_to_end() -> None:
    registry = nnplug.load_registry()
    missing = [t for t in CNN_TYPES if t not in registry]
    if missing:
        pytest.skip(f"layer types not registered yet: {', '.join(missing)}")
    model = _model(CNN_LAYERS, [3, 8, 8])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 5, size=4)
    _assert_all_float32(model, x, labels)
    _check_executor_and_optimizers(model, x, labels)


@pytest.mark.parametrize("engine", ["scipy", "gemm", "auto"])
def test_conv2d_engines_keep_float32(engine: str) -> None:
    registry = nnplug.load_registry()
    if "conv2d" not in registry:
        pytest.skip("conv2d is not registered yet")
    layer = registry.get("conv2d")({"filters": 3, "kernel_size": 3, "padding": 1, "stride": 2, "engine": engine})
    rng = np.random.default_rng(0)
    params = {k: v.astype(np.float32) for k, v in layer.init_params((2, 7, 7), rng).items()}
    x = rng.standard_normal((2, 2, 7, 7)).astype(np.float32)
    y, cache = layer.forward(params, x, training=True)
    dx, grads = layer.backward(params, cache, np.ones_like(y))
    dtypes = {"y": y.dtype, "dx": dx.dtype, **{f"d{k}": g.dtype for k, g in grads.items()},
              **{f"cache {k}": a.dtype for k, a in enumerate(_float_arrays(cache))}}
    assert {d.name for d in dtypes.values()} == {"float32"}, dtypes


class _UpcastingReLUConfig(nnplug.LayerConfig):
    type: Literal["upcasting_relu"] = "upcasting_relu"


class _UpcastingReLU(nnplug.Layer):
    """A ReLU whose output keeps the dtype but whose cached mask and gradient are float64:
    the executor sees a float32 output; only a check of caches and gradients catches it."""

    Config = _UpcastingReLUConfig

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def init_params(self, in_shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {}

    def forward(self, params: dict, x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
        mask = (x > 0) * 1.0  # a float64 mask: the silent upcast this test file is about
        return np.maximum(x, 0), mask

    def backward(self, params: dict, cache: Any, dy: np.ndarray) -> tuple[np.ndarray, dict]:
        return dy * cache, {}


def test_float32_check_names_a_layer_that_upcasts_its_cache_and_gradient() -> None:
    class Plugin:
        @nnplug.hookimpl
        def nnplug_register_layers(self) -> list[type]:
            return [_UpcastingReLU]

    layers = [dict(node, type="upcasting_relu") if node["type"] == "relu" else node for node in DENSE_LAYERS]
    model = nnplug.Model.from_config({"input": [2, 3, 4], "dtype": "float32", "layers": layers,
                                      "loss": {"type": "softmax_cross_entropy"}},
                                     registry=nnplug.Registry(plugins=[Plugin()]))
    x = np.random.default_rng(0).standard_normal((3, 2, 3, 4)).astype(np.float32)
    with pytest.raises(AssertionError, match=r"r1 \(upcasting_relu\) cache array 0': 'float64'") as info:
        _assert_all_float32(model, x, np.array([0, 1, 2]))
    assert "r1 (upcasting_relu) gradient to d1" in str(info.value)


class _PlainSquaresConfig(nnplug.LayerConfig):
    type: Literal["plain_squares"] = "plain_squares"


class _PlainSquares(nnplug.Loss):
    """Mean squared error written as a plugin author would, with no cast of the target."""

    Config = _PlainSquaresConfig

    def forward(self, pred: np.ndarray, target: Any) -> tuple[float, Any]:
        r = pred - target
        return float((r * r).mean()), r

    def backward(self, cache: Any) -> np.ndarray:
        return 2 * cache / cache.size


def test_a_float64_target_reaches_a_float32_models_loss_as_float32() -> None:
    # targets are cast like inputs: the loss above would otherwise return a float64 dpred
    class Plugin:
        @nnplug.hookimpl
        def nnplug_register_layers(self) -> list[type]:
            return [_PlainSquares]

    model = nnplug.Model.from_config({"input": [3], "dtype": "float32", "layers": [{"type": "dense", "units": 2}],
                                      "loss": {"type": "plain_squares"}},
                                     registry=nnplug.Registry(plugins=[Plugin(), "nnplug_layers"]))
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))  # both float64
    _, grads, dx = model.loss_and_all_grads(x, target)
    assert {g.dtype.name for gs in grads.values() for g in gs.values()} == {"float32"} and dx.dtype == np.float32
    assert nnplug.gradcheck(model.astype("float64"), x, target).ok


@pytest.mark.parametrize("type_name", ["relu", "leaky_relu", "sigmoid", "tanh", "flatten"])
def test_elementwise_layers_called_directly_keep_float32(type_name: str) -> None:
    # the models above hold relu only: each activation's own forward and backward are checked
    layer = nnplug.load_registry().get(type_name)({})
    x = np.linspace(-2, 2, 24, dtype=np.float32).reshape(2, 3, 4)
    y, cache = layer.forward({}, x, training=True)
    dx, grads = layer.backward({}, cache, np.ones_like(y))
    assert (y.dtype, dx.dtype, grads) == (np.float32, np.float32, {})
    assert all(a.dtype == np.float32 for a in _float_arrays(cache))


def test_mse_keeps_float32() -> None:
    loss = nnplug.load_registry().get("mse")({})
    pred = np.ones((2, 3), dtype=np.float32)
    value, cache = loss.forward(pred, np.zeros((2, 3)))  # a float64 target, as a caller hands it
    assert loss.backward(cache).dtype == np.float32 and isinstance(value, float)


def test_softmax_cross_entropy_keeps_float32_for_float64_one_hot_rows() -> None:
    loss = nnplug.load_registry().get("softmax_cross_entropy")({})
    pred = np.zeros((2, 3), dtype=np.float32)
    _, cache = loss.forward(pred, np.eye(3)[[0, 2]])  # float64 rows, as np.eye makes them
    assert loss.backward(cache).dtype == np.float32
