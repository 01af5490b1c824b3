"""The benchmark never rots: every workload runs with tiny sizes and produces numbers.

No timing is asserted here (CI machines are noisy); `python -m bench` is the benchmark.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from bench.run import WORKLOADS

ROOT = Path(__file__).resolve().parents[2]


def test_every_workload_runs_and_reports_numbers(pggcl_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--dsn", pggcl_dsn, "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
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
