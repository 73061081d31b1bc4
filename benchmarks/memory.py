"""Memory and dtype checks: a LeNet step's peak beside its lower bound, the max-pool cache,
and a float32 model staying float32 end to end.

Peak memory is measured with ``tracemalloc``: numpy reports its array allocations to it, so
the traced peak during one training step is what the step allocated on top of the
parameters and of the layers' scratch buffers (both allocated before tracing started, and
added back).
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
from nets import _batch, lenet_config, nnplug_step
from nnplug_layers import scratch

import nnplug


def walk(model: nnplug.Model, x: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Run each node's layer forward and backward in topological order through the public
    layer API, and collect every activation's and gradient's dtype and size."""
    node_names = {node.name for node in model.nodes}
    # The model input is whatever a node reads that no node produces.
    values: dict[str, Any] = {i: x for node in model.nodes for i in node.inputs if i not in node_names}
    caches, dtypes, act_bytes, cache_bytes = {}, {}, 0, {}
    for node in model.nodes:
        x_in = node.layer_input(values)
        y, caches[node.name] = node.layer.forward(model.params[node.name], x_in, training=True)
        values[node.name] = y
        dtypes[f"{node.name} activation"] = y.dtype.name
        act_bytes += y.nbytes
        known = [*_arrays(x_in), y, *model.params[node.name].values()]
        cache_bytes[node.name] = _owned_bytes(caches[node.name], known)
    value, loss_cache = model.loss.forward(values[model.loss_input], labels)
    grads: dict[str, np.ndarray] = {model.loss_input: model.loss.backward(loss_cache)}
    dtypes["loss gradient"] = grads[model.loss_input].dtype.name
    grad_bytes = 0
    for node in reversed(model.nodes):
        dx, pgrads = node.layer.backward(model.params[node.name], caches.pop(node.name), grads.pop(node.name))
        for name, g in pgrads.items():
            dtypes[f"{node.name}.{name} gradient"] = g.dtype.name
            grad_bytes += g.nbytes
        for source, d in zip(node.inputs, dx if node.layer.n_inputs > 1 else (dx,)):
            dtypes[f"{node.name} input gradient"] = d.dtype.name
            grads[source] = grads[source] + d if source in grads else d
    for node_name, ps in model.params.items():
        for name, p in ps.items():
            dtypes[f"{node_name}.{name} parameter"] = p.dtype.name
    return {"dtypes": dtypes, "activation_bytes": act_bytes, "param_grad_bytes": grad_bytes,
            "cache_bytes": cache_bytes, "loss": float(value)}


def _base(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _owned_bytes(cache: Any, known: list[np.ndarray]) -> int:
    """Bytes of the buffers a cache keeps beyond the layer's input, output and parameters."""
    seen = {id(_base(a)) for a in known}
    total = 0
    for a in _arrays(cache):
        base = _base(a)
        if id(base) not in seen:
            seen.add(id(base))
            total += base.nbytes
    return total


def float32_end_to_end() -> dict[str, Any]:
    """LeNet in float32: every parameter, activation and gradient must be float32."""
    model = nnplug.Model.from_config(lenet_config("float32"))
    x, labels = _batch(model, 8)
    dtypes = walk(model, x, labels)["dtypes"]
    wrong = {k: v for k, v in dtypes.items() if v != "float32"}
    return {"checked": len(dtypes), "not_float32": wrong, "met": not wrong}


def lenet_peak(dtype: str = "float32", batch: int = 64) -> dict[str, Any]:
    """:func:`lenet_peak_here`, measured in a fresh interpreter: scratch buffers that earlier
    cases of a run left in this process would otherwise count against LeNet."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(lenet_peak_here, (dtype, batch))


def lenet_peak_here(dtype: str = "float32", batch: int = 64) -> dict[str, Any]:
    """Peak bytes of one LeNet training step (traced allocations + resident parameters +
    the scratch buffers the step keeps) and the lower bound parameters + activations +
    parameter gradients, in this process."""
    model = nnplug.Model.from_config(lenet_config(dtype))
    x, labels = _batch(model, batch)
    sizes = walk(model, x, labels)
    param_bytes = sum(p.nbytes for ps in model.params.values() for p in ps.values())
    step = nnplug_step(model, batch)
    step()  # warm: the first call may fill caches (engine choices, imports, scratch buffers)
    scratch_bytes = scratch.held_bytes()  # kept from the warm step: allocated before tracing
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        step()
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak = traced_peak + param_bytes + scratch_bytes
    bound = param_bytes + sizes["activation_bytes"] + sizes["param_grad_bytes"]
    return {"dtype": dtype, "batch": batch, "peak_bytes": peak, "lower_bound_bytes": bound,
            "param_bytes": param_bytes, "activation_bytes": sizes["activation_bytes"],
            "param_grad_bytes": sizes["param_grad_bytes"], "input_bytes": x.nbytes,
            "scratch_bytes": scratch_bytes,
            "cache_bytes_beyond_activations": sizes["cache_bytes"],
            "ratio": peak / bound}


def _arrays(obj: Any) -> list[np.ndarray]:
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return [a for item in obj for a in _arrays(item)]
    return [a for a in vars(obj).values() for a in _arrays(a)] if hasattr(obj, "__dict__") else []


def maxpool_cache(dtype: str = "float32", shape: tuple[int, int, int, int] = (64, 32, 24, 24)) -> dict[str, Any]:
    """What maxpool2d 2×2 keeps for backward, against a boolean mask of the input's size.

    Met when it keeps an integer index per window in the smallest integer dtype that holds
    the window's positions, and no array of the input's size beyond (a view of) the input.
    """
    layer: Any = nnplug.load_registry().get("maxpool2d")({"pool_size": 2})
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    y, cache = layer.forward({}, x, training=True)
    windows = y.size
    smallest = np.min_scalar_type(4 - 1)  # 2×2 = 4 positions per window
    arrays: list[dict[str, Any]] = []
    for a in _arrays(cache):
        arrays.append({"shape": list(a.shape), "dtype": a.dtype.name, "bytes": int(a.nbytes),
                       "views_input": bool(np.shares_memory(a, x))})
    owned = [a for a in arrays if not a["views_input"]]
    index = [a for a in owned if int(np.prod(a["shape"])) == windows and np.dtype(a["dtype"]).kind in "iu"]
    input_sized = [a for a in owned if int(np.prod(a["shape"])) >= x.size]
    met = bool(index) and np.dtype(index[0]["dtype"]).itemsize <= smallest.itemsize and not input_sized
    return {"input_shape": list(shape), "windows": windows, "cache_arrays": arrays,
            "cache_bytes": sum(a["bytes"] for a in owned), "input_mask_bytes": int(x.size),
            "input_bytes": int(x.nbytes), "smallest_index_dtype": smallest.name, "met": met}
