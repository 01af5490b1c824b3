"""/metrics of the UI (issue #16, point 2): the counters and histograms beside the gauges, as
Prometheus's own parser reads them, moving with what the clients do."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import pggcl
from pggcl.errors import AcquireConcurrencySlotTimeoutError
from pggcl.models import HISTOGRAM_BOUNDS
from pggcl.prometheus import exposition
from pggcl.ui import create_app

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def http(pggcl_dsn: str) -> Iterator[TestClient]:
    with TestClient(create_app(pggcl_dsn), base_url="http://127.0.0.1:8787") as client:
        yield client


def scrape(text: str) -> tuple[dict[str, str], Samples]:
    """The families' types, and every sample by name and labels (parsed by prometheus_client,
    which raises on text it cannot read)."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, samples


def of(samples: Samples, metric: str, name: str, **labels: str) -> float:
    return samples[(metric, tuple(sorted({"name": name, **labels}.items())))]


def le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(float(bound))


def test_counters_and_histograms_move_with_the_clients(http: TestClient, pggcl_dsn: str) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("db", 1)
        with client.concurrency("db"):
            pass  # a grant at once, and a hold
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with client.concurrency("db"):
                holding.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert holding.wait(30)
            refused = pytest.raises(AcquireConcurrencySlotTimeoutError)
            with refused, client.concurrency("db", timeout_seconds=0):  # refused, no wait
                pass
            gave_up = pytest.raises(AcquireConcurrencySlotTimeoutError)
            with gave_up, client.concurrency("db", timeout_seconds=0.2):  # queued, then gave up
                pass
        finally:
            release.set()
            holder.join(30)

    response = http.get("/metrics")
    assert response.status_code == 200
    types, samples = scrape(response.text)
    for gauge in ("pggcl_limit", "pggcl_active_slots", "pggcl_waiting", "pggcl_active"):
        assert types[gauge] == "gauge"
    # (The parser names counter families without their _total, as the format defines them.)
    for counter in ("grants", "queued", "denied", "gave_up", "rejected", "reclaimed_slots"):
        assert types[f"pggcl_{counter}"] == "counter"
    assert types["pggcl_wait_seconds"] == types["pggcl_hold_seconds"] == "histogram"
    assert of(samples, "pggcl_grants_total", "db") == 2
    assert of(samples, "pggcl_queued_total", "db") == 1
    assert of(samples, "pggcl_denied_total", "db") == 1
    assert of(samples, "pggcl_gave_up_total", "db") == 1
    assert of(samples, "pggcl_rejected_total", "db") == 0
    assert of(samples, "pggcl_reclaimed_slots_total", "db") == 0
    assert of(samples, "pggcl_wait_seconds_count", "db") == 2
    assert of(samples, "pggcl_hold_seconds_count", "db") == 2
    for histogram in ("pggcl_wait_seconds", "pggcl_hold_seconds"):
        buckets = [of(samples, f"{histogram}_bucket", "db", le=le(b)) for b in HISTOGRAM_BOUNDS]
        assert buckets == sorted(buckets) and buckets[-1] == 2
    # Both grants were at once: no wait above the first bound.
    assert of(samples, "pggcl_wait_seconds_bucket", "db", le="0.001") == 2


def test_a_new_limit_has_every_family_and_its_name_is_escaped(pggcl_dsn: str) -> None:
    odd = 'odd "name" \\ here'
    with pggcl.Client(pggcl_dsn) as client:
        limit = client.create_limit(odd, 2)
    types, samples = scrape(exposition([limit]))
    assert len(types) == 12
    assert of(samples, "pggcl_grants_total", odd) == 0
    for bound in HISTOGRAM_BOUNDS:
        assert of(samples, "pggcl_hold_seconds_bucket", odd, le=le(bound)) == 0
