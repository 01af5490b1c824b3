"""The counters in `pggcl inspect` and `--output json` (issue #16, point 1)."""

from __future__ import annotations

import pytest

import pggcl
from pggcl.errors import AcquireConcurrencySlotTimeoutError
from pggcl.models import HISTOGRAM_BOUNDS
from tests.cli.conftest import as_json, cli


def test_inspect_and_json_show_the_counters(pggcl_dsn: str) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("db", 1)
        with client.concurrency("db"):
            refused = pytest.raises(AcquireConcurrencySlotTimeoutError)
            with refused, client.concurrency("db", timeout_seconds=0):
                pass
        with client.concurrency("db"):
            pass

    shown = cli("inspect", "db", dsn=pggcl_dsn)
    assert shown.exit_code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "grants:                2" in lines
    assert "queued (had to wait):  0" in lines
    assert "denied (try, no wait): 1" in lines
    assert "gave up (waiting):     0" in lines
    assert "reclaimed slots:       0" in lines
    assert any(line.startswith("hold:") and line.endswith("over 2 leases") for line in lines)

    data = as_json(cli("inspect", "db", "--output", "json", dsn=pggcl_dsn).stdout)
    counted = {k: data[k] for k in ("grants", "enqueued", "denied", "gave_up", "rejected")}
    assert counted == {"grants": 2, "enqueued": 0, "denied": 1, "gave_up": 0, "rejected": 0}
    assert data["reclaimed_slots"] == 0
    assert data["wait_seconds_count"] == data["hold_seconds_count"] == 2
    assert data["wait_seconds_buckets"] == [2] * len(HISTOGRAM_BOUNDS)  # both at once
    assert len(data["hold_seconds_buckets"]) == len(HISTOGRAM_BOUNDS)
    assert data["hold_seconds_buckets"][-1] == 2
    assert data["hold_seconds_sum"] >= 0

    listed = as_json(cli("ls", "--output", "json", dsn=pggcl_dsn).stdout)
    assert [(row["name"], row["grants"], row["denied"]) for row in listed] == [("db", 2, 1)]
