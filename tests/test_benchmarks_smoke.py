"""The benchmark harness runs (tiny mode: one repeat, dense only, no peers) so it cannot rot.

Speed itself is never asserted here: timings belong to ``benchmarks/run.py``'s full run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUN), *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_benchmark_harness_tiny_run_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = _run("--quick", "--only", "dense|softmax", "--repeats", "1", "--no-peers", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    rows = {(r["name"], r["dtype"]): r for r in results["rows"]}
    assert set(rows) == {(name, dtype) for name in ("dense 784→256 N=128", "softmax-CE N=128, 10 classes")
                         for dtype in ("float32", "float64")}
    for row in rows.values():
        assert row["status"] == "ok"
        assert row["nnplug"]["median_s"] > 0 and row["nnplug"]["repeats"] == 1
        assert row["peers"] == {}
    assert rows[("dense 784→256 N=128", "float32")]["gflops"] > 0
    assert {"float32", "float64"} == set(results["peak"])
    assert all(p["gflops"] > 0 for p in results["peak"].values())
    assert any(pool["user_api"] == "blas" for pool in results["environment"]["threadpools"])
    md = out.with_suffix(".md").read_text()
    assert "| case | dtype | nnplug ms ±IQR |" in md
    assert md.count("| dense 784→256 N=128 |") == 2
    # The dense rows carry the MyGrad goal; with no peers run, no ratio can be claimed as met.
    assert "| target (issue 7) | measured | met? |" in md
    assert "faster than MyGrad" not in md
    assert "| a float32 model stays float32 end to end | not run (filtered out) | not run |" in md
    assert "BLAS:" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--dtype", "float16"], "invalid choice"),
    (["--only", "("], "not a valid regular expression"),
])
def test_benchmark_harness_refuses_bad_options(args: list[str], message: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def _parse_args(*args: str) -> Any:
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse_args(list(args))


@pytest.mark.parametrize("args", [["--only", "conv2d"], ["--dtype", "float64"], ["--quick"], ["--no-peers"],
                                  ["--repeats", "3"]])
def test_a_partial_benchmark_run_leaves_the_full_table_alone(args: list[str]) -> None:
    parsed = _parse_args(*args)
    assert parsed.json == ROOT / "benchmarks" / "results" / "partial.json"
    assert parsed.md == ROOT / "benchmarks" / "results" / "partial.md"


def test_a_full_benchmark_run_writes_the_readme_table_and_json_overrides_it(tmp_path: Path) -> None:
    assert _parse_args("--repeats", "9").json == ROOT / "benchmarks" / "results" / "latest.json"
    assert _parse_args("--only", "LeNet", "--json", str(tmp_path / "x.json")).md == tmp_path / "x.md"


def test_scratch_reuse_benchmark_runs_both_settings() -> None:
    script = ROOT / "benchmarks" / "scratch_reuse.py"
    proc = subprocess.run([sys.executable, str(script), "--rounds", "1"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in ("digits CNN step", "LeNet step", "scratch kept (default)", "scratch none kept", "speedup from reuse"):
        assert line in proc.stdout


@pytest.mark.parametrize(("script", "args", "lines"), [
    ("blas_spin_probe.py", ["--rounds", "1"],
     ["after a 0.3 s pause", "right after a 2-thread GEMM", "right after another split", "wall/CPU"]),
    ("split_threshold.py", ["--rounds", "1"], ["speedup on 2 threads", "65536:"]),
])
def test_threading_probes_run_and_print_every_state(script: str, args: list[str], lines: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in lines:
        assert line in proc.stdout
