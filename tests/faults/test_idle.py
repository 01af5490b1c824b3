"""``idle_session_timeout`` set on the server: it closes every connection idle for 1 s,
with no fault at all. A client idle for 2 s makes its next acquire and release as usual
(issue #12)."""

from __future__ import annotations

import time

import pggcl
from tests.faults.conftest import Problems, Workers, sql

CLUSTER_SETTINGS = {"idle_session_timeout": "'1s'"}
IDLE = 2.0  # a fault input: longer than idle_session_timeout


def test_sync_client_idle_longer_than_idle_session_timeout(dsn: str) -> None:
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    seen = Problems()
    with pggcl.Client(dsn) as client:

        def hold(idle: float) -> None:
            with client.concurrency("db", timeout_seconds=10):
                time.sleep(idle)

        seen.step("the first concurrency()", lambda: hold(0))
        time.sleep(IDLE)
        seen.step("concurrency() after idling", lambda: hold(IDLE))  # its release too
        time.sleep(IDLE)
        seen.step("holders() after idling", client.holders)
        seen.nothing_held_or_queued(dsn)
    seen.assert_none()


async def test_async_client_idle_longer_than_idle_session_timeout(dsn: str) -> None:
    import asyncio

    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    seen = Problems()
    async with pggcl.AsyncClient(dsn) as client:

        async def hold(idle: float) -> None:
            async with client.concurrency("db", timeout_seconds=10):
                await asyncio.sleep(idle)

        await seen.astep("the first concurrency()", lambda: hold(0))
        await asyncio.sleep(IDLE)
        await seen.astep("concurrency() after idling", lambda: hold(IDLE))
        await asyncio.sleep(IDLE)
        await seen.astep("holders() after idling", client.holders)
        seen.nothing_held_or_queued(dsn)
    seen.assert_none()


def test_pggcl_run_idle_longer_than_idle_session_timeout(dsn: str, workers: Workers) -> None:
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    holder = workers.start("cli", "holder", dsn, hold_seconds=IDLE, wait_release=False)
    seen = Problems()
    seen.expect(lambda: holder.wait("exited"))
    holder.finish()
    seen.found += holder.problems()
    seen.nothing_held_or_queued(dsn)
    seen.assert_none()
