"""The Node client's own tests (clients/node/test, Node's test runner) against a fresh
database of this run's PostgreSQL, cross-language ones included (they start Python holders
and waiters with this interpreter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conformance.node import built_node_client, node_env


@pytest.mark.timeout(300)
def test_node_client(pggcl_dsn: str) -> None:
    node_dir = built_node_client()
    env = {**node_env(pggcl_dsn), "PGGCL_PYTHON": sys.executable}
    done = subprocess.run(
        ["node", "--test", "--test-concurrency=1", "dist/test/client.test.js"],
        cwd=node_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = f"{done.stdout[-8000:]}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"node --test failed:\n{output}"
