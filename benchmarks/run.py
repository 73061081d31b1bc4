"""nnplug's speed and memory against PyTorch CPU and MyGrad, measured side by side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py [--quick]
        [--dtype float32|float64|both] [--only PATTERN] [--repeats N] [--no-peers]
        [--json PATH] [--md PATH]

Threads are pinned to 2 (numpy's BLAS through threadpoolctl, torch.set_num_threads); each
case is warmed up, then timed as the median (with min and IQR) of 11 repeats. The
numpy matmul rate is the physical reference (GFLOP/s, fraction of the GEMM peak). A full run
writes ``benchmarks/results/latest.json`` and ``latest.md`` (the README's table); a partial
one (``--only``, one ``--dtype``, ``--quick``, ``--no-peers`` or fewer than 7 repeats) writes
``partial.json`` and ``partial.md`` beside them, so it never overwrites the full table. Exit
status 1 when a case raised an error, 2 on a usage error; unmet targets are reported, not
fatal.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # helpers live beside this script
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from cases import Case, conv_cases, dense_case, pool_cases, softmax_ce_case  # noqa: E402
from timing import blas_warnings, environment, gemm_peak, measure_interleaved, pin_threads  # noqa: E402

import nnplug  # noqa: E402

PEER_MODULES = {"torch": "torch", "mygrad": "mygrad"}
SKIP_ERRORS = (FileNotFoundError, NotImplementedError)
DEFAULT_REPEATS = 11  # this VM's run-to-run jitter is 10-40%...
MIN_REPEATS = 7  # ...and issue 7 asks for a median of at least 7
NOISY_IQR = 0.3  # a row whose IQR passes this fraction of its median was measured under load


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="GEMM peak probed once at n <= 1024; gradient-checker cost without the large full check")
    p.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    p.add_argument("--only", metavar="PATTERN", help="run only cases whose name or group matches (regex, any case)")
    p.add_argument("--repeats", type=int,
                   help="timed repeats per case (default 11; fewer than 7 is a smoke run, not a measurement)")
    p.add_argument("--no-peers", action="store_true", help="time nnplug only (no torch, no mygrad)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="results file (default: results/latest.json for a full run, results/partial.json otherwise)")
    p.add_argument("--md", type=Path, default=None, metavar="PATH",
                   help="Markdown table (default: the JSON path with .md)")
    args = p.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.only:
        try:
            re.compile(args.only)
        except re.error as exc:
            p.error(f"--only {args.only!r} is not a valid regular expression: {exc}")
    args.json_given = args.json is not None
    if args.json is None:
        args.json = HERE / "results" / ("partial.json" if is_partial(args) else "latest.json")
    args.md = args.md or args.json.with_suffix(".md")
    return args


def is_partial(args: argparse.Namespace) -> bool:
    """Whether the options leave out part of the full measurement (whose table the README shows)."""
    few_repeats = args.repeats is not None and args.repeats < MIN_REPEATS
    return bool(args.only or args.dtype != "both" or args.quick or args.no_peers or few_repeats)


def build_cases(dtypes: list[str]) -> list[Case]:
    from nets import digits_case, lenet_case

    cases: list[Case] = []
    for dtype in dtypes:
        cases += conv_cases(dtype)
        cases += pool_cases(dtype)
        cases += [dense_case(dtype), softmax_ce_case(dtype), lenet_case(dtype), digits_case(dtype)]
    return cases


def run_case(case: Case, repeats: int, peers: list[str], registry: nnplug.Registry) -> dict[str, Any]:
    """Time one case for nnplug and each peer (interleaved); compute rates, ratios, targets."""
    row: dict[str, Any] = {"name": case.name, "group": case.group, "dtype": case.dtype, "note": case.note,
                           "flops": case.flops, "nnplug": None, "peers": {}, "peer_notes": {},
                           "targets": [], "status": "ok"}
    missing = [t for t in case.requires if t not in registry]
    if missing:
        row.update(status="skipped", reason=f"layer type {', '.join(missing)} not registered")
        return row
    try:
        fns = {"nnplug": case.nnplug()}  # type: ignore[misc]
    except SKIP_ERRORS as exc:
        row.update(status="skipped", reason=str(exc))
        return row
    except Exception as exc:
        row.update(status="ERROR", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return row
    for peer in peers:
        if peer in case.peers:
            try:
                fns[peer] = case.peers[peer]()
            except SKIP_ERRORS as exc:
                row["peer_notes"][peer] = str(exc)
    counts = {key: repeats for key in fns}
    if case.repeats:
        counts["nnplug"] = min(repeats, case.repeats)
    try:
        if case.group == "train step":
            row["agreement"] = agreement(case, fns)
        # nnplug's layers run on their own threads with BLAS single-threaded; MyGrad's GEMMs use
        # OpenBLAS's threads, torch its OpenMP pool: three pools, settled at each switch.
        timings = measure_interleaved(fns, counts, pools={"nnplug": "nnplug", "torch": "torch"})
    except Exception as exc:
        row.update(status="ERROR", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return row
    row["noisy"] = any(t.iqr_s > NOISY_IQR * t.median_s for t in timings.values())
    row["load_1min"] = os.getloadavg()[0]
    row["nnplug"] = timings.pop("nnplug").as_dict()
    t = row["nnplug"]["median_s"]
    if case.flops:
        row["gflops"] = case.flops / t / 1e9
    for peer, timing in timings.items():
        row["peers"][peer] = {**timing.as_dict(), "ratio": timing.median_s / t}
    for target in case.targets:
        actual = row["peers"].get(target.peer, {}).get("ratio")
        if actual is not None:
            row["targets"].append({"peer": target.peer, "ratio": target.ratio, "goal": target.goal,
                                   "actual": actual, "met": actual >= target.ratio})
    return row


def agreement(case: Case, fns: dict[str, Callable[[], Any]], steps: int = 3) -> dict[str, Any]:
    """The losses of a few training steps from the same weights in every framework: the nets
    compute the same thing when they agree to rounding. Fresh steps, so the timed ones keep
    their own copies of the weights."""
    runs = {}
    for key in fns:
        step = case.nnplug() if key == "nnplug" else case.peers[key]()  # type: ignore[misc]
        runs[key] = [float(step()) for _ in range(steps)]
    reference = np.array(runs["nnplug"])
    worst = max(float(np.max(np.abs(np.array(v) - reference) / np.abs(reference))) for v in runs.values())
    return {"losses": runs, "max_rel_diff": worst, "ok": worst < (1e-3 if case.dtype == "float32" else 1e-9)}


def run_extras(quick: bool, only: re.Pattern[str] | None, registry: nnplug.Registry) -> dict[str, Any]:
    """Memory, max-pool cache, float32 end to end, the gradient checker's cost."""
    import gradcheck_cost
    import memory

    jobs: list[tuple[str, str, tuple[str, ...], Callable[[], dict[str, Any]]]] = [
        ("lenet_memory", "memory LeNet peak", ("conv2d", "maxpool2d"), memory.lenet_peak),
        ("maxpool_cache", "memory maxpool cache", ("maxpool2d",), memory.maxpool_cache),
        ("float32", "float32 end to end dtype", ("conv2d", "maxpool2d"), memory.float32_end_to_end),
        ("gradcheck", "gradcheck conv2d cost", ("conv2d",), lambda: gradcheck_cost.gradcheck_costs(quick)),
    ]
    out: dict[str, Any] = {}
    for key, title, requires, job in jobs:
        if only and not only.search(title):
            continue
        missing = [t for t in requires if t not in registry]
        if missing:
            out[key] = {"error": f"skipped, layer type {', '.join(missing)} not registered"}
            continue
        try:
            out[key] = job()
        except Exception as exc:
            out[key] = {"error": f"ERROR {type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    return out


def available_peers(no_peers: bool, console: Any) -> list[str]:
    if no_peers:
        return []
    peers = []
    for peer, module in PEER_MODULES.items():
        try:
            __import__(module)
            peers.append(peer)
        except ImportError:
            console.print(f"[yellow]{peer} is not installed (pip install -e '.[bench]'); its columns stay empty[/]")
    return peers


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    console = Console(width=max(Console().width, 170))
    wall = time.perf_counter()
    repeats = args.repeats or DEFAULT_REPEATS
    peers = available_peers(args.no_peers, console)
    if set(peers) != set(PEER_MODULES) and not args.json_given and args.json.name == "latest.json":
        args.json = args.json.with_name("partial.json")  # a peer missing: not the README's full table
        if args.md.name == "latest.md":
            args.md = args.md.with_name("partial.md")
    limiter = pin_threads(with_torch="torch" in peers)
    env = environment()
    blas = [p for p in env["threadpools"] if p["user_api"] == "blas"]
    for pool in blas:
        console.print(f"BLAS: {pool['internal_api']} {pool['version']} kernel={pool['architecture']} "
                      f"threads={pool['num_threads']} ({pool['prefix']})")
    for warning in blas_warnings(env):
        console.print(f"[yellow]warning: {warning}[/]")
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    only = re.compile(args.only, re.IGNORECASE) if args.only else None
    sizes = (512, 1024) if args.quick else (512, 1024, 2048)
    peak = {d: gemm_peak(d, repeats, sizes) for d in dtypes}
    console.print("numpy matmul peak, first probe: " + ", ".join(f"{d} {p['gflops']:.1f} GFLOP/s (n={p['n']})"
                                                   for d, p in peak.items()))
    registry = nnplug.load_registry()
    cases = [c for c in build_cases(dtypes) if not only or only.search(f"{c.group} {c.name}")]
    rows: list[dict[str, Any]] = []
    for case in cases:
        with console.status(f"{case.name} ({case.dtype})"):
            rows.append(run_case(case, repeats, peers, registry))
    extras = run_extras(args.quick, only, registry)
    # The peak is probed again at the end and the better probe kept: a busy neighbour during
    # one probe would otherwise inflate every "of peak" figure.
    for dtype in dtypes if not args.quick else []:
        again = gemm_peak(dtype, repeats, sizes)
        if again["gflops"] > peak[dtype]["gflops"]:
            peak[dtype] = again
    for row in rows:
        if row.get("gflops"):
            row["peak_fraction"] = row["gflops"] / peak[row["dtype"]]["gflops"]
    command = "python benchmarks/run.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    results = {"command": command, "repeats": repeats, "quick": args.quick, "environment": env,
               "peak": {d: {"gflops": p["gflops"], "n": p["n"], "per_size": p["per_size"]} for d, p in peak.items()},
               "rows": rows, "extras": extras, "wall_s": time.perf_counter() - wall,
               "load_average_at_end": list(os.getloadavg())}
    from report import markdown, print_report, write_json

    print_report(console, results)
    write_json(args.json, results)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(markdown(results))
    console.print(f"wrote {args.json} and {args.md} in {results['wall_s']:.0f} s")
    del limiter
    errors = [r for r in rows if r["status"] == "ERROR"] + [
        v for v in extras.values() if str(v.get("error", "")).startswith("ERROR")]
    for row in errors:
        console.print(f"[red]{row.get('name', 'extra')}: {row.get('reason') or row.get('error')}[/]")
        console.print(row.get("traceback", ""), markup=False, highlight=False)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
