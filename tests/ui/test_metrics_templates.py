"""/metrics with templates (issues #15 and #16.2): a template's instances are not one series
each; each template has its totals (pggcl_template_*) and only its busiest few instances are
series of their own, so a scrape stays the same size however many instances there are."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import pggcl
from pggcl.prometheus import BUSIEST, exposition
from pggcl.ui import create_app

INSTANCES = 200


@pytest.fixture
def http(pggcl_dsn: str) -> Iterator[TestClient]:
    with TestClient(create_app(pggcl_dsn), base_url="http://127.0.0.1:8787") as client:
        yield client


@pytest.fixture
def db(pggcl_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pggcl_dsn, autocommit=True) as conn:
        yield conn


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample, as Prometheus's own parser reads the text (it raises on what it cannot)."""
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def one(found: list[tuple[str, dict[str, str], float]], metric: str, **labels: str) -> float:
    values = [v for name, got, v in found if name == metric and got == labels]
    assert len(values) == 1, (metric, labels, values)
    return values[0]


def use_instances(db: psycopg.Connection[Any], first: int, last: int) -> None:
    """Create tenant:FIRST .. tenant:LAST by a grant each, released at once."""
    db.execute(
        "SELECT pggcl.release(g.lease_id) FROM generate_series(%s::integer, %s) i,"
        " LATERAL pggcl.try_acquire(ARRAY['tenant:' || i], 1, 'concurrency',"
        " ttl_seconds => 60) g",
        (first, last),
    )


def test_many_instances_make_template_totals_and_at_most_the_busiest_few(
    http: TestClient, db: psycopg.Connection[Any], pggcl_dsn: str
) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("db", 3)
        client.create_limit("tenant:*", 2)
    use_instances(db, 1, INSTANCES)
    # Two busy instances: they are among the busiest whatever their names.
    for name, slots in (("tenant:77", 2), ("tenant:150", 1)):
        db.execute(
            "SELECT pggcl.try_acquire(ARRAY[%s], %s, 'concurrency', ttl_seconds => 60)",
            (name, slots),
        )
    db.execute("SELECT pggcl.try_acquire(ARRAY['db'], 1, 'concurrency', ttl_seconds => 60)")

    response = http.get("/metrics")
    assert response.status_code == 200
    found = samples(response.text)
    instance_series = {
        labels["name"]
        for name, labels, _ in found
        if name == "pggcl_active_slots" and labels.get("template") == "tenant:*"
    }
    assert len(instance_series) == BUSIEST < INSTANCES
    assert {"tenant:77", "tenant:150"} <= instance_series
    assert one(found, "pggcl_active_slots", name="tenant:77", template="tenant:*") == 2
    assert one(found, "pggcl_active_slots", name="db") == 1  # plain limits as before

    of = {"template": "tenant:*"}
    assert one(found, "pggcl_template_instances", **of) == INSTANCES
    assert one(found, "pggcl_template_limit", **of) == 2
    assert one(found, "pggcl_template_active_slots", **of) == 3
    assert one(found, "pggcl_template_waiting", **of) == 0
    assert one(found, "pggcl_template_grants_total", **of) == INSTANCES + 2
    assert one(found, "pggcl_template_hold_seconds_count", **of) == INSTANCES
    assert one(found, "pggcl_template_wait_seconds_bucket", le="+Inf", **of) == INSTANCES + 2
    assert one(found, "pggcl_template_removed_instances_total", **of) == 0
    # The whole scrape stays small: the plain limit, 10 instances and one template.
    assert len(found) < 40 * (1 + BUSIEST + 1)
    assert all(labels.get("name") != "tenant:*" for _, labels, _ in found)  # no template row

    # Twice as many instances: the same number of series.
    use_instances(db, INSTANCES + 1, 2 * INSTANCES)
    again = samples(http.get("/metrics").text)
    assert len(again) == len(found)
    assert one(again, "pggcl_template_instances", **of) == 2 * INSTANCES


def test_the_template_counters_never_go_down_when_idle_instances_go(
    http: TestClient, db: psycopg.Connection[Any], pggcl_dsn: str
) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("tenant:*", 1, idle_seconds=0.05)
    use_instances(db, 1, 30)
    of = {"template": "tenant:*"}
    before = samples(http.get("/metrics").text)
    assert one(before, "pggcl_template_grants_total", **of) == 30
    for _ in range(100):  # reclaim() looks at 64 instances per template each time
        db.execute("SELECT pggcl.reclaim()")
        if not db.execute("SELECT count(*) FROM pggcl.limits").fetchone()[0]:  # type: ignore[index]
            break
        db.execute("SELECT pg_sleep(0.06)")  # the idle time itself is what makes them go
    after = samples(http.get("/metrics").text)
    assert one(after, "pggcl_template_instances", **of) == 0
    assert one(after, "pggcl_template_removed_instances_total", **of) == 30
    for metric in ("pggcl_template_grants_total", "pggcl_template_hold_seconds_count"):
        assert one(after, metric, **of) == one(before, metric, **of) == 30
    assert one(after, "pggcl_template_hold_seconds_sum", **of) == one(
        before, "pggcl_template_hold_seconds_sum", **of
    )
    assert not [labels for _, labels, _ in after if "name" in labels]  # no instance left


def test_without_templates_the_text_is_what_it_was(pggcl_dsn: str) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        limit = client.create_limit("db", 2)
        assert client.template_totals() == []
    assert "pggcl_template_" not in exposition([limit], [])
