"""The benchmark never rots: every workload runs with tiny sizes and produces numbers.

No timing is asserted here (CI machines are noisy); `python -m bench` is the benchmark.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.run import WORKLOADS

ROOT = Path(__file__).resolve().parents[2]


def test_every_workload_runs_and_reports_numbers(pggcl_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--dsn", pggcl_dsn, "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    figures = report["figures"]
    assert {f["id"] for f in figures} == set(WORKLOADS)
    for f in figures:
        assert isinstance(f["value"], int | float) and math.isfinite(f["value"]), f
    for wid in WORKLOADS:  # the table shows every workload
        assert any(line.startswith(f"{wid} ") for line in proc.stdout.splitlines()), wid
    assert report["machine"]["postgresql"]
    _capacity_parts_ran(figures)


def _h(figures: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
    return [f for f in figures if f["id"] == "H" and what in str(f["what"])]


def _capacity_parts_ran(figures: list[dict[str, Any]]) -> None:
    """H, tiny: 1 and 2 processes on one hot limit (both modes) and on 2 and 10 limits, pgbench
    beside each, the connections of one process, and 20 waiters in 2 processes on 2 limits."""
    for label in ("one hot limit, concurrency", "one hot limit, rate", "2 limits, concurrency",
                  "10 limits, concurrency"):  # fmt: skip
        for n in (1, 2):
            (cycles,) = _h(figures, f"{label}, {n} process(es): cycles/s")
            assert cycles["value"] > 0 and cycles["baseline"] > 0, cycles  # pgbench ran too
    assert len(_h(figures, "acquire p99")) == 4
    (holding,) = _h(figures, "sync client, one thread holding a slot")
    assert holding["value"] == 2  # the session connection and one pool connection
    (order,) = _h(figures, "20 waiters, 2 processes, 2 limits: granted in queue order")
    assert order["ok"] and order["details"]["granted"] == 20, order
    (used,) = _h(figures, "20 waiters, 2 processes, 2 limits: server connections")
    assert used["ok"], used
