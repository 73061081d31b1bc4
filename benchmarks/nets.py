"""Whole-network training steps: LeNet and the digits CNN, the same net in every framework.

The nnplug model is built from its description (``nnplug.Model.from_config`` / ``from_file``);
the PyTorch and MyGrad nets are translated from that built model node by node, with the
same weights, so the three frameworks run the same computation. One step is forward, the
softmax-CE loss, backward, and a plain SGD update of every parameter.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cases import Case, Target

import nnplug

LR = 0.01
ROOT = Path(__file__).resolve().parent.parent
DIGITS_FILE = ROOT / "examples" / "digits_cnn.yaml"


def lenet_config(dtype: str) -> dict[str, Any]:
    """LeNet on 1×28×28: conv 8 k5, relu, pool, conv 16 k5, relu, pool, dense 120, relu, dense 10."""
    return {
        "input": [1, 28, 28], "dtype": dtype, "seed": 0,
        "layers": [
            {"type": "conv2d", "name": "conv1", "filters": 8, "kernel_size": 5},
            {"type": "relu"}, {"type": "maxpool2d", "pool_size": 2},
            {"type": "conv2d", "name": "conv2", "filters": 16, "kernel_size": 5},
            {"type": "relu"}, {"type": "maxpool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dense", "name": "fc1", "units": 120}, {"type": "relu"},
            {"type": "dense", "name": "fc2", "units": 10},
        ],
        "loss": {"type": "softmax_cross_entropy"},
    }


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def conv_geometry(node: Any) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, stride, symmetric padding) of a conv2d or pooling node, "same"/"valid" resolved
    from the shapes the model inferred."""
    cfg = node.layer.config
    kernel = _pair(getattr(cfg, "kernel_size", None) or cfg.pool_size)
    stride = _pair(getattr(cfg, "stride", None) or kernel)
    padding = getattr(cfg, "padding", 0)
    if padding == "valid":
        return kernel, stride, (0, 0)
    if padding != "same":
        return kernel, stride, _pair(padding)
    pads = []
    for d in range(2):
        total = (node.out_shape[1 + d] - 1) * stride[d] + kernel[d] - node.in_shapes[0][1 + d]
        if total % 2:
            raise NotImplementedError(f"{node.name}: asymmetric 'same' padding has no peer translation")
        pads.append(total // 2)
    return kernel, stride, (pads[0], pads[1])


def net_flops(model: nnplug.Model, batch: int) -> float:
    """Nominal flops of a training step: 3× the forward multiply-adds of conv2d and dense (the
    forward, the weight gradient, the input gradient), 2× for a first layer (no input gradient)."""
    total = 0.0
    for k, node in enumerate(model.nodes):
        if node.type == "conv2d":
            kernel, _, _ = conv_geometry(node)
            fwd = 2.0 * batch * math.prod(node.out_shape) * node.in_shapes[0][0] * kernel[0] * kernel[1]
        elif node.type == "dense":
            fwd = 2.0 * batch * node.out_shape[0] * node.in_shapes[0][0]
        else:
            continue
        total += fwd * (2 if k == 0 else 3)
    return total


def _translate(model: nnplug.Model, ops: dict[str, Callable[..., Any]]) -> Callable[[Any, dict], Any]:
    """A forward function ``f(x, params) -> logits`` over the model's nodes, using ``ops``."""

    def forward(x: Any, params: dict[str, dict[str, Any]]) -> Any:
        values = {"input": x}
        for node in model.nodes:
            args = [values[i] for i in node.inputs]
            op = ops.get(node.type)
            if op is None:
                raise NotImplementedError(f"no peer translation for layer type {node.type!r}")
            values[node.name] = op(node, params.get(node.name, {}), *args)
        return values[model.loss_input]

    return forward


def _torch_ops() -> dict[str, Callable[..., Any]]:
    import torch
    import torch.nn.functional as nnf

    def conv(node: Any, p: dict, x: Any) -> Any:
        _, stride, pad = conv_geometry(node)
        return nnf.conv2d(x, p["w"], p.get("b"), stride=stride, padding=pad)

    def pool(fn: Callable[..., Any]) -> Callable[..., Any]:
        def op(node: Any, p: dict, x: Any) -> Any:
            kernel, stride, pad = conv_geometry(node)
            return fn(x, kernel, stride, pad)
        return op

    return {
        "conv2d": conv, "maxpool2d": pool(nnf.max_pool2d), "avgpool2d": pool(nnf.avg_pool2d),
        "relu": lambda node, p, x: nnf.relu(x), "flatten": lambda node, p, x: torch.flatten(x, 1),
        "dense": lambda node, p, x: nnf.linear(x, p["w"], p.get("b")),
        "global_avgpool": lambda node, p, x: x.mean(dim=(2, 3)),
        "add": lambda node, p, a, b: a + b, "concat": lambda node, p, a, b: torch.cat([a, b], dim=1),
    }


def _mygrad_ops() -> dict[str, Callable[..., Any]]:
    import mygrad as mg
    from mygrad.nnet import conv_nd, max_pool, relu

    def conv(node: Any, p: dict, x: Any) -> Any:
        _, stride, pad = conv_geometry(node)
        y = conv_nd(x, p["w"], stride=stride, padding=pad)
        return y + p["b"].reshape(1, -1, 1, 1) if "b" in p else y

    def maxpool(node: Any, p: dict, x: Any) -> Any:
        kernel, stride, pad = conv_geometry(node)
        if pad != (0, 0):
            raise NotImplementedError("mygrad's max_pool has no padding")
        return max_pool(x, kernel, stride)

    def avgpool(node: Any, p: dict, x: Any) -> Any:
        kernel, stride, pad = conv_geometry(node)
        n, c, h, w = x.shape
        if stride != kernel or pad != (0, 0) or h % kernel[0] or w % kernel[1]:
            raise NotImplementedError("mygrad has no avg-pool; only the non-overlapping one is translated")
        return x.reshape(n, c, h // kernel[0], kernel[0], w // kernel[1], kernel[1]).mean(axis=(3, 5))

    def dense(node: Any, p: dict, x: Any) -> Any:
        y = mg.matmul(x, p["w"].T)
        return y + p["b"] if "b" in p else y

    return {
        "conv2d": conv, "maxpool2d": maxpool, "avgpool2d": avgpool, "dense": dense,
        "relu": lambda node, p, x: relu(x), "flatten": lambda node, p, x: x.reshape(x.shape[0], -1),
        "global_avgpool": lambda node, p, x: x.mean(axis=(2, 3)),
        "add": lambda node, p, a, b: a + b, "concat": lambda node, p, a, b: mg.concatenate([a, b], axis=1),
    }


def _batch(model: nnplug.Model, batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, *model.input_shape)).astype(model.dtype)
    classes = model.node(model.loss_input).out_shape[0]
    return x, rng.integers(0, classes, size=batch)


def nnplug_step(model: nnplug.Model, batch: int) -> Callable[[], Any]:
    x, labels = _batch(model, batch)
    params = {n: {k: v.copy() for k, v in ps.items()} for n, ps in model.params.items()}

    def step() -> float:
        loss, grads = model.loss_and_grads(x, labels, params)
        for node, ps in params.items():
            for name, p in ps.items():
                p -= LR * grads[node][name]  # SGD, in place
        return loss

    return step


def torch_step(model: nnplug.Model, batch: int) -> Callable[[], Any]:
    import torch
    import torch.nn.functional as nnf

    forward = _translate(model, _torch_ops())
    x0, labels0 = _batch(model, batch)
    x, labels = torch.from_numpy(x0), torch.from_numpy(labels0)
    params = {n: {k: torch.tensor(v, requires_grad=True) for k, v in ps.items()} for n, ps in model.params.items()}
    opt = torch.optim.SGD([p for ps in params.values() for p in ps.values()], lr=LR)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = nnf.cross_entropy(forward(x, params), labels)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def mygrad_step(model: nnplug.Model, batch: int) -> Callable[[], Any]:
    import mygrad as mg
    from mygrad.nnet import softmax_crossentropy

    forward = _translate(model, _mygrad_ops())
    x, labels = _batch(model, batch)
    params = {n: {k: mg.tensor(v.copy()) for k, v in ps.items()} for n, ps in model.params.items()}

    def step() -> float:
        loss = softmax_crossentropy(forward(x, params), labels)
        loss.backward()
        for ps in params.values():
            for p in ps.values():
                p.data -= LR * p.grad
        return float(loss.item())

    return step


def net_case(title: str, model_of: Callable[[str], nnplug.Model], batch_of: Callable[[nnplug.Model], int],
             dtype: str, targets: list[Target], note: str = "", requires: tuple[str, ...] = ()) -> Case:
    """A training-step row; the model is built lazily (inside the builders) so a missing layer
    type shows as a skipped row, not a crash."""
    cache: dict[str, nnplug.Model] = {}

    def model() -> nnplug.Model:
        if "m" not in cache:
            cache["m"] = model_of(dtype)
        return cache["m"]

    flops = None
    # On failure the builders raise again with the reason, and the row says it.
    with contextlib.suppress(nnplug.NnplugError, OSError, NotImplementedError):
        flops = net_flops(model(), batch_of(model()))
    return Case(
        name=title, group="train step", dtype=dtype, flops=flops,
        nnplug=lambda: nnplug_step(model(), batch_of(model())),
        peers={"torch": lambda: torch_step(model(), batch_of(model())),
               "mygrad": lambda: mygrad_step(model(), batch_of(model()))},
        targets=targets, note=note, requires=requires,
    )


def lenet_case(dtype: str) -> Case:
    targets = [Target("torch", 0.5, "LeNet step, float32: torch ratio ≥ 0.5")] if dtype == "float32" else []
    return net_case("LeNet train step, batch 64", lambda d: nnplug.Model.from_config(lenet_config(d)),
                    lambda m: 64, dtype, [*targets, Target("mygrad", 1.0)], requires=("conv2d", "maxpool2d"))


def digits_batch(model: nnplug.Model) -> int:
    return model.spec.train.batch_size if model.spec.train is not None else 32


def digits_model(dtype: str) -> nnplug.Model:
    if not DIGITS_FILE.exists():
        raise FileNotFoundError(f"{DIGITS_FILE.relative_to(ROOT)} does not exist yet")
    return nnplug.Model.from_file(DIGITS_FILE).astype(dtype)


def digits_case(dtype: str) -> Case:
    targets = [Target("torch", 1.0, "digits CNN step, float32: torch ratio ≥ 1")] if dtype == "float32" else []
    title = "digits CNN train step"
    with contextlib.suppress(nnplug.NnplugError, OSError):
        title += f", batch {digits_batch(digits_model(dtype))}"
    return net_case(title, digits_model, digits_batch, dtype, [*targets, Target("mygrad", 1.0)],
                    note="examples/digits_cnn.yaml, batch = its train.batch_size")
