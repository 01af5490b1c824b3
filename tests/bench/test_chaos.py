"""The chaos command in CI size (issue #12, point 7: "CI runs a one-minute version"):
`python -m bench.chaos --seconds 60`, with its faults (restarts fast and immediate, killed
connections, SIGKILLed workers). Asserts what it prints: no error reached user code, no limit
exceeded, nothing left held or queued after the grace.

The whole output is kept in build/chaos/ (one file per run, git-ignored) and shown by a
failing assertion, so that a failure's cause can be read afterwards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 60
KEPT = ROOT / "build" / "chaos"


def _keep(out: str, err: str) -> Path:
    KEPT.mkdir(parents=True, exist_ok=True)
    path = KEPT / f"chaos-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.txt"
    path.write_text(f"{out}\n--- stderr ---\n{err}")
    return path


@pytest.mark.timeout(SECONDS + 180)
def test_chaos_keeps_every_limit_leaves_nothing_and_no_error_reaches_user_code() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--seconds", str(SECONDS), "--workers", "6"],
        cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 170, check=False,
    )  # fmt: skip
    out = proc.stdout
    kept = _keep(out, proc.stderr)
    print(out)
    whole = f"{out}\n--- stderr (last 5000 characters) ---\n{proc.stderr[-5000:]}\n(kept in {kept})"
    overlaps = re.findall(r"^  (chaos-\S+)\s+(\d+) of (\d+)", out, re.M)
    assert len(overlaps) == 3, whole
    for name, peak, limit in overlaps:
        assert int(peak) <= int(limit), f"{name}: {peak} held at once, limit {limit}\n{whole}"
        assert int(peak) >= 1, f"{name} was never held: the run proves nothing\n{whole}"
    left = re.search(r"(\d+) lease rows, (\d+) waiter rows, (\d+) held slots", out)
    assert left is not None, whole
    assert left.groups() == ("0", "0", "0"), f"{left.group(0)}\n{whole}"
    assert re.search(r"faults: \{.+\}", out), f"no fault was injected\n{whole}"
    errors = re.search(r"^errors that reached user code: (\d+)$", out, re.M)
    assert errors is not None, whole
    assert errors.group(1) == "0", f"errors reached user code\n{whole}"
    assert proc.returncode == 0, whole
