"""The gradient checker's cost on a conv2d: forward evaluations and time, full versus fast mode.

Fast mode checks a few random directions per tensor, so its number of forward evaluations
must not grow with the tensors' sizes; full mode checks every entry (or ``max_entries`` of
them, sampled, per tensor). Each check runs once: it is minutes of work for the biggest
full run, and the count of evaluations, not the time, is the quantity of interest.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import nnplug

#: (label, x shape (N, C, H, W), filters): a small and a 20× larger conv2d (k3, padding 1).
SIZES = [("small", (2, 3, 8, 8), 4), ("large", (4, 8, 16, 16), 16)]
EVERY_ENTRY = 10**9  # max_entries that never samples: every entry is checked


def _check(x_shape: tuple[int, ...], filters: int, mode: str, max_entries: int) -> dict[str, Any]:
    layer: Any = nnplug.load_registry().get("conv2d")({"filters": filters, "kernel_size": 3, "padding": 1})
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    params = layer.init_params(x_shape[1:], rng)
    sizes = {"x": x.size, **{k: int(v.size) for k, v in params.items()}}
    layer.forward(params, x, training=True)  # engine "auto" decides (and caches) outside the timing
    t0 = time.perf_counter()
    report = nnplug.gradcheck_layer(layer, x, params, mode=mode, max_entries=max_entries,  # type: ignore[arg-type]
                                    raise_on_failure=False)
    return {"seconds": time.perf_counter() - t0, "n_forward": report.n_forward, "ok": report.ok,
            "max_rel_error": report.max_rel_error, "tensor_sizes": sizes}


def gradcheck_costs(quick: bool) -> dict[str, Any]:
    """Fast mode and full mode (the default 200 sampled entries per tensor) at both sizes, and
    full mode on every entry at the small size (the large one would take minutes). Quick mode
    runs only fast mode at the large size."""
    rows = []
    for label, x_shape, filters in SIZES:
        runs = [("fast", "fast", 200)]
        if label == "small" or not quick:
            runs.append(("full, ≤200 entries per tensor", "full", 200))
        if label == "small":
            runs.append(("full, every entry", "full", EVERY_ENTRY))
        for name, mode, max_entries in runs:
            result = _check(x_shape, filters, mode, max_entries)
            rows.append({"size": label, "x_shape": list(x_shape), "filters": filters, "mode": name, **result})
    fast = [r["n_forward"] for r in rows if r["mode"] == "fast"]
    constant = len(fast) > 1 and len(set(fast)) == 1
    return {"rows": rows, "fast_constant": constant, "met": constant and all(r["ok"] for r in rows)}
