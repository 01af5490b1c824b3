"""The conformance suite (scenarios.json, driver.py) run against the Python sync client, the
Python async client and the Node client, each through its adapter program.

The scenarios use distinct limit names, so for each client they run side by side (7 at a
time), in one database; a failure names every scenario that failed.
``PGGCL_CONFORMANCE_SERIAL=1`` runs them one after the other instead.

The suite must also be able to fail a client: each client is run, with its early-event buffer
disabled (events for a waiter id it does not know yet are dropped, as a client written from a
naive reading of the protocol would), through the early_notification scenario, which must
then fail at B's grant.
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
    # At most 7 scenarios at once: each runs 2 or 3 adapter processes of a few connections,
    # and the three clients' runs may meet on one server beside the rest of the suite.
    workers = 1 if os.environ.get("PGGCL_CONFORMANCE_SERIAL") else min(7, len(todo))
    failures: list[str] = []

    def run(scenario: dict[str, object]) -> None:
        try:
            run_scenario(scenario, adapter, pggcl_dsn)
        except AssertionError as exc:
            failures.append(str(exc))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, todo))
    assert not failures, "\n".join(failures)


# Variants without the early-event buffer, made here and nowhere else: Dispatcher.deliver
# keeps only events for waiters already registered.
_PYTHON_WITHOUT_BUFFER = """
import runpy, sys
from pggcl.core.notifications import Dispatcher
deliver = Dispatcher.deliver
def drop_early(self, waiter_id, event, now):
    if self.box(waiter_id) is not None:
        deliver(self, waiter_id, event, now)
Dispatcher.deliver = drop_early
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

_NODE_WITHOUT_BUFFER = """
import {{ Dispatcher }} from {dispatch};
const deliver = Dispatcher.prototype.deliver;
Dispatcher.prototype.deliver = function (waiterId, event) {{
  if (this.boxes.has(waiterId)) deliver.call(this, waiterId, event);
}};
"""


def _without_early_buffer(client: str, tmp_path: Path) -> list[str]:
    adapter = _adapter(client)
    if client != "node":
        return [adapter[0], "-c", _PYTHON_WITHOUT_BUFFER, *adapter[1:]]
    dispatch = Path(adapter[1]).parents[1] / "src" / "dispatch.js"
    patch = tmp_path / "drop_early.mjs"
    patch.write_text(_NODE_WITHOUT_BUFFER.format(dispatch=repr(dispatch.as_uri())))
    return [adapter[0], "--import", patch.as_uri(), *adapter[1:]]


@pytest.mark.parametrize("client", ["python", "python-async", "node"])
def test_early_notification_fails_a_client_that_drops_early_events(
    client: str, pggcl_dsn: str, tmp_path: Path
) -> None:
    (scenario,) = [s for s in scenarios() if s["name"] == "early_notification"]
    broken = _without_early_buffer(client, tmp_path)
    with pytest.raises(AssertionError) as failed:
        run_scenario(scenario, broken, pggcl_dsn)
    # It fails where the grant should come (the reply was held until after the g:), not earlier.
    assert "early_notification step 9 " in str(failed.value), failed.value
    assert "no event {'event': 'granted', 'tag': 'b'} within" in str(failed.value), failed.value
