"""The conformance suite (scenarios.json, driver.py) run against the Python sync client and
the Node client, each through its adapter program."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.driver import run_scenario, scenarios
from tests.conformance.node import built_node_client

PYTHON_ADAPTER = [sys.executable, str(Path(__file__).with_name("adapter_python.py"))]


def _adapter(client: str) -> list[str]:
    if client == "python":
        return PYTHON_ADAPTER
    node_dir = built_node_client()
    return ["node", str(node_dir / "dist" / "test" / "adapter.js")]


@pytest.mark.parametrize("client", ["python", "node"])
@pytest.mark.parametrize("scenario", scenarios(), ids=lambda s: s["name"])
def test_conformance(scenario: dict[str, Any], client: str, pggcl_dsn: str) -> None:
    run_scenario(scenario, _adapter(client), pggcl_dsn)
