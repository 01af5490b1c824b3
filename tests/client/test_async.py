"""What only the async client has: a cancellation at any moment, asyncio.timeout around a wait.

Everything else both clients do is in the behaviour suite (test_behaviour_async.py and its
generated sync twin)."""

from __future__ import annotations

import asyncio
import time

import pytest

from pggcl.asyncio import AsyncClient


async def until(predicate: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.005)


async def _queued(c: AsyncClient, n: int) -> bool:
    return len(await c.queue()) == n


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
