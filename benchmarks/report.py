"""Presenting results: the rich console table, the JSON file and the Markdown for the README.

A row's ratio to a peer is ``peer time / nnplug time`` (above 1: nnplug is faster). A target
is met when that ratio reaches the issue-7 goal for the row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import targets

PEERS = ("torch", "mygrad")


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1e3:.3g}" if seconds * 1e3 < 100 else f"{seconds * 1e3:.0f}"


def _ratio(row: dict[str, Any], peer: str) -> str:
    result = row["peers"].get(peer)
    if not result:
        return "—"
    if "ratio" not in result:
        return "n/a"
    return f"{result['ratio']:.2f}×"


def _met(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return row.get("status", "—")
    noisy = " (noisy)" if row.get("noisy") else ""
    if not row["targets"]:
        return noisy.strip(" ()")
    return ("yes" if all(t["met"] for t in row["targets"]) else "NO") + noisy


def row_cells(row: dict[str, Any]) -> list[str]:
    """case, dtype, nnplug ms (IQR), GFLOP/s, % peak, torch ms, ratio, mygrad ms, ratio, target, met."""
    timing = row.get("nnplug") or {}
    t = timing.get("median_s")
    cells = [row["name"], row["dtype"].replace("float", "f"),
             f"{_ms(t)} ±{_ms(timing['iqr_s'])}" if t is not None else "—",
             f"{row['gflops']:.1f}" if row.get("gflops") else "—",
             f"{100 * row['peak_fraction']:.0f}%" if row.get("peak_fraction") else "—"]
    for peer in PEERS:
        result = row["peers"].get(peer) or {}
        cells += [_ms(result.get("median_s")), _ratio(row, peer)]
    cells += ["; ".join(f"{t['peer']} ≥ {t['ratio']:g}" for t in row["targets"]), _met(row)]
    return cells


HEADER = ["case", "dtype", "nnplug ms ±IQR", "GFLOP/s", "of peak", "torch ms", "torch/nnplug",
          "mygrad ms", "mygrad/nnplug", "target", "met?"]


def print_report(console: Any, results: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    console.print("numpy matmul peak (best of the start and end probes): " + ", ".join(
        f"{d} {p['gflops']:.1f} GFLOP/s (n={p['n']})" for d, p in results["peak"].items()))
    table = Table(title="nnplug vs PyTorch CPU and MyGrad (median of repeats, ratio = peer time / nnplug time)",
                  show_lines=False)
    for k, name in enumerate(HEADER):
        table.add_column(name, justify="left" if k in (0, 9) else "right", overflow="fold")
    for row in results["rows"]:
        cells = row_cells(row)
        style = "red" if cells[-1].startswith("NO") else ("dim" if row.get("status") != "ok" else None)
        table.add_row(*(escape(c) for c in cells), style=style)
    console.print(table)
    for row in results["rows"]:
        if row.get("status") != "ok" or row.get("note") or row.get("peer_notes"):
            reason = row.get("reason") or row.get("note", "")
            extra = "; ".join(f"{p}: {m}" for p, m in row.get("peer_notes", {}).items())
            text = f"{row['name']} ({row['dtype']}): {'; '.join(x for x in (reason, extra) if x)}"
            console.print(f"  [dim]{escape(text)}[/dim]")
    for line in extra_lines(results):
        console.print(escape(line))
    targets.print_summary(console, results)


def extra_lines(results: dict[str, Any]) -> list[str]:
    """The memory, dtype and gradient-checker findings as short lines."""
    lines = []
    for row in results["rows"]:
        agree = row.get("agreement")
        if agree:
            who = ", ".join(agree["losses"])
            lines.append(f"{row['name']} ({row['dtype']}): the losses of 3 steps from the same weights agree "
                         f"across {who} to {agree['max_rel_diff']:.1e} (relative): "
                         + ("same computation" if agree["ok"] else "NOT the same computation"))
    extras = results.get("extras", {})
    mem = extras.get("lenet_memory")
    if mem and "error" not in mem:
        lines.append(f"LeNet step memory ({mem['dtype']}, batch {mem['batch']}): "
                     f"peak {mem['peak_bytes'] / 2**20:.2f} MiB "
                     f"vs lower bound {mem['lower_bound_bytes'] / 2**20:.2f} MiB (parameters "
                     f"{mem['param_bytes'] / 2**20:.2f} + activations {mem['activation_bytes'] / 2**20:.2f} + "
                     f"gradients {mem['param_grad_bytes'] / 2**20:.2f}), {mem['ratio']:.2f}× the bound; "
                     f"the peak includes {mem.get('scratch_bytes', 0) / 2**20:.2f} MiB of scratch buffers kept "
                     "between steps; "
                     "caches beyond the activations: " + ", ".join(
                         f"{node} {b / 2**20:.2f} MiB" for node, b in mem["cache_bytes_beyond_activations"].items()
                         if b >= 2**14))
    pool = extras.get("maxpool_cache")
    if pool and "error" not in pool:
        kinds = ", ".join(f"{a['dtype']}{tuple(a['shape'])} {a['bytes'] / 2**10:.0f} KiB"
                          + (" (view of the input)" if a["views_input"] else "") for a in pool["cache_arrays"])
        lines.append(f"max-pool 2×2 cache at {tuple(pool['input_shape'])}: {kinds}; an input-sized bool mask "
                     f"would be {pool['input_mask_bytes'] / 2**10:.0f} KiB; target (integer index per window, "
                     f"{pool['smallest_index_dtype']}, no input-sized mask) met: {'yes' if pool['met'] else 'NO'}")
    f32 = extras.get("float32")
    if f32 and "error" not in f32:
        lines.append(f"float32 end to end (LeNet: {f32['checked']} parameters, activations and gradients checked): "
                     + ("yes" if f32["met"] else f"NO, upcast: {f32['not_float32']}"))
    gc = extras.get("gradcheck")
    if gc and "error" not in gc:
        parts = [f"{r['size']} {r['mode']}: {r['n_forward']} forwards, {r['seconds'] * 1e3:.0f} ms" for r in gc["rows"]]
        lines.append("gradient checker on conv2d (float64): " + "; ".join(parts)
                     + f"; fast mode O(1) per tensor: {'yes' if gc['met'] else 'NO'}")
    for name, value in extras.items():
        if isinstance(value, dict) and "error" in value:
            lines.append(f"{name}: {value['error']}")
    return lines


def _noise_note(results: dict[str, Any]) -> str:
    noisy = [r for r in results["rows"] if r.get("noisy")]
    if not noisy:
        return ""
    return (f" {len(noisy)} of {len(results['rows'])} rows are marked noisy: some framework's IQR passed 30% "
            "of its median (other processes on the 2 cores, or this VM's own jitter); read their ratios "
            "as ±30%.")


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def markdown(results: dict[str, Any]) -> str:
    """The README table: environment line, the rows, then the memory and checker findings."""
    env = results["environment"]
    peak = results["peak"]
    blas: dict[str, Any] = next((p for p in env["threadpools"] if p["user_api"] == "blas"), {})
    lines = [
        f"Measured by `{results['command']}` on {env['cpu']} ({env['threads']} threads pinned), "
        f"numpy {env['numpy']} ({blas.get('internal_api')} {blas.get('version')}, "
        f"kernel {blas.get('architecture')}; OpenBLAS overrides in the environment: "
        f"{', '.join(f'{k}={v}' for k, v in env['env'].items()) or 'none'}), "
        f"torch {env.get('torch')}, mygrad {env.get('mygrad')}; "
        f"median of {results['repeats']} repeats after warm-up, frameworks interleaved; load average "
        f"{env['load_average_at_start'][0]:.1f} at the start, {results['load_average_at_end'][0]:.1f} at the end. "
        "numpy matmul peak: "
        + ", ".join(f"{d} {p['gflops']:.1f} GFLOP/s" for d, p in peak.items()) + ". "
        "Ratio = peer time / nnplug time (above 1: nnplug is faster)." + _noise_note(results),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" if k in (0, 9) else "---:" for k in range(len(HEADER))) + "|",
    ]
    for row in results["rows"]:
        cells = [c.replace("|", "\\|") for c in row_cells(row)]
        if cells[-1].startswith("NO"):
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"{r['name']} ({r['dtype']}): {r.get('reason') or r['note']}" for r in results["rows"]
             if r.get("reason") or r.get("note")]
    if notes:
        lines += ["", *[f"- {n}" for n in dict.fromkeys(notes)]]
    extra = extra_lines(results)
    if extra:
        lines += ["", *[f"- {line}" for line in extra]]
    return "\n".join(lines) + "\n\n" + targets.markdown(results)
