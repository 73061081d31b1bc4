"""Probe: conv2d and pooling forward+backward, nnplug against PyTorch CPU in the same run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benchmarks/conv_pool_probe.py \
        [--threads 2] [--timer wall|cpu] [--scipy] [--json FILE]

Threads are pinned (threadpoolctl for numpy's BLAS, ``torch.set_num_threads``); nnplug and
PyTorch run in alternating blocks after warm-ups and medians are reported, so both see the
same machine load. ratio = PyTorch time / nnplug time (> 1: nnplug faster).

``--timer wall`` (default) is elapsed time. On a machine shared with other jobs it swings
with their load, and multi-threaded BLAS suffers most; ``--threads 1 --timer cpu`` compares
the CPU time each side spends, which others' load barely moves. The full benchmark harness
is ``benchmarks/run.py``; this probe is the quick check for conv2d and pooling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from nnplug_layers import columns, conv_engines
from nnplug_layers.conv2d import Conv2D
from nnplug_layers.pooling import AvgPool2D, MaxPool2D
from threadpoolctl import threadpool_info, threadpool_limits

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter
CONV_CASES = [  # (N, C, F, H, k, pad)
    (64, 16, 32, 28, 3, 1),
    (32, 64, 64, 16, 3, 1),
    (64, 1, 8, 28, 5, 0),
]
POOL_CASE = (64, 32, 24)


def paired_medians(fa: Callable[[], Any], fb: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median seconds of ``fa`` and ``fb`` over ``repeats`` timed runs each.

    They run in alternating blocks of up to 3, each block after a pause and an untimed run,
    so that both see the same machine load and neither is timed while the other's idle
    threads still spin (OpenBLAS's workers busy-wait for a while after a call).
    """
    ta: list[float] = []
    tb: list[float] = []
    while len(ta) < repeats:
        block = min(3, repeats - len(ta))
        for fn, times in ((fa, ta), (fb, tb)):
            time.sleep(0.15)  # let the other library's idle threads stop spinning
            fn()
            for _ in range(block):
                t0 = clock()
                fn()
                times.append(clock() - t0)
    return statistics.median(ta), statistics.median(tb)


def torch_conv(torch: Any, x: np.ndarray, w: np.ndarray, b: np.ndarray, dy: np.ndarray, pad: int) -> Callable[[], Any]:
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    dyt = torch.tensor(dy)

    def run() -> None:
        xt.grad = wt.grad = bt.grad = None
        torch.nn.functional.conv2d(xt, wt, bt, padding=pad).backward(dyt)
    return run


def nnplug_layer(layer: Any, params: dict[str, np.ndarray], x: np.ndarray, dy: np.ndarray) -> Callable[[], Any]:
    def run() -> None:
        _, cache = layer.forward(params, x, training=True)
        layer.backward(params, cache, dy)
    return run


def conv_rows(torch: Any, dtype: str, repeats: int, with_scipy: bool) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(0)
    for n, c, f, h, k, pad in CONV_CASES:
        x = rng.standard_normal((n, c, h, h)).astype(dtype)
        w = (rng.standard_normal((f, c, k, k)) * 0.1).astype(dtype)
        b = np.zeros(f, dtype)
        ho = h + 2 * pad - k + 1
        dy = rng.standard_normal((n, f, ho, ho)).astype(dtype)
        params = {"w": w, "b": b}
        ref = torch_conv(torch, x, w, b, dy, pad)
        engines = ["auto", "gemm"] + (["scipy"] if with_scipy and dtype == "float32" and c <= 16 else [])
        for engine in engines:
            layer = Conv2D({"filters": f, "kernel_size": k, "padding": pad, "engine": engine})
            reps = repeats if engine != "scipy" else 3
            t_nn, t_torch = paired_medians(nnplug_layer(layer, params, x, dy), ref, reps)
            chosen = layer.engine_for(x.shape, w.shape, x.dtype)
            rows.append({"case": f"conv2d {n},{c}->{f},{h}x{h},k{k},pad{pad}", "engine": f"{engine}({chosen})",
                         "dtype": dtype, "nnplug_ms": t_nn * 1e3, "torch_ms": t_torch * 1e3,
                         "ratio": t_torch / t_nn})
        # The input gradient both ways, for the record: col2im vs the rot180 full correlation.
        layer = Conv2D({"filters": f, "kernel_size": k, "padding": pad, "engine": "gemm"})
        geom = layer.geometry(x.shape[1:])
        layout = conv_engines.gemm_layout(geom)

        def col2im_dx(layout: Any = layout, w: np.ndarray = w, dy: np.ndarray = dy) -> None:
            n, c = dy.shape[0], w.shape[1]  # the whole batch as one chunk
            d2 = columns.fill_grad(dy, layout, layout.grad_buffer(w.shape[0], n, dy.dtype))
            w_t = np.ascontiguousarray(layout.weight_matrix(w).T)
            images = np.empty(c * n * layout.image_size + layout.slack, dtype=dy.dtype)
            np.ascontiguousarray(columns.crop_images(columns.col2im(w_t @ d2, layout, c, n, images), layout, c, n))

        def fullcorr_dx(geom: Any = geom, w: np.ndarray = w, dy: np.ndarray = dy) -> None:
            conv_engines.gemm_input_grad_full_correlation(w, dy, geom)

        t_a, t_b = paired_medians(col2im_dx, fullcorr_dx, repeats)
        rows.append({"case": f"conv2d {n},{c}->{f},{h}x{h},k{k},pad{pad} dx only", "engine": "col2im vs fullcorr",
                     "dtype": dtype, "nnplug_ms": t_a * 1e3, "torch_ms": float("nan"),
                     "ratio": float("nan"), "fullcorr_ms": t_b * 1e3})
    return rows


def pool_rows(torch: Any, dtype: str, repeats: int) -> list[dict[str, Any]]:
    rows = []
    n, c, h = POOL_CASE
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, h)).astype(dtype)
    dy = rng.standard_normal((n, c, h // 2, h // 2)).astype(dtype)
    xt, dyt = torch.tensor(x, requires_grad=True), torch.tensor(dy)
    for name, cls, fn in (("maxpool2d", MaxPool2D, torch.nn.functional.max_pool2d),
                          ("avgpool2d", AvgPool2D, torch.nn.functional.avg_pool2d)):
        def ref(fn: Any = fn) -> None:
            xt.grad = None
            fn(xt, 2).backward(dyt)

        t_nn, t_torch = paired_medians(nnplug_layer(cls({"pool_size": 2}), {}, x, dy), ref, repeats)
        rows.append({"case": f"{name} 2x2 {n},{c},{h}x{h}", "engine": "-", "dtype": dtype,
                     "nnplug_ms": t_nn * 1e3, "torch_ms": t_torch * 1e3, "ratio": t_torch / t_nn})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per case (median)")
    parser.add_argument("--scipy", action="store_true", help="also time the (slow) scipy engine")
    parser.add_argument("--threads", type=int, default=2, help="threads for BLAS and PyTorch")
    parser.add_argument("--timer", choices=sorted(CLOCKS), default="wall", help="elapsed or CPU time")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    import torch

    global clock
    clock = CLOCKS[args.timer]
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        blas = [f"{i['internal_api']} {i.get('architecture')} x{i['num_threads']}" for i in threadpool_info()]
        print(f"numpy BLAS: {', '.join(blas)}; torch {torch.__version__} x{torch.get_num_threads()}; "
              f"{args.timer} time; load average {os.getloadavg()[0]:.2f}")
        rows = []
        for dtype in ("float32", "float64"):
            rows += conv_rows(torch, dtype, args.repeats, args.scipy)
            rows += pool_rows(torch, dtype, args.repeats)
    print(f"{'case':44} {'engine':20} {'dtype':8} {'nnplug ms':>10} {'torch ms':>9} {'ratio':>6}")
    for r in rows:
        extra = f"  (fullcorr {r['fullcorr_ms']:.2f} ms)" if "fullcorr_ms" in r else ""
        print(f"{r['case']:44} {r['engine']:20} {r['dtype']:8} {r['nnplug_ms']:10.2f} "
              f"{r['torch_ms']:9.2f} {r['ratio']:6.2f}{extra}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
