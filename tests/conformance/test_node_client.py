"""The Node client's own tests (clients/node/test, Node's test runner), cross-language ones
included (they start Python holders and waiters with this interpreter):

- client.test.js against a fresh database of this run's PostgreSQL;
- faults.test.js against a server of its own (clients/node/test/server.py), which it restarts
  and puts PgBouncer in front of (its pooler tests skip, saying so, without pgbouncer).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conformance.node import built_node_client, node_env


def _node_test(file: str, env: dict[str, str]) -> None:
    node_dir = built_node_client()
    done = subprocess.run(
        ["node", "--test", "--test-concurrency=1", f"dist/test/{file}"],
        cwd=node_dir,
        env={**env, "PGGCL_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = f"{done.stdout[-8000:]}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"node --test {file} failed:\n{output}"


@pytest.mark.timeout(300)
def test_node_client(pggcl_dsn: str) -> None:
    _node_test("client.test.js", node_env(pggcl_dsn))


@pytest.mark.timeout(300)
def test_node_client_faults() -> None:
    _node_test("faults.test.js", dict(node_env("")))
