"""Connections the server closes (``pg_terminate_backend``, as a network failure or an
operator would): a pooled connection closed between two calls costs one retry, never an
error or an orphaned slot; the session connection is re-made and the session resumed, its
lease kept (issue #12)."""

from __future__ import annotations

import pggcl
from tests.faults.conftest import (
    Problems,
    Workers,
    await_until,
    pooled_backends,
    session_backends,
    sql,
    terminate,
    wait_until,
)

GRACE = 5.0


def kill_pooled(dsn: str) -> None:
    terminate(dsn, pooled_backends(dsn))


def kill_session(dsn: str) -> None:
    backends = session_backends(dsn)
    assert len(backends) == 1, f"one session connection expected: {backends}"
    terminate(dsn, backends)


def test_pooled_connections_killed_between_calls_sync(dsn: str) -> None:
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    seen = Problems()
    with pggcl.Client(dsn, grace_seconds=GRACE) as client:

        def hold_while_killing() -> None:
            with client.concurrency("db", timeout_seconds=10):
                kill_pooled(dsn)  # between the acquire and the release

        def hold() -> None:
            with client.concurrency("db", timeout_seconds=10):
                pass

        seen.step("read_limit", lambda: client.read_limit("db"))
        seen.step("concurrency() with its pooled connections killed inside", hold_while_killing)
        kill_pooled(dsn)
        seen.step("concurrency() after its pooled connections were killed", hold)
        kill_pooled(dsn)
        seen.step("holders() after its pooled connections were killed", client.holders)
        seen.nothing_held_or_queued(dsn)  # before the client closes
    seen.assert_none()


async def test_pooled_connections_killed_between_calls_async(dsn: str) -> None:
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    seen = Problems()
    async with pggcl.AsyncClient(dsn, grace_seconds=GRACE) as client:

        async def hold_while_killing() -> None:
            async with client.concurrency("db", timeout_seconds=10):
                kill_pooled(dsn)

        async def hold() -> None:
            async with client.concurrency("db", timeout_seconds=10):
                pass

        await seen.astep("read_limit", lambda: client.read_limit("db"))
        await seen.astep(
            "concurrency() with its pooled connections killed inside", hold_while_killing
        )
        kill_pooled(dsn)
        await seen.astep("concurrency() after its pooled connections were killed", hold)
        kill_pooled(dsn)
        await seen.astep("holders() after its pooled connections were killed", client.holders)
        seen.nothing_held_or_queued(dsn)
    seen.assert_none()


def test_session_connection_killed_sync(dsn: str) -> None:
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    seen = Problems()
    with pggcl.Client(dsn, grace_seconds=GRACE) as client:

        def hold_while_killing() -> None:
            with client.concurrency("db", timeout_seconds=10):
                generation = client._wait_listening()
                kill_session(dsn)
                client._wait_listening(generation)  # resumed and listening again
                leases = sql(dsn, "SELECT lease_id FROM pggcl.holders")
                seen.check(len(leases) == 1, f"the lease did not survive: {leases}")

        def hold() -> None:
            with client.concurrency("db", timeout_seconds=10):
                pass

        seen.step("concurrency() with its session connection killed inside", hold_while_killing)
        generation = client._wait_listening()
        kill_session(dsn)
        client._wait_listening(generation)
        seen.step("concurrency() after its session connection was killed", hold)
        seen.nothing_held_or_queued(dsn)
    seen.assert_none()


async def test_session_connection_killed_async(dsn: str) -> None:
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    seen = Problems()
    async with pggcl.AsyncClient(dsn, grace_seconds=GRACE) as client:

        async def hold_while_killing() -> None:
            async with client.concurrency("db", timeout_seconds=10):
                generation = await client._wait_listening()
                kill_session(dsn)
                await client._wait_listening(generation)
                leases = sql(dsn, "SELECT lease_id FROM pggcl.holders")
                seen.check(len(leases) == 1, f"the lease did not survive: {leases}")

        async def hold() -> None:
            async with client.concurrency("db", timeout_seconds=10):
                pass

        await seen.astep(
            "concurrency() with its session connection killed inside", hold_while_killing
        )
        generation = await client._wait_listening()
        kill_session(dsn)
        await client._wait_listening(generation)
        await seen.astep("concurrency() after its session connection was killed", hold)
        seen.nothing_held_or_queued(dsn)
    seen.assert_none()


KILLS_WHILE_RESUMING = 10


def test_session_connection_killed_while_being_resumed_sync(dsn: str) -> None:
    """Killed again as soon as the server shows it resumed: mid-way through its set-up."""
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    seen = Problems()
    with pggcl.Client(dsn, grace_seconds=GRACE) as client:
        with client.concurrency("db", timeout_seconds=10):
            for _ in range(KILLS_WHILE_RESUMING):
                kill_session(dsn)
                wait_until(lambda: len(session_backends(dsn)) == 1, "the session is resumed")
        seen.step("the session resumes after all", lambda: client._wait_listening(timeout=10))
        seen.nothing_held_or_queued(dsn)
    seen.assert_none()


async def test_session_connection_killed_while_being_resumed_async(dsn: str) -> None:
    """Killed again as soon as the server shows it resumed: mid-way through its set-up."""
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    seen = Problems()
    async with pggcl.AsyncClient(dsn, grace_seconds=GRACE) as client:
        async with client.concurrency("db", timeout_seconds=10):
            for _ in range(KILLS_WHILE_RESUMING):
                kill_session(dsn)
                await await_until(lambda: len(session_backends(dsn)) == 1, "the session is resumed")
        await seen.astep(
            "the session resumes after all", lambda: client._wait_listening(timeout=10)
        )
        seen.nothing_held_or_queued(dsn)
    seen.assert_none()


def cli_holder_through(dsn: str, workers: Workers, kill: str) -> None:
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    holder = workers.start("cli", "holder", dsn)
    holder.wait("entered")
    if kill == "pooled":
        kill_pooled(dsn)
    else:
        kill_session(dsn)
    seen = Problems()
    holder.finish()
    seen.found += holder.problems()
    seen.nothing_held_or_queued(dsn)
    seen.assert_none()


def test_pooled_connections_killed_while_pggcl_run_runs(dsn: str, workers: Workers) -> None:
    cli_holder_through(dsn, workers, "pooled")


def test_session_connection_killed_while_pggcl_run_runs(dsn: str, workers: Workers) -> None:
    cli_holder_through(dsn, workers, "session")
