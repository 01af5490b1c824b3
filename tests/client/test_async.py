"""The async client against a real server, with real tasks."""

from __future__ import annotations

import asyncio
import time

import pytest

import pggcl
from pggcl.asyncio import AsyncClient
from tests.client.conftest import max_overlap, sql, terminate_session_connection


async def until(predicate: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.005)


async def test_manage_limits(aclient: AsyncClient) -> None:
    created = await aclient.create_limit("database", limit=5)
    assert (created.name, created.limit, created.active) == ("database", 5, True)
    await aclient.create_limit("api", limit=1, slot_decay_per_second=2.0)
    assert [lim.name for lim in await aclient.list_limits()] == ["api", "database"]
    assert (await aclient.update_limit("api", active=False)).active is False
    assert (await aclient.read_limit("api")).slot_decay_per_second == 2.0
    with pytest.raises(pggcl.LimitExistsError):
        await aclient.create_limit("api", limit=1)
    assert await aclient.delete_limit("api") is True
    with pytest.raises(pggcl.LimitNotFoundError, match="'api'"):
        await aclient.read_limit("api")


async def test_max_overlap_of_100_tasks_never_exceeds_the_limit(aclient: AsyncClient) -> None:
    await aclient.create_limit("db", 7)
    intervals: list[tuple[float, float]] = []
    entries = 0
    full = asyncio.Event()  # the first 7 holders stay until all 7 are in: the peak is reached

    async def worker() -> None:
        nonlocal entries
        for _ in range(3):
            async with aclient.concurrency("db"):
                start = time.monotonic()
                entries += 1
                if entries == 7:
                    full.set()
                if entries <= 7:
                    await asyncio.wait_for(full.wait(), 10)
                await asyncio.sleep(0.002)
                intervals.append((start, time.monotonic()))

    await asyncio.gather(*(worker() for _ in range(100)))
    assert len(intervals) == 300
    assert max_overlap(intervals) == 7
    assert aclient.stats.connects == 1


async def test_hand_off_is_a_notification_not_a_poll(pggcl_dsn: str, aclient: AsyncClient) -> None:
    await aclient.create_limit("db", 1)
    async with AsyncClient(pggcl_dsn) as other:
        got_it = asyncio.Event()

        async def wait() -> None:
            async with other.concurrency("db"):
                got_it.set()

        async with aclient.concurrency("db"):
            task = asyncio.create_task(wait())
            await until(lambda: _queued(aclient, 1), "the waiter is queued")
            assert not got_it.is_set()
        await task
        assert (other.stats.calls, other.stats.notifications) == (3, 1)


async def _queued(c: AsyncClient, n: int) -> bool:
    return len(await c.queue()) == n


async def test_timeout_strict_and_body_errors(aclient: AsyncClient) -> None:
    await aclient.create_limit("db", 1)
    async with aclient.concurrency("db"):
        with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError, match="'db'"):
            async with aclient.concurrency(["db"], timeout_seconds=0.05):
                pass
        assert await aclient.queue() == []
    with pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="'nope'"):
        async with aclient.concurrency("nope", strict=True):
            pass
    with pytest.raises(KeyError):
        async with aclient.concurrency("db"):
            raise KeyError("boom")
    assert await aclient.holders() == []


async def test_cancel_while_waiting_and_while_holding(aclient: AsyncClient) -> None:
    await aclient.create_limit("db", 1)
    holding = asyncio.Event()

    async def hold() -> None:
        async with aclient.concurrency("db"):
            holding.set()
            await asyncio.Event().wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    waiter = asyncio.create_task(aclient.concurrency("db").__aenter__())
    await until(lambda: _queued(aclient, 1), "the waiter is queued")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await aclient.queue() == []
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert await aclient.holders() == []


async def test_cancel_at_any_moment_leaves_nothing_behind(aclient: AsyncClient) -> None:
    await aclient.create_limit("db", 1)
    await aclient._session_id()

    async def use() -> None:
        async with aclient.concurrency("db"):
            await asyncio.sleep(0)

    # Cancel after 0, 1, 2... loop iterations: during the acquire call, while waiting, after
    # the grant, during the release.
    for steps in range(12):
        tasks = [asyncio.create_task(use()) for _ in range(3)]
        for _ in range(steps):
            await asyncio.sleep(0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert await aclient.holders() == [], steps
        assert await aclient.queue() == [], steps


async def test_asyncio_timeout_around_a_wait(aclient: AsyncClient) -> None:
    await aclient.create_limit("db", 1)
    async with aclient.concurrency("db"):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05), aclient.concurrency("db"):
                pass
    assert await aclient.queue() == []


async def test_a_timeout_beyond_what_the_platform_can_sleep_still_waits(
    aclient: AsyncClient,
) -> None:
    await aclient.create_limit("db", 1)

    async def wait() -> str:
        async with aclient.concurrency("db", timeout_seconds=1e12):
            return "held"

    async with aclient.concurrency("db"):
        waiter = asyncio.create_task(wait())
        await until(lambda: _queued(aclient, 1), "the waiter is queued")
    assert await asyncio.wait_for(waiter, 10) == "held"


async def test_rate_limit(aclient: AsyncClient) -> None:
    await aclient.create_limit("api", 2, slot_decay_per_second=100.0)
    calls = aclient.stats.calls
    for _ in range(6):
        await aclient.rate_limit("api", occupy=1, timeout_seconds=None, strict=False)
    assert aclient.stats.calls <= calls + 2 + 4 * 2
    assert aclient.stats.heartbeats == 0
    with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError):
        await aclient.update_limit("api", slot_decay_per_second=0.01)
        await aclient.rate_limit("api", occupy=2, timeout_seconds=0.05)


async def test_session_reconnects_and_keeps_its_leases(
    pggcl_dsn: str, aclient: AsyncClient
) -> None:
    await aclient.create_limit("db", 1)
    got_it = asyncio.Event()

    async def wait() -> None:
        async with aclient.concurrency("db"):
            got_it.set()

    async with aclient.concurrency("db") as grant:
        task = asyncio.create_task(wait())
        await until(lambda: _queued(aclient, 1), "the waiter is queued")
        generation = await aclient._wait_listening(0)
        await asyncio.to_thread(
            terminate_session_connection, pggcl_dsn, await aclient._session_id()
        )
        await aclient._wait_listening(generation)
        assert [h.lease_id for h in await aclient.holders("db")] == [grant.lease_id]
    await task
    assert got_it.is_set()
    assert (aclient.stats.reconnects, aclient.stats.sessions_opened) == (1, 1)


async def test_close_releases_what_the_session_held(pggcl_dsn: str) -> None:
    c = AsyncClient(pggcl_dsn)
    await c.create_limit("db", 1)
    held = c.concurrency("db")
    await held.__aenter__()
    assert len(await c.holders()) == 1
    await c.close()
    assert sql(pggcl_dsn, "SELECT count(*) FROM pggcl.leases") == [(0,)]


async def test_unreachable_database() -> None:
    async with AsyncClient("postgresql://nobody@127.0.0.1:1/x", connect_timeout=1) as c:
        with pytest.raises(pggcl.DatabaseUnavailableError, match="unreachable"):
            await c.list_limits()
        with pytest.raises(pggcl.DatabaseUnavailableError, match="unreachable"):
            async with c.concurrency("db"):
                pass
