"""The layer-level cases: conv2d, pooling, dense and softmax-CE, forward + backward.

A case holds one builder per framework. A builder makes its inputs (the same numbers for
every framework) and returns the zero-argument callable that is timed: one forward pass and
the backward pass of a fixed output gradient ``dy``, producing every input and parameter
gradient. nnplug is used through its public API only (``load_registry().get(type)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import nnplug

Builder = Callable[[], Callable[[], Any]]

#: (name, N, C_in, C_out, H=W, kernel, padding) of the conv2d shapes of issue 7.
CONV_SHAPES = [
    ("conv2d 1→8 28² k5", 64, 1, 8, 28, 5, 0),
    ("conv2d 16→32 28² k3 p1", 64, 16, 32, 28, 3, 1),
    ("conv2d 64→64 16² k3 p1", 32, 64, 64, 16, 3, 1),
]
CONV_ENGINES = ("scipy", "gemm", "auto")
POOL_SHAPE = (64, 32, 24, 24)
DENSE_SHAPE = (128, 784, 256)  # N, in, units
CE_SHAPE = (128, 10)  # N, classes


MYGRAD_GOAL = "faster than MyGrad on every case (mygrad ratio ≥ 1)"


@dataclass
class Target:
    """``peer time / nnplug time >= ratio``; ``goal`` names the issue-7 target it belongs to."""

    peer: str
    ratio: float
    goal: str = MYGRAD_GOAL

    def __str__(self) -> str:
        return f"{self.peer} ≥ {self.ratio:g}"


@dataclass
class Case:
    """One measured row: nnplug's callable, its peers', the nominal flops and the targets."""

    name: str
    group: str
    dtype: str
    nnplug: Builder | None
    peers: dict[str, Builder] = field(default_factory=dict)
    flops: float | None = None
    repeats: int | None = None  # overrides the global repeats (the slow scipy engine)
    targets: list[Target] = field(default_factory=list)
    note: str = ""
    requires: tuple[str, ...] = ()  # layer types that must be registered, else the row is skipped


def _rand(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def _layer(type_name: str, config: dict[str, Any]) -> Any:
    return nnplug.load_registry().get(type_name)(config)


def _nnplug_layer_step(type_name: str, config: dict[str, Any], in_shape: tuple[int, ...],
                       out_shape: tuple[int, ...], dtype: str) -> Callable[[], Any]:
    rng = np.random.default_rng(0)
    layer = _layer(type_name, config)
    params = {k: np.asarray(v, dtype=dtype) for k, v in layer.init_params(in_shape[1:], rng).items()}
    x = _rand(rng, in_shape, dtype)
    dy = _rand(rng, out_shape, dtype)

    def step() -> Any:
        _, cache = layer.forward(params, x, training=True)
        return layer.backward(params, cache, dy)

    return step


def _torch_step(fn: Callable[..., Any], tensors: list[np.ndarray], dy: np.ndarray) -> Callable[[], Any]:
    import torch

    leaves = [torch.from_numpy(t).requires_grad_(True) for t in tensors]
    grad = torch.from_numpy(dy)

    def step() -> Any:
        return torch.autograd.grad(fn(*leaves), leaves, grad)

    return step


def _mygrad_step(fn: Callable[..., Any], tensors: list[np.ndarray], dy: np.ndarray) -> Callable[[], Any]:
    import mygrad as mg

    leaves = [mg.tensor(t) for t in tensors]

    def step() -> Any:
        fn(*leaves).backward(dy)
        return [t.grad for t in leaves]

    return step


def conv_cases(dtype: str, engines: tuple[str, ...] = CONV_ENGINES) -> list[Case]:
    """conv2d forward + backward (dx, dw, db) at the three shapes, one row per engine."""
    cases = []
    for k_shape, (name, n, c, f, hw, k, pad) in enumerate(CONV_SHAPES):
        out = hw + 2 * pad - k + 1
        x_shape, y_shape = (n, c, hw, hw), (n, f, out, out)
        flops = 3 * 2.0 * n * f * c * k * k * out * out  # forward, dw and dx: one correlation each

        def inputs(x_shape: tuple[int, ...] = x_shape, y_shape: tuple[int, ...] = y_shape,
                   f: int = f, c: int = c, k: int = k) -> list[np.ndarray]:
            rng = np.random.default_rng(0)
            return [_rand(rng, x_shape, dtype), _rand(rng, (f, c, k, k), dtype) * 0.1,
                    _rand(rng, (f,), dtype), _rand(rng, y_shape, dtype)]

        def torch_b(inputs: Callable[[], list[np.ndarray]] = inputs, pad: int = pad) -> Callable[[], Any]:
            import torch.nn.functional as nnf

            x, w, b, dy = inputs()
            return _torch_step(lambda x, w, b: nnf.conv2d(x, w, b, padding=pad), [x, w, b], dy)

        def mygrad_b(inputs: Callable[[], list[np.ndarray]] = inputs, pad: int = pad) -> Callable[[], Any]:
            from mygrad.nnet import conv_nd

            x, w, b, dy = inputs()
            return _mygrad_step(lambda x, w, b: conv_nd(x, w, stride=1, padding=pad) + b.reshape(1, -1, 1, 1),
                                [x, w, b], dy)

        for engine in engines:
            if engine == "scipy" and k_shape > 0:
                continue  # the reference engine costs seconds per call at the larger shapes
            config = {"filters": f, "kernel_size": k, "padding": pad, "engine": engine}
            targets = []
            if engine == "auto" and dtype == "float32" and k_shape > 0:
                targets.append(Target("torch", 0.5, "conv2d auto, float32, 16→32 and 64→64: torch ratio ≥ 0.5"))
            if engine == "auto" and dtype == "float64":
                targets.append(Target("torch", 1.0, "conv2d auto, float64: torch ratio ≥ 1"))
            if engine != "scipy":
                targets.append(Target("mygrad", 1.0))
            cases.append(Case(
                name=f"{name}, {engine}", group="conv2d", dtype=dtype,
                nnplug=lambda config=config, x_shape=x_shape, y_shape=y_shape: _nnplug_layer_step(
                    "conv2d", config, x_shape, y_shape, dtype),
                peers={"torch": torch_b, "mygrad": mygrad_b}, flops=flops,
                repeats=3 if engine == "scipy" else None, targets=targets,
                note="scipy: reference engine, smallest shape only, 3 repeats" if engine == "scipy" else "",
                requires=("conv2d",),
            ))
    return cases


def pool_cases(dtype: str) -> list[Case]:
    """2×2 max- and average-pooling forward + backward at (64, 32, 24²)."""
    n, c, h, w = POOL_SHAPE
    y_shape = (n, c, h // 2, w // 2)

    def inputs() -> list[np.ndarray]:
        rng = np.random.default_rng(0)
        return [_rand(rng, POOL_SHAPE, dtype), _rand(rng, y_shape, dtype)]

    def torch_b(kind: str) -> Builder:
        def build() -> Callable[[], Any]:
            import torch.nn.functional as nnf

            fn = nnf.max_pool2d if kind == "max" else nnf.avg_pool2d
            x, dy = inputs()
            return _torch_step(lambda x: fn(x, 2), [x], dy)
        return build

    def mygrad_b(kind: str) -> Builder:
        def build() -> Callable[[], Any]:
            from mygrad.nnet import max_pool

            x, dy = inputs()
            if kind == "max":
                return _mygrad_step(lambda x: max_pool(x, (2, 2), 2), [x], dy)
            # MyGrad has no average pooling: the idiomatic non-overlapping form, a reshaped mean.
            return _mygrad_step(lambda x: x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5)), [x], dy)
        return build

    cases = []
    for kind in ("max", "avg"):
        cases.append(Case(
            name=f"{kind}pool2d 2×2 (64, 32, 24²)", group="pool", dtype=dtype,
            nnplug=lambda kind=kind: _nnplug_layer_step(f"{kind}pool2d", {"pool_size": 2}, POOL_SHAPE,
                                                        y_shape, dtype),
            peers={"torch": torch_b(kind), "mygrad": mygrad_b(kind)},
            targets=[Target("torch", 0.5, "max-pool and avg-pool 2×2: torch ratio ≥ 0.5"), Target("mygrad", 1.0)],
            note="" if kind == "max" else "mygrad: reshape + mean (it has no avg-pool)",
            requires=(f"{kind}pool2d",),
        ))
    return cases


def dense_case(dtype: str) -> Case:
    """dense 784→256 forward + backward at N=128."""
    n, d_in, units = DENSE_SHAPE

    def inputs() -> list[np.ndarray]:
        rng = np.random.default_rng(0)
        return [_rand(rng, (n, d_in), dtype), _rand(rng, (units, d_in), dtype) * 0.05,
                _rand(rng, (units,), dtype), _rand(rng, (n, units), dtype)]

    def torch_b() -> Callable[[], Any]:
        import torch.nn.functional as nnf

        x, w, b, dy = inputs()
        return _torch_step(nnf.linear, [x, w, b], dy)

    def mygrad_b() -> Callable[[], Any]:
        import mygrad as mg

        x, w, b, dy = inputs()
        return _mygrad_step(lambda x, w, b: mg.matmul(x, w.T) + b, [x, w, b], dy)

    return Case(
        name="dense 784→256 N=128", group="dense", dtype=dtype,
        nnplug=lambda: _nnplug_layer_step("dense", {"units": units}, (n, d_in), (n, units), dtype),
        peers={"torch": torch_b, "mygrad": mygrad_b}, flops=3 * 2.0 * n * d_in * units,
        targets=[Target("mygrad", 1.0)],
    )


def softmax_ce_case(dtype: str) -> Case:
    """softmax-cross-entropy (mean over the batch) and its gradient, N=128, 10 classes."""
    n, k = CE_SHAPE

    def inputs() -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(0)
        return _rand(rng, (n, k), dtype), rng.integers(0, k, size=n)

    def nnplug_b() -> Callable[[], Any]:
        loss = _layer("softmax_cross_entropy", {})
        z, labels = inputs()

        def step() -> Any:
            _, cache = loss.forward(z, labels)
            return loss.backward(cache)
        return step

    def torch_b() -> Callable[[], Any]:
        import torch
        import torch.nn.functional as nnf

        z0, labels0 = inputs()
        z, labels = torch.from_numpy(z0).requires_grad_(True), torch.from_numpy(labels0)
        return lambda: torch.autograd.grad(nnf.cross_entropy(z, labels), [z])

    def mygrad_b() -> Callable[[], Any]:
        import mygrad as mg
        from mygrad.nnet import softmax_crossentropy

        z0, labels = inputs()
        z = mg.tensor(z0)

        def step() -> Any:
            softmax_crossentropy(z, labels).backward()
            return z.grad
        return step

    return Case(name="softmax-CE N=128, 10 classes", group="loss", dtype=dtype, nnplug=nnplug_b,
                peers={"torch": torch_b, "mygrad": mygrad_b}, targets=[Target("mygrad", 1.0)])
