"""Building the Node client (clients/node) for the tests: npm install when the lock changed,
then tsc. Skips, saying why, only where `node` or `npm` is missing."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"


def _run(*args: str) -> None:
    done = subprocess.run(args, cwd=NODE_DIR, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def built_node_client() -> Path:
    """clients/node with its npm dependencies installed and its TypeScript compiled."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: the Node client cannot be tested here")
    # One build at a time: pytest-xdist workers share the directory.
    with (NODE_DIR / ".build-lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        _build()
    return NODE_DIR


def _build() -> None:
    lock = NODE_DIR / "package-lock.json"
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        _run("npm", "ci", "--no-audit", "--no-fund")
    sources = [p for d in ("src", "test") for p in (NODE_DIR / d).glob("*.ts")]
    stamp = NODE_DIR / "dist" / ".built"
    newest = max(p.stat().st_mtime for p in [*sources, NODE_DIR / "tsconfig.json"])
    if not stamp.exists() or stamp.stat().st_mtime < newest:
        _run("npx", "--no-install", "tsc", "-p", ".")
        stamp.touch()


def node_env(dsn: str) -> dict[str, str]:
    return {**os.environ, "PGGCL_TEST_DSN": dsn}
