"""Screenshots of the limits page and of a limit's page, for the README (docs/ui-*.png, refreshed
with PGGCL_UPDATE_SCREENSHOTS=1; otherwise written under build/screenshots).

Each step waits until the open page shows it, so the chart records each change as a step.
"""

from __future__ import annotations

import pytest

import pggcl
from tests.ui.conftest import SCREENSHOTS, HolderProcess, serve_ui, take

pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from playwright.sync_api import Browser, Page, expect


def occupancy(page: Page, name: str, text: str) -> None:
    expect(page.locator(f'tr[data-name="{name}"] .bar-text')).to_have_text(text)


def test_screenshots(browser: Browser, pggcl_dsn: str, holders: list[HolderProcess]) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("database", 5)
        client.create_limit("gpu", 2)
        client.create_limit("partner-api", 10, slot_decay_per_second=0.5)
        client.create_limit("nightly-batch", 1, active=False)
        client.create_limit("search-index", 3)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # A short chart window, so that the seconds this test lasts fill the chart.
    with serve_ui(pggcl_dsn, window=20.0) as ui:
        context = browser.new_context(viewport={"width": 1180, "height": 640})
        page = context.new_page()
        try:
            page.goto(ui.url)
            expect(page.locator("#live")).to_have_text("live")
            take(pggcl_dsn, "gpu", 2, "trainer-7")
            take(pggcl_dsn, "partner-api", 6, "crawler", mode="rate_limit")
            take(pggcl_dsn, "database", 3, "etl-nightly")
            holders.append(HolderProcess(pggcl_dsn, "gpu"))
            occupancy(page, "gpu", "2 / 2")
            occupancy(page, "database", "3 / 5")
            expect(page.locator('tr[data-name="gpu"] [data-field="waiting"]')).to_have_text("1")
            page.set_viewport_size({"width": 1180, "height": 420})
            page.screenshot(path=str(SCREENSHOTS / "ui-limits.png"))
            page.set_viewport_size({"width": 1180, "height": 640})

            page.get_by_role("link", name="database", exact=True).click()
            bar = page.locator("#summary .bar-text")
            expect(bar).to_have_text("3 / 5")
            expect(page.locator("#live")).to_have_text("live")
            steps = [("api-worker-1", 1, "4 / 5"), ("api-worker-2", 1, "5 / 5")]
            leases = []
            for holder, slots, shown in steps:
                leases.append(take(pggcl_dsn, "database", slots, holder))
                expect(bar).to_have_text(shown)
            # A request that waits for a slot, granted when one is released: the wait chart
            # shows how long it waited.
            holders.append(HolderProcess(pggcl_dsn, "database"))
            expect(page.locator("#queue tbody tr")).to_have_count(1)
            with pggcl.Client(pggcl_dsn) as client:
                client.release(leases[0])
            expect(page.locator("#queue tbody tr")).to_have_count(0)
            expect(page.locator("#wait-chart rect.column")).not_to_have_count(0)
            holders.append(HolderProcess(pggcl_dsn, "database", "--occupy", "2"))
            expect(page.locator("#queue tbody tr")).to_have_count(1)
            expect(page.locator("#holders tbody tr")).to_have_count(3)
            page.screenshot(path=str(SCREENSHOTS / "ui-limit.png"), full_page=True)
        finally:
            context.close()
    assert (SCREENSHOTS / "ui-limits.png").stat().st_size > 10_000
    assert (SCREENSHOTS / "ui-limit.png").stat().st_size > 10_000
