"""ruff and mypy (strict) over the whole repository, as part of every test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ],
    ids=lambda cmd: " ".join(cmd),
)
def test_static_checks(cmd: list[str]) -> None:
    tool = Path(sys.executable).parent / cmd[0]
    if not tool.exists():
        pytest.skip(f"{cmd[0]} is not installed (pip install -e '.[dev]')")
    proc = subprocess.run(
        [str(tool), *cmd[1:]], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
