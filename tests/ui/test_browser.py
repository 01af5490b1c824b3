"""The UI in a real browser (Debian's Chromium, headless, driven by Playwright).

Every wait is Playwright's auto-waiting `expect(...)`, which returns as soon as the page shows
what is expected (an event), within its timeout; nothing sleeps, nothing times anything.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

import pggcl
from tests.ui.conftest import HolderProcess, RunningUi, take

pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from playwright.sync_api import Page, expect


def open_live(page: Page, url: str) -> None:
    """Open a page and wait until its event stream is connected."""
    page.goto(url)
    expect(page.locator("#live")).to_have_text("live")


def names(dsn: str) -> list[str]:
    with pggcl.Client(dsn) as client:
        return [limit.name for limit in client.list_limits()]


def read(dsn: str, name: str) -> pggcl.ConcurrencyLimit:
    with pggcl.Client(dsn) as client:
        return client.read_limit(name)


def submit_form(page: Page, button: str, **fields: str) -> None:
    labels = {
        "name": "Name",
        "limit": "Concurrency Limit",
        "decay": "Slot Decay Per Second",
    }
    for key, value in fields.items():
        page.get_by_label(labels[key], exact=True).fill(value)
    page.get_by_role("button", name=button, exact=True).click()


def test_create_validate_edit_deactivate_delete(page: Page, ui: RunningUi, pggcl_dsn: str) -> None:
    open_live(page, ui.url)
    expect(page.locator("#empty")).to_have_text("No limits yet.")

    # A bad name is shown next to Name (the field the engine's error names), and nothing is
    # saved.
    page.get_by_role("link", name="New limit").click()
    submit_form(page, "Create", name="db/primary", limit="5")
    expect(page.locator("#f-name-error")).to_contain_text("must not contain any of / % & > <")
    expect(page.get_by_label("Name", exact=True)).to_have_attribute("aria-invalid", "true")
    assert names(pggcl_dsn) == []

    # A bad value likewise, next to its own field; what was typed stays in the form.
    submit_form(page, "Create", name="database", limit="-1")
    expect(page.locator("#f-limit-error")).to_contain_text("it must be 0 or more slots")
    expect(page.locator("#f-name-error")).to_have_count(0)
    expect(page.get_by_label("Name", exact=True)).to_have_value("database")
    submit_form(page, "Create", limit="many")
    expect(page.locator("#f-limit-error")).to_contain_text("must be a whole number")
    assert names(pggcl_dsn) == []

    submit_form(page, "Create", limit="5", decay="0")
    expect(page).to_have_url(re.compile(r"/limit\?name=database"))
    expect(page.locator(".banner.notice")).to_have_text("Created limit 'database'.")
    expect(page.locator('#summary [data-field="limit"]')).to_have_text("5")
    assert read(pggcl_dsn, "database").limit == 5

    # Edit: the form comes filled in; a new limit and decay are saved.
    page.get_by_role("link", name="Edit", exact=True).click()
    expect(page.get_by_label("Concurrency Limit", exact=True)).to_have_value("5")
    submit_form(page, "Save", limit="10", decay="0.5")
    expect(page.locator(".banner.notice")).to_have_text("Saved limit 'database'.")
    expect(page.locator('#summary [data-field="decay"]')).to_have_text("0.5")
    saved = read(pggcl_dsn, "database")
    assert (saved.limit, saved.slot_decay_per_second, saved.active) == (10, 0.5, True)

    # Deactivate from the limits page: one click.
    open_live(page, ui.url)
    row = page.locator('tr[data-name="database"]')
    row.get_by_role("button", name="Deactivate").click()
    expect(page.locator(".banner.notice")).to_contain_text("Deactivated limit 'database'")
    expect(row.locator('[data-field="active_text"]')).to_have_text("no")
    assert read(pggcl_dsn, "database").active is False
    row.get_by_role("button", name="Activate").click()
    expect(row.locator('[data-field="active_text"]')).to_have_text("yes")
    assert read(pggcl_dsn, "database").active is True

    # Delete asks first; Cancel keeps the limit, the button deletes it.
    row.get_by_role("link", name="Delete").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete limit database?")
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(re.compile(r"/limit\?name=database$"))
    assert names(pggcl_dsn) == ["database"]
    page.get_by_role("link", name="Delete", exact=True).click()
    page.get_by_role("button", name="Delete database").click()
    expect(page.locator(".banner.notice")).to_have_text("Deleted limit 'database'.")
    expect(page.locator('tr[data-name="database"]')).to_have_count(0)
    assert names(pggcl_dsn) == []

    # Limits made and removed elsewhere come and go in the open page.
    expect(page.locator("#live")).to_have_text("live")
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("made-elsewhere", 3)
        expect(page.locator('tr[data-name="made-elsewhere"] .bar-text')).to_have_text("0 / 3")
        expect(page.locator("#empty")).to_be_hidden()
        client.delete_limit("made-elsewhere")
    expect(page.locator("tbody tr")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()


def test_live_holders_queue_and_releasing_a_lease(
    page: Page, ui: RunningUi, pggcl_dsn: str, holders: list[HolderProcess]
) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("gpu", 1)
    open_live(page, f"{ui.url}/limit?name=gpu")
    expect(page.locator('[data-empty="holders"]')).to_be_visible()
    held = page.locator("#holders tbody tr")
    waiting = page.locator("#queue tbody tr")

    # Another process takes the slot: the open page shows it, pushed by the server.
    holders.append(HolderProcess(pggcl_dsn, "gpu"))
    expect(held).to_have_count(1)
    expect(held.locator('[data-field="holder"]')).to_contain_text(f"{holders[0].proc.pid}")
    expect(page.locator("#summary .bar-text")).to_have_text("1 / 1")
    first_lease = held.get_attribute("data-lease")

    # A third process waits: the queue shows it.
    holders.append(HolderProcess(pggcl_dsn, "gpu"))
    expect(waiting).to_have_count(1)
    expect(waiting.locator('[data-field="position"]')).to_have_text("1")
    expect(page.locator('#summary [data-field="waiting"]')).to_have_text("1")

    # Release the first (stuck) lease from the UI: the waiter gets the slot.
    page.once("dialog", lambda dialog: dialog.accept())
    held.get_by_role("button", name="Release").click()
    expect(page.locator(".banner.notice")).to_have_text("Released the lease.")
    expect(waiting).to_have_count(0)
    expect(held).to_have_count(1)
    expect(held).not_to_have_attribute("data-lease", first_lease or "")
    expect(held.locator('[data-field="holder"]')).to_contain_text(f"{holders[1].proc.pid}")

    # The waiter's command ends and releases: the page empties again.
    assert holders[1].finish() == 0
    expect(held).to_have_count(0)
    expect(page.locator("#summary .bar-text")).to_have_text("0 / 1")
    chart: Any = page.locator("#chart")
    expect(chart.locator("path.area.held")).to_have_count(1)


def test_charts_of_grants_per_second_and_wait_time(
    page: Page, ui: RunningUi, pggcl_dsn: str, holders: list[HolderProcess]
) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("gpu", 1)
    open_live(page, f"{ui.url}/limit?name=gpu")
    grants_chart, wait_chart = page.locator("#grants-chart"), page.locator("#wait-chart")
    grants, waits = grants_chart.locator("rect.column"), wait_chart.locator("rect.column")
    # Drawn from the samples so far: nothing granted yet, no columns.
    expect(grants_chart).to_have_attribute("data-samples", re.compile(r"^[1-9]"))
    expect(grants_chart).to_contain_text("no grants yet")
    expect(grants).to_have_count(0)
    expect(waits).to_have_count(0)

    # Another process is granted the slot at once: a column of grants, still no wait.
    holders.append(HolderProcess(pggcl_dsn, "gpu"))
    expect(page.locator("#holders tbody tr")).to_have_count(1)
    expect(grants).not_to_have_count(0)
    expect(grants_chart).not_to_contain_text("no grants yet")
    expect(wait_chart).to_contain_text("no waits yet")

    # A second one queues, and is granted when the first ends: it waited, the wait chart shows
    # it (the top of its axis in ms, s or min).
    holders.append(HolderProcess(pggcl_dsn, "gpu"))
    expect(page.locator("#queue tbody tr")).to_have_count(1)
    assert holders[0].finish() == 0
    expect(page.locator("#queue tbody tr")).to_have_count(0)
    expect(waits).not_to_have_count(0)
    expect(wait_chart).not_to_contain_text("no waits yet")
    expect(wait_chart.locator("text.axis").nth(2)).to_have_text(re.compile(r" (ms|s|min)$"))
    assert float(wait_chart.get_attribute("data-peak") or 0) > 0


def test_a_queued_row_says_why_it_waits(
    page: Page, ui: RunningUi, pggcl_dsn: str, holders: list[HolderProcess]
) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("gpu", 1)
        client.create_limit("disk", 3)
    open_live(page, f"{ui.url}/limit?name=gpu")
    # The slot is held by a lease whose holder text is markup: shown as text, never run.
    holder = '<img src=x onerror="document.title=1">trainer-7'
    lease = take(pggcl_dsn, "gpu", 1, holder)
    expect(page.locator("#holders tbody tr")).to_have_count(1)

    # Another process waits on gpu and disk: its row says gpu blocks it (1st in its queue,
    # the holder ahead) and disk, with room, does not.
    holders.append(HolderProcess(pggcl_dsn, "gpu,disk"))
    row = page.locator("#queue tbody tr")
    expect(row).to_have_count(1)
    for _ in ("live", "as the server renders it"):
        gpu = row.locator('.why-limit[data-limit="gpu"]')
        expect(gpu).to_have_class(re.compile(r"\bblocking\b"))
        expect(gpu.locator('[data-why="state"]')).to_have_text("blocking")
        expect(gpu.locator('[data-why="place"]')).to_have_text("1st in queue, nobody ahead")
        expect(gpu.locator('[data-why="usage"]')).to_have_text("1/1 in use, held by 1 lease")
        ahead = gpu.locator(".why-holder")
        expect(ahead).to_have_count(1)
        expect(ahead.locator('[data-why="holder"]')).to_have_text(holder)
        expect(ahead.locator('[data-why="slots"]')).to_have_text("1 slot")
        expect(ahead.locator('[data-why="expires"]')).to_contain_text("expires 20")
        disk = row.locator('.why-limit[data-limit="disk"]')
        expect(disk.locator('[data-why="state"]')).to_have_text("not blocking")
        expect(disk.locator(".why-holder")).to_have_count(0)
        expect(page.locator("#queue img")).to_have_count(0)
        open_live(page, f"{ui.url}/limit?name=gpu")  # again, rendered by the server

    # The holder releases: the waiter is granted and its row goes away.
    with pggcl.Client(pggcl_dsn) as client:
        assert client.release(lease)
    expect(row).to_have_count(0)
    expect(page.locator('[data-empty="queue"]')).to_be_visible()
    expect(page.locator("#holders tbody tr")).to_have_count(1)
    assert page.title() != "1"


def test_a_rate_limited_row_says_when_there_is_room(
    page: Page, ui: RunningUi, pggcl_dsn: str, holders: list[HolderProcess]
) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("api", 2, slot_decay_per_second=0.01)
    take(pggcl_dsn, "api", 2, "crawler", mode="rate_limit")
    open_live(page, f"{ui.url}/limit?name=api")
    holders.append(HolderProcess(pggcl_dsn, "api", "--rate"))
    api = page.locator('#queue tbody tr .why-limit[data-limit="api"]')
    expect(api.locator('[data-why="state"]')).to_have_text("blocking")
    expect(api.locator('[data-why="room"]')).to_have_text(re.compile(r"^room in \d+\.\d s$"))
    expect(api.locator('[data-why="usage"]')).to_contain_text("decaying")
