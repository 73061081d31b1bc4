"""The issue-7 targets, one line each: what was measured against each goal, and whether it
was met. Ratio goals gather the rows that carry them; the memory, dtype and gradient-checker
goals come from the extra checks."""

from __future__ import annotations

from typing import Any


def summary(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(target, measured, met)`` rows; ``met`` is "yes", "NO" or "not run"."""
    goals: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    noisy_rows = {f"{row['name']} {row['dtype']}" for row in results["rows"] if row.get("noisy")}
    for row in results["rows"]:
        for target in row["targets"]:
            goals.setdefault(target["goal"], []).append((f"{row['name']} {row['dtype']}", target))
    out = []
    for goal, hits in goals.items():
        missed = [(name, t) for name, t in hits if not t["met"]]
        worst_name, worst = min(hits, key=lambda h: h[1]["actual"] / h[1]["ratio"])
        noisy = sum(1 for name, _ in hits if name in noisy_rows)
        measured = f"{len(hits) - len(missed)}/{len(hits)} rows; lowest {worst['actual']:.2f}× ({worst_name})"
        measured += f"; {noisy} noisy" if noisy else ""
        if missed and len(missed) <= 4:
            measured += "; missed: " + ", ".join(f"{n} {t['actual']:.2f}×" for n, t in missed)
        out.append((goal, measured, "NO" if missed else "yes"))
    extras = results.get("extras", {})
    out.append(_extra(extras, "float32", "a float32 model stays float32 end to end",
                      lambda e: f"{e['checked']} LeNet arrays checked, upcasts: {e['not_float32'] or 'none'}"))
    out.append(_extra(extras, "lenet_memory", "LeNet step peak memory reported beside its lower bound",
                      lambda e: f"peak {e['peak_bytes'] / 2**20:.2f} MiB, bound {e['lower_bound_bytes'] / 2**20:.2f} "
                                f"MiB ({e['ratio']:.2f}×)", always_met=True))
    out.append(_extra(extras, "maxpool_cache", "max-pool cache: integer index per window, smallest dtype",
                      lambda e: ", ".join(f"{a['dtype']} {tuple(a['shape'])}" for a in e["cache_arrays"])
                      + f"; {e['cache_bytes'] / 2**10:.0f} KiB vs a {e['input_mask_bytes'] / 2**10:.0f} KiB "
                        "input-sized mask"))
    out.append(_extra(extras, "gradcheck", "gradient checker fast mode: O(1) forward evaluations per tensor",
                      lambda e: "; ".join(f"{r['size']} {r['mode']}: {r['n_forward']}" for r in e["rows"])))
    return out


def _extra(extras: dict[str, Any], key: str, goal: str, measured: Any,
           always_met: bool = False) -> tuple[str, str, str]:
    found = extras.get(key)
    if not found or "error" in found:
        return goal, (found or {}).get("error", "not run (filtered out)"), "not run"
    return goal, measured(found), "yes" if always_met or found["met"] else "NO"


def markdown(results: dict[str, Any]) -> str:
    lines = ["| target (issue 7) | measured | met? |", "|---|---|---|"]
    for goal, measured, met in summary(results):
        lines.append(f"| {goal} | {measured} | {'**NO**' if met == 'NO' else met} |".replace("\n", " "))
    return "\n".join(lines) + "\n"


def print_summary(console: Any, results: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="issue-7 targets")
    for name in ("target", "measured", "met?"):
        table.add_column(name, overflow="fold")
    for goal, measured, met in summary(results):
        table.add_row(escape(goal), escape(measured), met, style="red" if met == "NO" else None)
    console.print(table)
