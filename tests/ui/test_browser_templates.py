"""Templates in the UI, in a real browser (issues #15 and #16.2): the limits page shows each
template apart (its limit, instances, occupancy and grants of all instances together) with its
busiest few instances, live; a template's page lists its instances a page at a time; an
instance's own page stays live even when it is not among the busiest.

Every wait is Playwright's auto-waiting `expect(...)`; nothing sleeps, nothing times anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pggcl
from pggcl.ui.per_template import PAGE, SHOWN
from tests.ui.conftest import RunningUi

pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from playwright.sync_api import Page, expect

INSTANCES = PAGE + 11


@pytest.fixture
def db(pggcl_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pggcl_dsn, autocommit=True) as conn:
        yield conn


def take(db: psycopg.Connection[Any], name: str, slots: int = 1) -> None:
    """A TTL lease of `slots` on `name` (creating it from its template), held for the test."""
    row = db.execute(
        "SELECT granted FROM pggcl.try_acquire(ARRAY[%s], %s, 'concurrency', ttl_seconds => 120)",
        (name, slots),
    ).fetchone()
    assert row is not None and row[0]


@pytest.fixture
def tenants(db: psycopg.Connection[Any], pggcl_dsn: str) -> psycopg.Connection[Any]:
    """`db` (3 slots), the template `tenant:*` (2 each) and INSTANCES instances of it, one of
    them, tenant:7, full."""
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("db", 3)
        client.create_limit("tenant:*", 2)
    db.execute(
        "SELECT pggcl.release(g.lease_id) FROM generate_series(1, %s) i,"
        " LATERAL pggcl.try_acquire(ARRAY['tenant:' || i], 1, 'concurrency',"
        " ttl_seconds => 60) g",
        (INSTANCES,),
    )
    take(db, "tenant:7", 2)
    return db


def test_the_limits_page_shows_templates_apart_with_their_busiest_few(
    page: Page, ui: RunningUi, tenants: psycopg.Connection[Any]
) -> None:
    page.goto(ui.url)
    expect(page.locator("#live")).to_have_text("live")
    # The limits table has the plain limit only: no instance rows, whatever their number.
    expect(page.locator("#limits tbody tr")).to_have_count(1)
    expect(page.locator('#limits tbody tr[data-name="db"]')).to_be_visible()

    row = page.locator('#templates tr[data-template="tenant:*"]')
    expect(row.locator('[data-field="limit"]')).to_have_text("2")
    expect(row.locator('[data-field="instances"]')).to_have_text(str(INSTANCES))
    expect(row.locator('[data-field="occupancy"]')).to_have_text("2 in use")
    expect(row.locator('[data-field="grants"]')).to_have_text(str(INSTANCES + 1))
    busiest = row.locator('[data-field="busiest"] a')
    expect(busiest).to_have_count(SHOWN)
    expect(busiest.first).to_have_text("tenant:7")
    expect(row.locator('[data-field="busiest"]')).to_contain_text("tenant:7 2/2")

    # Live: a new busy instance joins the busiest, and the totals move.
    take(tenants, "tenant:zz", 2)
    expect(row.locator('[data-field="instances"]')).to_have_text(str(INSTANCES + 1))
    expect(row.locator('[data-field="occupancy"]')).to_have_text("4 in use")
    expect(busiest.nth(1)).to_have_text("tenant:zz")
    expect(busiest).to_have_count(SHOWN)
    expect(page.locator("#limits tbody tr")).to_have_count(1)

    # A busiest instance's link opens that limit's page.
    busiest.first.click()
    expect(page.locator("h1")).to_have_text("tenant:7")
    expect(page.locator('#summary [data-field="held"]')).to_have_text("2")


def test_a_templates_page_lists_its_instances_a_page_at_a_time(
    page: Page, ui: RunningUi, tenants: psycopg.Connection[Any]
) -> None:
    page.goto(ui.url)
    page.locator('#templates tr[data-template="tenant:*"] [data-field="link"]').click()
    expect(page.locator("h1")).to_have_text("tenant:*")
    expect(page.locator('#summary [data-field="instances"]')).to_have_text(str(INSTANCES))
    rows = page.locator("#instances tbody tr")
    expect(rows).to_have_count(PAGE)
    expect(rows.first).to_have_attribute("data-name", "tenant:1")
    expect(page.locator("#first-page")).to_have_count(0)

    page.locator("#next-page").click()
    expect(rows).to_have_count(INSTANCES - PAGE)
    expect(page.locator("#next-page")).to_have_count(0)
    names = rows.evaluate_all("rows => rows.map((r) => r.dataset.name)")
    assert names == sorted(names) and len(set(names)) == INSTANCES - PAGE
    page.locator("#first-page").click()
    expect(rows).to_have_count(PAGE)

    missing = page.request.get(f"{ui.url}/template?name=nothing:*")
    assert missing.status == 404 and "No such limit" in missing.text()


def test_an_instance_not_among_the_busiest_stays_live_on_its_page(
    page: Page, ui: RunningUi, tenants: psycopg.Connection[Any]
) -> None:
    for name in ("tenant:1", "tenant:2", "tenant:3"):  # with tenant:7, busier than it will be
        take(tenants, name, 2)
    page.goto(f"{ui.url}/limit?name=tenant:30")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator('#summary [data-field="held"]')).to_have_text("0")
    take(tenants, "tenant:30")  # read by name: it is not among the busiest, even now
    expect(page.locator('#summary [data-field="held"]')).to_have_text("1")
    expect(page.locator("#gone")).to_be_hidden()
