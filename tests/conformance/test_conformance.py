"""The conformance suite (scenarios.json, driver.py) run against the Python sync client, the
Python async client and the Node client, each through its adapter program.

The scenarios use distinct limit names, so for each client they run at once, in one database
(a few seconds in all instead of a minute); a failure names every scenario that failed.
``PGGCL_CONFORMANCE_SERIAL=1`` runs them one after the other instead.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conformance.driver import run_scenario, scenarios
from tests.conformance.node import built_node_client

PYTHON_ADAPTER = [sys.executable, str(Path(__file__).with_name("adapter_python.py"))]
PYTHON_ASYNC_ADAPTER = [sys.executable, str(Path(__file__).with_name("adapter_python_async.py"))]


def _adapter(client: str) -> list[str]:
    if client == "python":
        return PYTHON_ADAPTER
    if client == "python-async":
        return PYTHON_ASYNC_ADAPTER
    node_dir = built_node_client()
    return ["node", str(node_dir / "dist" / "test" / "adapter.js")]


@pytest.mark.parametrize("client", ["python", "python-async", "node"])
def test_conformance(client: str, pggcl_dsn: str) -> None:
    adapter = _adapter(client)
    todo = scenarios()
    workers = 1 if os.environ.get("PGGCL_CONFORMANCE_SERIAL") else len(todo)
    failures: list[str] = []

    def run(scenario: dict[str, object]) -> None:
        try:
            run_scenario(scenario, adapter, pggcl_dsn)
        except AssertionError as exc:
            failures.append(str(exc))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, todo))
    assert not failures, "\n".join(failures)
