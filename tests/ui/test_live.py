"""The live-update hub against a real database: one sampler, whatever the number of pages."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

import pggcl
from pggcl.models import ConcurrencyLimit, Explanation, Holder, Holding, TemplateTotals, Waiter
from pggcl.ui.live import Hub, LimitsTopic, LimitTopic, Subscriber
from pggcl.ui.present import why_view


class CountingReader:
    """The async client, counting the reads the hub makes."""

    def __init__(self, client: pggcl.AsyncClient) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()

    async def busiest_limits(
        self, per_template: int = 10, also: Sequence[str] = ()
    ) -> list[ConcurrencyLimit]:
        self.calls["busiest_limits"] += 1
        return await self.client.busiest_limits(per_template, also)

    async def template_totals(self) -> list[TemplateTotals]:
        self.calls["template_totals"] += 1
        return await self.client.template_totals()

    async def holders(self, name: str | None = None) -> list[Holder]:
        self.calls["holders"] += 1
        return await self.client.holders(name)

    async def queue(self, name: str | None = None) -> list[Waiter]:
        self.calls["queue"] += 1
        return await self.client.queue(name)

    async def explain_queue(
        self, name: str | None = None, max_holders: int | None = None
    ) -> list[Explanation]:
        self.calls["explain_queue"] += 1
        self.calls[f"explain_queue({name}, {max_holders})"] += 1
        return await self.client.explain_queue(name, max_holders)


async def next_event(sub: Subscriber, event: str, timeout: float = 10.0) -> Any:
    """The data of the next `event` the subscriber gets (other events are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            for name, data in await sub.next(timeout):
                if name == event:
                    return json.loads(data)


async def test_one_sampler_reads_once_per_tick_for_any_number_of_pages(pggcl_dsn: str) -> None:
    async with pggcl.AsyncClient(pggcl_dsn) as client:
        reader = CountingReader(client)
        hub = Hub(reader, interval=0.05, linger=0)
        pages = [hub.subscribe(LimitsTopic()) for _ in range(5)]
        filtered = hub.subscribe(LimitsTopic("GP"))
        for page in pages:
            assert await next_event(page, "limits") == []
        await client.create_limit("gpu", 2)
        await client.create_limit("database", 5)
        for page in pages:
            seen = await next_event(page, "limits")
            while len(seen) < 2:
                seen = await next_event(page, "limits")
            assert [view["name"] for view in seen] == ["database", "gpu"]
        assert [view["name"] for view in await next_event(filtered, "limits")] == ["gpu"]
        # One read of the limits per sample, never one per page; no holders without a limit page.
        assert reader.calls["busiest_limits"] == reader.calls["template_totals"] == hub.ticks
        assert reader.calls["holders"] == reader.calls["queue"] == 0
        assert reader.calls["explain_queue"] == 0
        await hub.close()


async def test_a_limit_page_gets_holders_queue_samples_and_history(pggcl_dsn: str) -> None:
    async with pggcl.AsyncClient(pggcl_dsn) as client:
        await client.create_limit("gpu", 1)
        hub = Hub(client, interval=0.05, linger=0)
        page = hub.subscribe(LimitTopic("gpu"))
        assert (await next_event(page, "history"))["samples"] == []
        assert (await next_event(page, "limit"))["holders"] == []
        async with client.concurrency("gpu", holder="worker-1"):
            # Limits, holders and queue are three reads: one tick may see the grant in only
            # some of them, the next sees it in all.
            detail = await next_event(page, "limit")
            while not detail["holders"] or detail["limit"]["bar"]["text"] != "1 / 1":
                detail = await next_event(page, "limit")
            assert detail["holders"][0]["holder"] == "worker-1"
            assert detail["limit"]["bar"]["text"] == "1 / 1"
            sample = await next_event(page, "sample")
            assert sample[1:4] == [1, 0, 1]  # held, decaying, limit
            # A page opened now gets the chart so far: 0 held, then 1 (a point whenever
            # something changed, the grants per second too).
            later = hub.subscribe(LimitTopic("gpu"))
            history = await next_event(later, "history")
            assert [held for held, _ in groupby(p[1] for p in history["samples"])] == [0, 1]
        await client.delete_limit("gpu")
        detail = await next_event(page, "limit")
        while detail["limit"] is not None:
            detail = await next_event(page, "limit")
        await hub.close()


async def test_the_sampler_stops_when_the_last_page_closes(pggcl_dsn: str) -> None:
    async with pggcl.AsyncClient(pggcl_dsn) as client:
        hub = Hub(client, interval=0.05, linger=0)
        assert not hub.running
        page = hub.subscribe(LimitsTopic())
        await next_event(page, "limits")
        task = hub.task
        assert task is not None
        hub.unsubscribe(page)
        await asyncio.wait_for(task, 10)
        assert not hub.running and hub.subscribers == 0
        # The next page starts it again.
        again = hub.subscribe(LimitsTopic())
        assert hub.running
        await next_event(again, "limits")
        await hub.close()
        assert not hub.running


async def test_a_database_outage_is_reported_and_sampling_goes_on() -> None:
    async with pggcl.AsyncClient(
        "postgresql://nobody@127.0.0.1:1/none", connect_timeout=2
    ) as client:
        hub = Hub(client, interval=0.05, linger=0)
        page = hub.subscribe(LimitsTopic())
        status = await next_event(page, "status")
        assert "unreachable" in status["error"]
        assert hub.running
        await hub.close()


async def test_samples_carry_grants_per_second_and_the_mean_wait(pggcl_dsn: str) -> None:
    async with pggcl.AsyncClient(pggcl_dsn) as client:
        await client.create_limit("gpu", 1)
        hub = Hub(client, interval=0.05, linger=0)
        page = hub.subscribe(LimitTopic("gpu"))
        # The first sample has nothing to count from; the next ones count the grants since.
        assert (await next_event(page, "sample"))[4:] == [None, None]
        assert (await next_event(page, "sample"))[4:] == [0, None]

        async def wait_for_the_slot() -> None:
            async with client.concurrency("gpu"):  # queued, granted when the holder releases
                pass

        async with client.concurrency("gpu"):  # granted at once: waits 0 s
            waiter = asyncio.create_task(wait_for_the_slot())
            detail = await next_event(page, "limit")
            while not detail["queue"]:
                detail = await next_event(page, "limit")
        await waiter
        seen: list[list[Any]] = []
        while not any(s[5] for s in seen):
            seen.append(await next_event(page, "sample"))
        # The grant after the queue waited: its sample counts it, and a mean wait above 0.
        waited = next(s for s in seen if s[5])
        assert waited[4] > 0 and 0 < waited[5] < 60
        # A page opened now gets them in its history too.
        history = await next_event(hub.subscribe(LimitTopic("gpu")), "history")
        assert history["interval"] == 0.05
        assert any(point[5] for point in history["samples"])
        await hub.close()


class FixedReader:
    """One limit whose counters a test sets before each sample."""

    def __init__(self) -> None:
        self.limit = limit_record(grants=0, waits=0, waited=0.0)

    async def busiest_limits(
        self, per_template: int = 10, also: Sequence[str] = ()
    ) -> list[ConcurrencyLimit]:
        return [self.limit]

    async def template_totals(self) -> list[TemplateTotals]:
        return []

    async def holders(self, name: str | None = None) -> list[Holder]:
        return []

    async def queue(self, name: str | None = None) -> list[Waiter]:
        return []

    async def explain_queue(
        self, name: str | None = None, max_holders: int | None = None
    ) -> list[Explanation]:
        raise AssertionError("nobody waits: nothing to explain")


def limit_record(grants: int, waits: int, waited: float, held: int = 0) -> ConcurrencyLimit:
    moment = datetime(2026, 12, 2, tzinfo=UTC)
    return ConcurrencyLimit(
        "gpu", 4, True, float(held), 0.0, 0, moment, moment, held, 0.0,
        grants=grants, wait_seconds_count=waits, wait_seconds_sum=waited,
    )  # fmt: skip


async def test_the_history_is_a_fixed_window_whatever_the_traffic() -> None:
    """Samples every second of a busy limit: the history keeps the window's, no more."""
    now = [1_000.0]
    reader = FixedReader()
    hub = Hub(reader, interval=1.0, window=30.0, clock=lambda: now[0])
    grants, waited = 0, 0.0
    for second in range(200):
        now[0] = 1_000.0 + second
        grants += 1 + second % 3  # a different rate each second: a point each second
        waited += 0.5 * (1 + second % 3)
        reader.limit = limit_record(grants, grants, waited, held=second % 2)
        await hub._tick()
        samples = hub._history_of("gpu")["samples"]
        assert len(samples) <= 30 + 1
        assert samples[-1][0] == now[0]
        if second:
            assert samples[-1][4:] == (1 + second % 3, 0.5)
    # The last point before the window stays: it is the value at the window's start.
    assert samples[0][0] <= now[0] - 30 < samples[1][0]
    # Counters that went back (the limit made again) count from scratch.
    now[0] += 1
    reader.limit = limit_record(1, 1, 0.0)
    await hub._tick()
    assert hub._history_of("gpu")["samples"][-1][4:] == (None, None)
    await hub.close()


async def test_why_queued_requests_wait_is_one_read_per_tick_and_only_while_some_wait(
    pggcl_dsn: str,
) -> None:
    async with pggcl.AsyncClient(pggcl_dsn) as client:
        await client.create_limit("gpu", 1)
        reader = CountingReader(client)
        hub = Hub(reader, interval=0.05, linger=0, max_holders=2)
        page = hub.subscribe(LimitTopic("gpu"))
        detail = await next_event(page, "limit")
        assert detail["queue"] == [] and reader.calls["explain_queue"] == 0

        async def wait_for_the_slot() -> None:
            async with client.concurrency("gpu"):  # queued, granted when the holder releases
                pass

        async with client.concurrency("gpu", holder="<b>worker-1</b>"):
            waiter = asyncio.create_task(wait_for_the_slot())
            detail = await next_event(page, "limit")
            while not (detail["queue"] and detail["queue"][0]["why"]):
                detail = await next_event(page, "limit")
            [row] = detail["queue"]
            [why] = row["why"]
            assert why["name"] == "gpu" and why["blocking"] and why["state"] == "blocking"
            assert why["place"] == "1st in queue, nobody ahead"
            assert why["usage"] == "1/1 in use, held by 1 lease"
            [ahead] = why["holders"]
            assert (ahead["holder"], ahead["slots"]) == ("<b>worker-1</b>", "1 slot")
            assert ahead["expires"].startswith("expires ")
            # One read of why per tick while the page's limit has waiters, bounded by
            # max_holders, and for that limit only.
            ticks = hub.ticks
            assert 0 < reader.calls["explain_queue"] <= ticks
            assert reader.calls["explain_queue(gpu, 2)"] == reader.calls["explain_queue"]
        await waiter
        detail = await next_event(page, "limit")
        while detail["queue"]:
            detail = await next_event(page, "limit")
        await hub.close()


async def test_a_row_says_how_many_more_leases_than_shown() -> None:
    moment = datetime(2026, 12, 2, tzinfo=UTC)
    holding = Holding("\x1b[31mred", 1, moment, None)
    e = Explanation(
        7, "gpu", True, 3, 1, "rate_limit", 4, True, 4, 4.5, 4, (holding,) * 2, 2.5, moment
    )
    why = why_view(e)
    assert why["place"] == "3rd in queue, 2 requests ahead"
    assert why["usage"] == "4.5/4 in use (4 held, 0.5 decaying), held by 4 leases"
    assert why["room"] == "room in 2.5 s"
    assert [h["expires"] for h in why["holders"]] == ["expires never"] * 2
    assert why["more"] == "and 2 more leases"
    # Not blocking: no holders listed, nothing more.
    calm = why_view(dataclasses.replace(e, blocking=False, mode="concurrency"))
    assert (calm["state"], calm["holders"], calm["more"], calm["room"]) == (
        "not blocking",
        [],
        "",
        "",
    )


def test_a_waiters_row_shows_its_head_start() -> None:
    from pggcl.ui.present import waiter_view

    since = datetime(2026, 12, 2, tzinfo=UTC)
    plain = Waiter(1, "db", 2, 1, "concurrency", "w", 7, since)
    urgent = dataclasses.replace(plain, waiter_id=2, position=1, priority=30.0)
    late = dataclasses.replace(plain, waiter_id=3, position=3, priority=-1.5)
    assert [waiter_view(w)["priority"] for w in (urgent, plain, late)] == ["+30 s", "0", "-1.5 s"]
