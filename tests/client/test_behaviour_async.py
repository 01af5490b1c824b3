"""One behaviour suite for both clients: the source of ``tests/client/test_behaviour_sync.py``.

The sync twin is generated from this file by ``tools/async_to_sync.py`` (``AsyncClient`` ->
``Client``, ``_acompat`` -> ``_compat``, ...); run the tool after changing this file, a test
checks the two agree. So every promise below is checked once per world, against a real server,
and a drift between the clients fails in one of the two files. What differs between the worlds
(a concurrent caller is a task or a thread; cancelling it is ``task.cancel()`` or a Ctrl-C)
lives in ``tests/client/_acompat.py`` / ``_compat.py``.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry import trace as otel_trace

import pggcl
from pggcl import AsyncClient, schema, tracing
from pggcl.core.versions import MIN_SERVER_VERSION_NUM
from pggcl.drivers.asyncpg_driver import connect
from tests.client._acompat import (
    Call,
    Cancelled,
    Event,
    Pending,
    Worker,
    cancel_when,
    run_blocking,
    sleep,
    spawn,
    until,
)
from tests.client._behaviour import (
    BAD_VALUES,
    kill,
    lock_waits,
    recorded_spans,
    row_locked,
    set_database_time_zone,
    start_holder,
    terminate_pool_connections,
)
from tests.client.conftest import max_overlap, sql, terminate_session_connection


@pytest.fixture
async def client(pggcl_dsn: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(pggcl_dsn) as c:
        yield c


@pytest.fixture
async def other(pggcl_dsn: str) -> AsyncIterator[AsyncClient]:
    """A second client (a second session) on the same database."""
    async with AsyncClient(pggcl_dsn) as c:
        yield c


async def queued(c: AsyncClient, name: str, n: int) -> bool:
    return len(await c.queue(name)) == n


async def held(c: AsyncClient, name: str, n: int) -> bool:
    return len(await c.holders(name)) == n


async def hold_once(
    c: AsyncClient,
    names: str | list[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
) -> uuid.UUID | None:
    """Acquire, then release at once; the lease id it held."""
    async with c.concurrency(names, occupy, timeout_seconds, strict=strict) as grant:
        return grant.lease_id


# --- Managing and holding --------------------------------------------------------------------


async def test_manage_limits(client: AsyncClient) -> None:
    created = await client.create_limit("database", limit=5)
    assert (created.name, created.limit, created.active, created.active_slots) == (
        "database",
        5,
        True,
        0,
    )
    await client.create_limit("api", limit=2, slot_decay_per_second=0.5, active=False)
    assert [lim.name for lim in await client.list_limits()] == ["api", "database"]
    api = await client.read_limit("api")
    assert api.slot_decay_per_second == 0.5
    updated = await client.update_limit("api", limit=3, active=True, new_name="api2")
    assert (updated.name, updated.limit, updated.active) == ("api2", 3, True)
    with pytest.raises(pggcl.LimitNotFoundError, match="'api'"):
        await client.read_limit("api")
    with pytest.raises(pggcl.LimitExistsError, match="'database'"):
        await client.create_limit("database", limit=1)
    with pytest.raises(pggcl.ValidationError, match="-1"):
        await client.create_limit("bad", limit=-1)
    with pytest.raises(pggcl.ValidationError, match="a/b"):
        await client.create_limit("a/b", limit=1)
    assert await client.delete_limit("api2") is True
    assert await client.delete_limit("api2") is False
    assert [lim.name for lim in await client.list_limits()] == ["database"]


async def test_a_hold_shows_in_holders_and_is_released(client: AsyncClient) -> None:
    await client.create_limit("db", 2)
    async with client.concurrency("db", occupy=2, holder="me") as grant:
        (held_now,) = await client.holders("db")
        assert (held_now.lease_id, held_now.slots, held_now.holder) == (grant.lease_id, 2, "me")
        db = await client.read_limit("db")
        assert db.active_slots == 2
    assert await client.holders() == []
    db = await client.read_limit("db")
    assert db.active_slots == 0


async def test_workers_never_exceed_the_limit_and_reach_it(client: AsyncClient) -> None:
    await client.create_limit("db", 3)
    intervals: list[tuple[float, float]] = []
    entries = itertools.count(1)
    full = Event()  # the first 3 holders stay until all 3 are in: the peak is reached

    async def worker() -> None:
        for _ in range(3):
            async with client.concurrency("db"):
                start = time.monotonic()
                entry = next(entries)
                if entry == 3:
                    full.set()
                if entry <= 3:
                    await full.wait()
                await sleep(0.002)
                intervals.append((start, time.monotonic()))

    workers = [spawn(worker) for _ in range(8)]
    for w in workers:
        await w.result(timeout=30)
    assert len(intervals) == 24
    assert max_overlap(intervals) == 3
    assert client.stats.connects == 1  # one session connection, however many wait


async def test_a_timeout_past_what_the_platform_can_sleep_waits(client: AsyncClient) -> None:
    years_300 = 300 * 365 * 24 * 3600.0  # past threading.TIMEOUT_MAX (about 292 years)
    await client.create_limit("db", 1)
    async with client.concurrency("db"):
        waiter = spawn(lambda: hold_once(client, "db", timeout_seconds=years_300))
        await until(lambda: queued(client, "db", 1), "the waiter is queued")
    assert await waiter.result() is not None


async def test_a_limit_that_made_us_queue_skips_the_fast_path(client: AsyncClient) -> None:
    # pggcl.take is refused wherever requests queue: after one request queued, the next on
    # that limit goes straight to pggcl.acquire; a request granted at once brings take back.
    await client.create_limit("db", 1)
    costs = []
    async with client.concurrency("db"):
        for _ in range(2):
            before = client.stats.calls
            with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError):
                await hold_once(client, "db", timeout_seconds=0.05)
            costs.append(client.stats.calls - before)
    # take, acquire (queued), explain (why it waited, for the message), cancel; then the same
    # without take.
    assert costs == [4, 3]
    assert not client._contention.worth_taking("db")
    assert await hold_once(client, "db") is not None  # acquire, granted at once
    assert client._contention.worth_taking("db")


# --- Pool exhaustion ------------------------------------------------------------------------


async def test_a_call_waits_for_a_busy_pool_beyond_connect_timeout(pggcl_dsn: str) -> None:
    async with AsyncClient(pggcl_dsn, pool_size=1, pool_timeout=30.0, connect_timeout=0.5) as c:
        await c.create_limit("db", 1)
        with row_locked(pggcl_dsn, "db"):
            blocked = spawn(lambda: c.update_limit("db", limit=2))
            await until(lambda: lock_waits(pggcl_dsn) == 1, "update_limit waits for the lock")
            waiting = spawn(c.list_limits)
            # Not synchronisation: the scenario. The only pool connection stays busy for twice
            # connect_timeout, which must not bound the wait for it (pool_timeout does).
            await sleep(1.0)
            assert not waiting.done()
        updated = await blocked.result()
        assert updated.limit == 2
        assert [lim.name for lim in await waiting.result()] == ["db"]


async def test_an_exhausted_pool_raises_pool_timeout_error(pggcl_dsn: str) -> None:
    async with AsyncClient(pggcl_dsn, pool_size=1, pool_timeout=0.2) as c:
        await c.create_limit("db", 1)
        await c._session_id()
        with row_locked(pggcl_dsn, "db"):
            blocked = spawn(lambda: c.update_limit("db", limit=2))
            await until(lambda: lock_waits(pggcl_dsn) == 1, "update_limit waits for the lock")
            with pytest.raises(pggcl.PoolTimeoutError) as exhausted:
                await c.list_limits()
            with pytest.raises(pggcl.PoolTimeoutError):
                await hold_once(c, "db")
        updated = await blocked.result()
        assert updated.limit == 2
        assert await c.queue() == []
        assert await c.holders() == []
    error = exhausted.value
    assert isinstance(error, TimeoutError)
    assert not isinstance(error, pggcl.DatabaseUnavailableError)
    message = str(error)
    assert "pool_size" in message and "pool_timeout" in message, message
    assert "unreachable" not in message, message


# --- Use after close() ----------------------------------------------------------------------


async def test_every_call_after_close_raises_client_closed_error(pggcl_dsn: str) -> None:
    c = AsyncClient(pggcl_dsn)
    await c.create_limit("db", 1, slot_decay_per_second=0.0)
    lease = await hold_once(c, "db")
    assert lease is not None
    connects = c.stats.connects
    await c.close()
    calls: list[Call] = [
        lambda: c.create_limit("other", 1),
        lambda: c.read_limit("db"),
        c.list_limits,
        lambda: c.update_limit("db", limit=2),
        lambda: c.delete_limit("db"),
        c.holders,
        c.queue,
        lambda: c.release(lease),
        lambda: c.rate_limit("db"),
        lambda: hold_once(c, "db"),
    ]
    for call in calls:
        with pytest.raises(pggcl.ClientClosedError, match="closed"):
            await call()
    assert c.stats.connects == connects  # nothing was reopened
    assert sql(pggcl_dsn, "SELECT count(*) FROM pggcl.sessions") == [(0,)]
    await c.close()  # a second close() is harmless


async def test_a_client_closed_before_any_use_raises_client_closed_error(pggcl_dsn: str) -> None:
    c = AsyncClient(pggcl_dsn)
    await c.close()
    with pytest.raises(pggcl.ClientClosedError, match="closed"):
        await c.list_limits()
    with pytest.raises(pggcl.ClientClosedError, match="closed"):
        await hold_once(c, "db")
    assert c.stats.connects == 0


# --- Heartbeat and reclaim ------------------------------------------------------------------


async def test_the_heartbeat_runs_while_there_are_waiters_and_only_then(pggcl_dsn: str) -> None:
    async with AsyncClient(pggcl_dsn, heartbeat_seconds=0.05) as c:
        await c.create_limit("db", 1)
        async with c.concurrency("db"):
            # Not synchronisation: five heartbeat intervals in which no heartbeat may run.
            await sleep(0.25)
            assert c.stats.heartbeats == 0
            waiter = spawn(lambda: hold_once(c, "db"))
            await until(lambda: c.stats.heartbeats >= 3, "three heartbeats ran")
        assert await waiter.result() is not None
        beats = c.stats.heartbeats
        await sleep(0.25)
        assert c.stats.heartbeats <= beats + 1  # one may have been under way: then none


async def test_the_heartbeat_reclaims_a_dead_holder_for_a_waiter(pggcl_dsn: str) -> None:
    async with AsyncClient(pggcl_dsn, heartbeat_seconds=0.05) as c:
        await c.create_limit("db", 1)
        proc = await run_blocking(start_holder, pggcl_dsn)
        try:
            (dead,) = await c.holders("db")
            waiter = spawn(lambda: hold_once(c, "db"))
            await until(lambda: queued(c, "db", 1), "the waiter is queued")
        finally:
            await run_blocking(kill, proc)
        lease = await waiter.result(timeout=30)
        assert lease is not None and lease != dead.lease_id

        async def counted() -> bool:
            return c.stats.heartbeats >= 1

        # The grant reaches the waiter during the heartbeat's own statement (the driver hands
        # notifications over as they are read), so the heartbeat is counted just after.
        await until(counted, "the heartbeat that reclaimed is counted")
        assert await c.holders() == []
        assert await c.queue() == []


# --- Rejection, timeout, cancellation -------------------------------------------------------


async def test_lowering_the_limit_rejects_a_waiter_that_can_never_fit(client: AsyncClient) -> None:
    await client.create_limit("db", 2)
    async with client.concurrency("db"):
        big = spawn(lambda: hold_once(client, "db", occupy=2))
        await until(lambda: queued(client, "db", 1), "the 2-slot request is queued")
        await client.update_limit("db", limit=1)
        with pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="'db'"):
            await big.result()
        assert await client.queue() == []
    assert await client.holders() == []


async def test_a_timeout_leaves_nothing_queued(client: AsyncClient) -> None:
    await client.create_limit("db", 1)
    async with client.concurrency("db"):
        with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError, match="'db'"):
            await hold_once(client, "db", timeout_seconds=0.05)
        assert await client.queue() == []
        calls = client.stats.calls
        with pytest.raises(TimeoutError):  # 0: one try, no waiting
            await hold_once(client, "db", timeout_seconds=0)
        assert client.stats.calls == calls + 1
        assert await client.queue() == []
        assert len(await client.holders()) == 1
    assert await client.holders() == []


async def test_explain_says_why_a_request_waits(client: AsyncClient) -> None:
    await client.create_limit("db", 2)
    await client.create_limit("gpu", 4)
    async with client.concurrency("db", holder="backup", lease_duration=None) as held_now:
        big = spawn(lambda: hold_once(client, "db", occupy=2))
        await until(lambda: queued(client, "db", 1), "the 2-slot request is queued")
        small = spawn(lambda: hold_once(client, ["db", "gpu"]))
        await until(lambda: queued(client, "db", 2), "both requests are queued")
        first, second = [w.waiter_id for w in await client.queue("db")]
        (why,) = await client.explain(first)
        assert (why.waiter_id, why.name, why.blocking, why.position) == (first, "db", True, 1)
        assert (why.occupy, why.mode, why.limit, why.active) == (2, "concurrency", 2, True)
        assert (why.held_slots, why.active_slots, why.leases) == (1, 1.0, 1)
        (holding,) = why.holders
        assert (holding.holder, holding.slots, holding.expires) == ("backup", 1, None)
        (lease,) = await client.holders("db")
        assert lease.lease_id == held_now.lease_id and holding.since == lease.since
        assert holding.since.utcoffset() == timedelta(0) and why.seconds_until_room is None
        # A request on two limits: blocked on db (one ahead), not on gpu (room, nobody ahead).
        both = await client.explain(second, max_holders=0)
        assert [(e.name, e.blocking, e.position, e.holders) for e in both] == [
            ("db", True, 2, ()),
            ("gpu", False, 1, ()),
        ]
        everyone = await client.explain_queue()
        expected = [(first, "db"), (second, "db"), (second, "gpu")]
        assert [(e.waiter_id, e.name) for e in everyone] == expected
        # Those queued on gpu, on every limit they wait on.
        on_gpu = await client.explain_queue("gpu")
        assert [(e.waiter_id, e.name) for e in on_gpu] == [(second, "db"), (second, "gpu")]
        with pytest.raises(pggcl.ValidationError) as bad:
            await client.explain(first, max_holders=-1)
        assert bad.value.field == "max_holders"
        with pytest.raises(pggcl.ValidationError):
            await client.explain("1")  # type: ignore[arg-type]
        assert await client.explain(10**15) == []  # not queued: nothing to explain
    await big.result()
    await small.result()
    assert await client.explain(first) == [] and await client.explain_queue() == []


async def test_explain_own_says_why_this_clients_requests_wait(
    client: AsyncClient, other: AsyncClient
) -> None:
    await client.create_limit("db", 1)
    calls = client.stats.calls
    assert await client.explain_own() == []  # none waits: not even a call
    assert client.stats.calls == calls
    async with other.concurrency("db", holder="backup", lease_duration=None):
        theirs = spawn(lambda: hold_once(other, "db"))
        await until(lambda: queued(client, "db", 1), "their request is queued")
        mine = spawn(lambda: hold_once(client, "db", occupy=1))
        await until(lambda: queued(client, "db", 2), "my request is queued")
        waiting = [w.waiter_id for w in await client.queue("db")]
        await until(lambda: len(client._port.session.waiter_ids()) == 1, "mine waits")
        await until(lambda: len(other._port.session.waiter_ids()) == 1, "theirs waits")
        (why,) = await client.explain_own(max_holders=1)
        assert (why.waiter_id, why.name, why.position, why.blocking) == (waiting[1], "db", 2, True)
        assert [h.holder for h in why.holders] == ["backup"]
        (theirs_why,) = await other.explain_own()
        assert (theirs_why.waiter_id, theirs_why.position) == (waiting[0], 1)
    await theirs.result()
    await mine.result()
    assert await client.explain_own() == [] and await other.explain_own() == []


async def test_a_timeout_says_why_it_waited(client: AsyncClient) -> None:
    await client.create_limit("db", 1)
    async with client.concurrency("db", holder="backup", lease_duration=None):
        (lease,) = await client.holders("db")
        ahead = spawn(lambda: hold_once(client, "db"))
        await until(lambda: queued(client, "db", 1), "a request is queued")
        with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError) as timed_out:
            await hold_once(client, "db", timeout_seconds=0.2)
        since = lease.since.strftime("%Y-%m-%dT%H:%M:%SZ")
        waited = "timed out after 0.2 s waiting for 1 slot on 'db': "
        held_by = f"1 of 1 slots held by 1 lease (oldest: backup since {since}), "
        assert str(timed_out.value) == waited + held_by + "1 request ahead"
        assert timed_out.value.waiting == held_by + "1 request ahead"
        assert len(await client.queue("db")) == 1  # and it withdrew: only the one ahead
    await ahead.result()
    # Rate mode: how full the bucket is and when it will have room; several limits, each.
    await client.create_limit("api", 2, slot_decay_per_second=0.001)
    await client.create_limit("free", 5, slot_decay_per_second=1.0)
    await client.rate_limit("api", occupy=2)
    with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError) as timed_out:
        await client.rate_limit(["api", "free"], timeout_seconds=0.2)
    waited = re.escape("timed out after 0.2 s waiting for 1 slot on 'api', 'free': ")
    in_use = r"'api' 2 of 2 slots in use, room in \d+\.\d s, nobody ahead"
    assert re.fullmatch(waited + in_use, str(timed_out.value)), str(timed_out.value)
    assert await client.queue() == []


async def test_a_timeout_says_what_it_did_before_when_why_cannot_be_read(
    client: AsyncClient, pggcl_dsn: str
) -> None:
    # A database at revision 0011 has no pggcl.explain: the call fails, the message is the
    # one from before it, and nothing is left queued.
    await client.create_limit("db", 1)  # (the client's management needs the current schema)
    await run_blocking(schema.downgrade, pggcl_dsn, "0011")
    async with client.concurrency("db"):
        with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError) as timed_out:
            await hold_once(client, "db", timeout_seconds=0.2)
        assert str(timed_out.value) == "could not acquire 1 slot on 'db' within timeout_seconds=0.2"
        assert timed_out.value.waiting is None
        assert await run_blocking(sql, pggcl_dsn, "SELECT count(*) FROM pggcl.queue") == [(0,)]


async def test_cancel_while_waiting_leaves_nothing_and_serves_the_next(client: AsyncClient) -> None:
    await client.create_limit("db", 2)
    async with client.concurrency("db", holder="holder"):

        async def behind() -> uuid.UUID | None:
            # Queued behind the 2-slot request although one slot is free: first come, first
            # served. Cancelling the request ahead must serve this one.
            await until(lambda: queued(client, "db", 1), "the 2-slot request is queued")
            return await hold_once(client, "db")

        small = spawn(behind)
        with pytest.raises(Cancelled):
            await cancel_when(
                lambda: hold_once(client, "db", occupy=2),
                lambda: queued(client, "db", 2),
                "both requests are queued",
            )
        assert await small.result() is not None
        assert await client.queue() == []
        assert [h.holder for h in await client.holders()] == ["holder"]
    assert await client.holders() == []


async def test_cancel_while_holding_releases(client: AsyncClient) -> None:
    await client.create_limit("db", 1)

    async def hold_long() -> None:
        async with client.concurrency("db"):
            await sleep(60)

    with pytest.raises(Cancelled):
        await cancel_when(hold_long, lambda: held(client, "db", 1), "the slot is held")
    assert await client.holders() == []
    assert await hold_once(client, "db") is not None


async def test_a_call_interrupted_mid_statement_has_settled_when_it_raises(
    pggcl_dsn: str, client: AsyncClient
) -> None:
    await client.create_limit("db", 1)
    with row_locked(pggcl_dsn, "db"):
        with pytest.raises(Cancelled):
            await cancel_when(
                lambda: client.update_limit("db", limit=5),
                lambda: lock_waits(pggcl_dsn) == 1,
                "update_limit waits for the lock",
            )
        assert lock_waits(pggcl_dsn) == 0  # cancelled on the server, not left to run later
    limit = await client.read_limit("db")
    assert limit.limit == 1
    assert await hold_once(client, "db") is not None  # the pool connection is fine


# --- Hand-off and rate limits ---------------------------------------------------------------


async def test_waiters_are_served_first_come_first_served(
    client: AsyncClient, other: AsyncClient
) -> None:
    await client.create_limit("db", 1)
    order: list[str] = []

    async def take_turn(name: str) -> None:
        async with other.concurrency("db", holder=name):
            order.append(name)

    async with client.concurrency("db"):
        first = spawn(lambda: take_turn("first"))
        await until(lambda: queued(client, "db", 1), "the first waiter is queued")
        second = spawn(lambda: take_turn("second"))
        await until(lambda: queued(client, "db", 2), "the second waiter is queued")
        assert [w.holder for w in await client.queue("db")] == ["first", "second"]
        assert order == []
    await first.result()
    await second.result()
    assert order == ["first", "second"]
    assert other.stats.notifications >= 2  # each grant came by NOTIFY
    assert await client.holders() == []


async def test_rate_limit_waits_until_the_bucket_has_room(client: AsyncClient) -> None:
    await client.create_limit("api", 1, slot_decay_per_second=10.0)
    await client._session_id()
    calls = client.stats.calls
    for _ in range(3):
        await client.rate_limit("api")
    # 1 immediate grant, then for each of the 2 others: the call that names the wait, a sleep
    # of exactly that long, and one call that grants.
    assert client.stats.calls == calls + 1 + 2 * 2
    assert client.stats.heartbeats == 0
    await client.update_limit("api", slot_decay_per_second=0.01)
    with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError, match="'api'"):
        await client.rate_limit("api", timeout_seconds=0.05)
    assert await client.queue() == []


# --- Sessions: reconnect, loss, close -------------------------------------------------------


async def test_a_lost_session_connection_is_remade_and_keeps_its_leases(
    pggcl_dsn: str, client: AsyncClient
) -> None:
    await client.create_limit("db", 1)
    async with client.concurrency("db") as grant:
        waiter = spawn(lambda: hold_once(client, "db"))
        await until(lambda: queued(client, "db", 1), "the waiter is queued")
        generation = await client._wait_listening(0)
        session_id = await client._session_id()
        await run_blocking(terminate_session_connection, pggcl_dsn, session_id)
        await client._wait_listening(generation)
        assert [h.lease_id for h in await client.holders("db")] == [grant.lease_id]
        assert await queued(client, "db", 1)
    assert await waiter.result() is not None
    assert await client._session_id() == session_id
    assert (client.stats.reconnects, client.stats.sessions_opened) == (1, 1)


async def queued_in_its_session(c: AsyncClient, name: str) -> bool:
    """One request queued on ``name``, and it belongs to ``c``'s session of now."""
    return [w.session_id for w in await c.queue(name)] == [await c._session_id()]


async def test_a_reclaimed_session_requeues_its_waiters_and_logs_for_its_holders(
    pggcl_dsn: str, client: AsyncClient, other: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Cut off for longer than its grace, a client loses its leases (its holders are told in
    # the log), but its waiters queue again under its new session and are served in turn.
    await client.create_limit("held", 1)
    await client.create_limit("busy", 1)
    async with other.concurrency("busy"), client.concurrency("held"):
        waiter = spawn(lambda: hold_once(client, "busy"))
        await until(lambda: queued(client, "busy", 1), "the waiter is queued")
        session_id = await client._session_id()
        ((token, pid),) = sql(
            pggcl_dsn, "SELECT token, backend_pid FROM pggcl.sessions WHERE id = %s", session_id
        )
        generation = await client._wait_listening(0)
        with caplog.at_level(logging.WARNING, logger="pggcl"):
            # Closed from outside while its connection is away: it cannot be resumed.
            sql(pggcl_dsn, "SELECT pggcl.close_session(%s, %s)", session_id, token)
            sql(pggcl_dsn, "SELECT pg_terminate_backend(%s)", pid)
            await client._wait_listening(generation)
            await until(
                lambda: queued_in_its_session(client, "busy"),
                "the waiter is queued again under the new session",
            )
        assert await client._session_id() != session_id
        assert not waiter.done()
    assert await waiter.result() is not None
    assert "1 lease(s)" in caplog.text and "queueing again" in caplog.text
    assert client.stats.sessions_opened == 2
    assert await client.holders() == []
    assert await client.queue() == []


async def test_close_ends_a_waiter_with_client_closed_error(
    client: AsyncClient, other: AsyncClient
) -> None:
    await client.create_limit("db", 1)
    async with other.concurrency("db"):
        waiter = spawn(lambda: hold_once(client, "db"))
        await until(lambda: queued(client, "db", 1), "the waiter is queued")
        await client.close()
        assert await other.queue() == []
        with pytest.raises(pggcl.ClientClosedError):
            await waiter.result(timeout=2)


async def test_close_releases_what_the_session_held(pggcl_dsn: str) -> None:
    c = AsyncClient(pggcl_dsn)
    await c.create_limit("db", 1)
    held = c.concurrency("db")
    await held.__aenter__()
    assert len(await c.holders()) == 1
    await c.close()
    assert sql(pggcl_dsn, "SELECT count(*) FROM pggcl.leases") == [(0,)]


async def test_an_unreachable_database_says_so() -> None:
    async with AsyncClient("postgresql://nobody@127.0.0.1:1/x", connect_timeout=1) as c:
        with pytest.raises(pggcl.DatabaseUnavailableError, match="unreachable"):
            await c.list_limits()
        with pytest.raises(pggcl.DatabaseUnavailableError, match="unreachable"):
            await hold_once(c, "db")


# --- What a request may ask -----------------------------------------------------------------


async def test_missing_strict_and_impossible_requests(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pggcl"):
        assert await hold_once(client, "fresh") is not None
    assert "'fresh'" in caplog.text
    fresh = await client.read_limit("fresh")
    assert fresh.active is False
    with pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="'nope'"):
        await hold_once(client, "nope", strict=True)
    with pytest.raises(pggcl.LimitNotFoundError):
        await client.read_limit("nope")
    await client.create_limit("db", 2)
    with pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="3 slots on limit 'db'"):
        await hold_once(client, "db", occupy=3)
    with pytest.raises(pggcl.ValidationError, match="occupy: 0"):
        await hold_once(client, "db", occupy=0)
    with pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="slot_decay_per_second"):
        await client.rate_limit("db")
    assert await client.holders() == []
    assert await client.queue() == []


async def test_a_multi_name_request_is_all_or_nothing(client: AsyncClient) -> None:
    await client.create_limit("a", 1)
    await client.create_limit("b", 1)

    async def both() -> set[str]:
        async with client.concurrency(["a", "b"]):
            return {h.name for h in await client.holders()}

    async with client.concurrency("b"):
        waiter = spawn(both)
        await until(lambda: queued(client, "b", 1), "the request is queued on b")
        assert await queued(client, "a", 1)
        a = await client.read_limit("a")
        assert a.active_slots == 0  # nothing taken on a meanwhile
    assert await waiter.result() == {"a", "b"}
    assert await client.holders() == []


async def test_an_error_in_the_body_propagates_and_releases(client: AsyncClient) -> None:
    await client.create_limit("db", 1)

    async def fail_inside() -> None:
        async with client.concurrency("db"):
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fail_inside()
    assert await client.holders() == []


async def test_release_by_id(client: AsyncClient) -> None:
    await client.create_limit("db", 1)
    async with client.concurrency("db") as grant:
        assert grant.lease_id is not None
        assert await client.release(grant.lease_id) is True
        assert await client.release(uuid.uuid4()) is False
        assert await client.holders() == []


# --- Cost and the fast path ----------------------------------------------------------------


async def test_empty_names_do_nothing(client: AsyncClient) -> None:
    async with client.concurrency([]) as grant:
        await client.rate_limit([])
    assert grant.lease_id is None
    assert (client.stats.calls, client.stats.connects) == (0, 0)


async def test_the_uncontended_path_is_one_round_trip_each_way(client: AsyncClient) -> None:
    await client.create_limit("db", 1)
    await client._session_id()
    before = client.stats.calls
    async with client.concurrency("db"):
        assert client.stats.calls == before + 1
    assert client.stats.calls == before + 2


async def test_a_hand_off_is_a_notification_not_a_poll(
    client: AsyncClient, other: AsyncClient
) -> None:
    await client.create_limit("db", 1)
    async with client.concurrency("db"):
        waiter = spawn(lambda: hold_once(other, "db"))
        await until(lambda: queued(client, "db", 1), "the waiter is queued")
    assert await waiter.result() is not None
    # take (refused), acquire (queued), release: nothing ran in between; the grant came by
    # NOTIFY.
    assert (other.stats.calls, other.stats.notifications) == (3, 1)


# --- What changes to a limit do to its waiters ----------------------------------------------


async def test_inactive_limits_never_block(client: AsyncClient) -> None:
    await client.create_limit("off", 1, active=False)
    async with client.concurrency("off"):
        assert await hold_once(client, "off", timeout_seconds=0) is not None
        await client.rate_limit("off", timeout_seconds=0)


async def test_raising_disabling_or_deleting_a_limit_frees_waiters(client: AsyncClient) -> None:
    for change in ("raise", "disable", "delete"):
        await client.create_limit("db", 1)
        async with client.concurrency("db"):
            waiter = spawn(lambda: hold_once(client, "db"))
            await until(lambda: queued(client, "db", 1), f"the waiter is queued ({change})")
            if change == "raise":
                await client.update_limit("db", limit=2)
            elif change == "disable":
                await client.update_limit("db", active=False)
            else:
                await client.delete_limit("db")
            await waiter.result()
            assert await client.queue() == [], change
        await client.delete_limit("db")
    assert await client.holders() == []


# --- Connections ----------------------------------------------------------------------------


async def test_a_pool_connection_killed_while_idle_is_replaced(pggcl_dsn: str) -> None:
    async with AsyncClient(pggcl_dsn, pool_size=2) as c:
        await c.create_limit("db", 1)
        await c._session_id()
        assert terminate_pool_connections(pggcl_dsn) == 1
        assert [lim.name for lim in await c.list_limits()] == ["db"]
        assert await hold_once(c, "db") is not None
        assert c.stats.reconnects == 0


# --- Values: what both drivers send and give back -------------------------------------------
#
# The two drivers encode arguments and decode results differently (psycopg: text adaptation
# and casts on the server; asyncpg: binary encoding by the parameter's type, in the client).
# The cases below are where that showed through: the same call was refused differently, or
# accepted with different results (see BAD_VALUES).
ONE_AND_A_HALF: Any = 1.5  # a caller without a type checker


def bad_value_call(c: AsyncClient, case: str) -> Pending:
    """The call of ``case``, not yet made."""
    if case == "limit above int32":
        return c.create_limit("x", 2**31)
    if case == "fractional limit":
        return c.create_limit("x", ONE_AND_A_HALF)
    if case == "update to a limit above int32":
        return c.update_limit("db", limit=2**31)
    if case == "occupy above int32":
        return hold_once(c, "db", occupy=2**40)
    if case == "NUL in a name":
        return c.create_limit("a\x00b", 1)
    assert case == "lone surrogate in a name"
    return c.create_limit("a\udcffb", 1)


@pytest.mark.parametrize("case", BAD_VALUES)
async def test_a_bad_value_is_a_validation_error(client: AsyncClient, case: str) -> None:
    await client.create_limit("db", 1)
    try:
        await bad_value_call(client, case)
    except pggcl.ValidationError as exc:
        assert exc.field == BAD_VALUES[case], (exc.field, str(exc))
    except Exception as exc:
        raise AssertionError(f"not a ValidationError: {type(exc).__name__}: {exc}") from None
    else:
        raise AssertionError("accepted")
    assert [(lim.name, lim.limit) for lim in await client.list_limits()] == [("db", 1)]
    assert await client.holders() == []


async def test_timestamps_are_utc_whatever_the_database_time_zone(pggcl_dsn: str) -> None:
    set_database_time_zone(pggcl_dsn, "Asia/Tokyo")
    async with AsyncClient(pggcl_dsn) as c:
        created = await c.create_limit("db", 1)
        async with c.concurrency("db"):
            waiter = spawn(lambda: hold_once(c, "db"))
            await until(lambda: queued(c, "db", 1), "the waiter is queued")
            (holder,) = await c.holders()
            (queued_request,) = await c.queue()
        assert await waiter.result() is not None
    stamps = [created.created, created.updated, holder.since, queued_request.since]
    assert [t.utcoffset() for t in stamps] == [timedelta(0)] * 4


def _spans(exporter: Any, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def traced_work() -> None:
    with otel_trace.get_tracer("test").start_as_current_span("work"):
        pass


async def traced_hold(c: AsyncClient) -> None:
    async with c.concurrency("db"):
        traced_work()


async def timed_out(c: AsyncClient) -> None:
    with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError):
        await hold_once(c, "db", timeout_seconds=0)


async def test_waits_and_holds_are_opentelemetry_spans(
    client: AsyncClient, other: AsyncClient
) -> None:
    await client.create_limit("db", 1)
    await client.create_limit("api", 10, slot_decay_per_second=10)
    with recorded_spans() as exporter:
        async with other.concurrency("db"):
            waiter = spawn(lambda: traced_hold(client))
            await until(lambda: queued(client, "db", 1), "the waiter is queued")
        await waiter.result()
        async with other.concurrency("db"):
            await timed_out(client)
        await client.rate_limit("api")
    (work,) = _spans(exporter, "work")
    holds = _spans(exporter, "pggcl.hold")
    (hold,) = [s for s in holds if s.context.span_id == work.parent.span_id]  # the body's
    assert [s.attributes["pggcl.outcome"] for s in holds] == ["released"] * 3
    assert hold.attributes["pggcl.limits"] == ("db",) and hold.attributes["pggcl.occupy"] == 1
    assert hold.attributes["pggcl.hold_seconds"] >= 0 and "pggcl.lease_id" in hold.attributes
    acquires = _spans(exporter, "pggcl.acquire")
    outcomes = [(s.attributes["pggcl.mode"], s.attributes["pggcl.outcome"]) for s in acquires]
    assert sorted(outcomes) == [
        ("concurrency", "granted"),
        ("concurrency", "granted"),
        ("concurrency", "granted"),
        ("concurrency", "timeout"),
        ("rate_limit", "granted"),
    ]
    assert min([s.attributes["pggcl.wait_seconds"] for s in acquires]) >= 0


async def test_without_a_tracer_provider_nothing_is_traced(client: AsyncClient) -> None:
    await client.create_limit("db", 1)
    assert tracing._tracer() is None  # OpenTelemetry may be loaded, but no provider is set
    assert await hold_once(client, "db") is not None


async def test_the_session_connection_knows_the_server_version(pggcl_dsn: str) -> None:
    # What the session worker checks at every connect (pggcl.core.versions): the number the
    # driver has from the connection's start, without a round trip.
    conn = await connect(pggcl_dsn, 10.0)
    try:
        ((shown,),) = await conn.execute("SELECT current_setting('server_version_num')", ())
        assert conn.server_version_num == int(shown) >= MIN_SERVER_VERSION_NUM
    finally:
        await conn.close(10.0)


# --- One connection: pool_size=0 ---------------------------------------------------------------


def connections_named(dsn: str, name: str) -> int:
    rows = sql(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", name)
    (count,) = rows[0]
    assert isinstance(count, int)
    return count


async def test_without_a_pool_one_connection_carries_everything(
    pggcl_dsn: str, other: AsyncClient
) -> None:
    solo_dsn = pggcl_dsn + ("&" if "?" in pggcl_dsn else "?") + "application_name=pggcl-solo"
    async with AsyncClient(solo_dsn, pool_size=0) as solo:
        await solo.create_limit("db", 1)
        async with solo.concurrency("db"):  # the fast path: one call
            assert await run_blocking(connections_named, pggcl_dsn, "pggcl-solo") == 1
        async with other.concurrency("db"):
            waiter = spawn(lambda: hold_once(solo, "db"))  # queues, is woken, releases
            await until(lambda: queued(other, "db", 1), "the waiter is queued")
            assert await run_blocking(connections_named, pggcl_dsn, "pggcl-solo") == 1
        assert await waiter.result() is not None
        assert [lim.name for lim in await solo.list_limits()] == ["db"]
        assert await solo.holders() == [] and await solo.queue() == []
        assert solo.stats.connects == 1  # the session connection, and nothing else
        assert await run_blocking(connections_named, pggcl_dsn, "pggcl-solo") == 1


async def test_without_a_pool_a_lost_connection_is_remade_and_the_lease_released(
    pggcl_dsn: str, other: AsyncClient
) -> None:
    async with AsyncClient(pggcl_dsn, pool_size=0) as solo:
        await solo.create_limit("db", 1)
        async with solo.concurrency("db") as grant:
            generation = await solo._wait_listening(0)
            session_id = await solo._session_id()
            await run_blocking(terminate_session_connection, pggcl_dsn, session_id)
            await solo._wait_listening(generation)
            assert [h.lease_id for h in await other.holders("db")] == [grant.lease_id]
        assert await other.holders("db") == []  # released on the remade connection
        assert (solo.stats.reconnects, solo.stats.sessions_opened) == (1, 1)


@pytest.mark.parametrize(
    "options",
    [{"pool_size": -1}, {"pool_size": 1.5}, {"pool_size": 0, "session_dsn": "postgresql://x"}],
    ids=["negative", "fraction", "with-session-dsn"],
)
async def test_a_bad_pool_size_is_a_validation_error(
    pggcl_dsn: str, options: dict[str, Any]
) -> None:
    with pytest.raises(pggcl.ValidationError) as raised:
        AsyncClient(pggcl_dsn, **options)
    assert raised.value.field == "pool_size"


# --- The session connection's idle timeout -------------------------------------------------------


@pytest.mark.parametrize("set_by", ["client", "server"])
async def test_an_idle_session_connection_is_kept_alive_past_its_idle_timeout(
    pggcl_dsn: str, other: AsyncClient, set_by: str
) -> None:
    # The server ends a session connection quiet for 3 s: idle_session_timeout, set by the
    # client on that connection (tests/faults/test_pgbouncer.py shows it ending a dead
    # client's), or in the server's settings (here the connection's startup options). The
    # keepalives keep a live one from being ended while it holds a slot and has nothing else
    # to say.
    if set_by == "client":
        idle = AsyncClient(pggcl_dsn, idle_session_timeout_seconds=3)
    else:
        joiner = "&" if "?" in pggcl_dsn else "?"
        idle = AsyncClient(pggcl_dsn + joiner + "options=-c%20idle_session_timeout%3D3s")
    async with idle:
        await idle.create_limit("db", 1)
        async with idle.concurrency("db") as grant:
            session_id = await idle._session_id()
            await until(lambda: idle.stats.keepalives >= 3, "three keepalives were sent")
            assert (idle.stats.connects, idle.stats.reconnects) == (1, 0)
            assert await idle._session_id() == session_id
            assert [h.lease_id for h in await other.holders("db")] == [grant.lease_id]


@pytest.mark.parametrize("value", [0, 2.9, 86401, float("nan"), float("inf"), "30", True])
async def test_a_bad_idle_session_timeout_is_a_validation_error(pggcl_dsn: str, value: Any) -> None:
    with pytest.raises(pggcl.ValidationError) as raised:
        AsyncClient(pggcl_dsn, idle_session_timeout_seconds=value)
    assert raised.value.field == "idle_session_timeout_seconds"
    assert "idle_session_timeout_seconds" in str(raised.value)


# --- Templates: per-key limits (issue #15) -------------------------------------------------------


async def test_a_template_makes_per_key_limits_on_first_use(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    made = await client.create_limit("tenant:*", 2, idle_seconds=600)
    assert (made.name, made.limit) == ("tenant:*", 2)

    async def read_while_holding(name: str) -> pggcl.ConcurrencyLimit:
        async with client.concurrency(name, strict=True):
            return await client.read_limit(name)

    with caplog.at_level(logging.WARNING, logger="pggcl"):
        acme = await read_while_holding("tenant:acme")
    assert (acme.limit, acme.active, acme.held_slots) == (2, True, 1)
    assert (acme.template, acme.customized) == ("tenant:*", False)
    assert "created" not in caplog.text  # no "created inactive" warning: it limits
    [template] = await client.list_templates()
    assert (template.name, template.limit, template.idle_seconds, template.instances) == (
        "tenant:*",
        2,
        600.0,
        1,
    )
    await client.update_limit("tenant:*", limit=4)
    assert (await client.read_limit("tenant:acme")).limit == 4
    with pytest.raises(pggcl.ValidationError) as raised:
        await client.update_limit("tenant:*", idle_seconds=-1)
    assert raised.value.field == "idle_seconds"
    with pytest.raises(pggcl.ValidationError, match="is a template") as raised:
        await hold_once(client, "tenant:*")  # a template holds no slots itself
    assert raised.value.field == "names"


async def test_nested_quotas_hold_per_tenant_and_in_all(client: AsyncClient) -> None:
    # concurrency(["openai", f"openai:{tenant}"]): each tenant at most 2, all together at most
    # 3, granted atomically, first come first served, without a deadlock.
    await client.create_limit("openai", 3)
    await client.create_limit("openai:*", 2)
    intervals: dict[str, list[tuple[float, float]]] = {"a": [], "b": [], "c": []}

    async def worker(tenant: str) -> None:
        for _ in range(3):
            async with client.concurrency(["openai", f"openai:{tenant}"], timeout_seconds=30):
                start = time.monotonic()
                await sleep(0.002)
                intervals[tenant].append((start, time.monotonic()))

    def start(tenant: str) -> Worker[None]:
        return spawn(lambda: worker(tenant))

    workers = [start(t) for t in "aabbbccc"]
    for w in workers:
        await w.result(timeout=60)
    per_tenant = [max_overlap(spans) for spans in intervals.values()]
    every_hold = [span for spans in intervals.values() for span in spans]
    assert max(per_tenant) <= 2 and max_overlap(every_hold) <= 3
    assert len(every_hold) == 24
    assert await client.holders() == [] and await client.queue() == []


async def test_bounded_reads_of_many_instances(client: AsyncClient) -> None:
    # What /metrics and the UI read (issues #15, #16.2): never every instance.
    await client.create_limit("db", 1)
    await client.create_limit("tenant:*", 2)
    for i in range(12):
        await hold_once(client, f"tenant:{i:02}")
    async with client.concurrency("tenant:07", 2):
        busiest = await client.busiest_limits(3)
        assert [lim.name for lim in busiest] == ["db", "tenant:00", "tenant:01", "tenant:07"]
        also = await client.busiest_limits(1, also=["tenant:11", "missing"])
        assert [lim.name for lim in also] == ["db", "tenant:07", "tenant:11"]
        [totals] = await client.template_totals()
    assert isinstance(totals, pggcl.TemplateTotals)
    assert (totals.name, totals.limit, totals.instances, totals.held_slots) == (
        "tenant:*",
        2,
        12,
        2,
    )
    assert (totals.grants, totals.hold_seconds_count, totals.retired_instances) == (13, 12, 0)
    assert totals.wait_seconds_buckets[-1] == totals.wait_seconds_count == 13

    first = await client.list_instances("tenant:*", max_rows=5)
    assert [lim.name for lim in first] == [f"tenant:{i:02}" for i in range(5)]
    rest = await client.list_instances("tenant:*", after=first[-1].name, max_rows=100)
    assert [lim.name for lim in rest] == [f"tenant:{i:02}" for i in range(5, 12)]
    assert await client.list_instances("db") == []  # a plain limit has no instances
    with pytest.raises(pggcl.ValidationError) as raised:
        await client.busiest_limits(-1)
    assert raised.value.field == "per_template"
    with pytest.raises(pggcl.ValidationError) as raised:
        await client.list_instances("tenant:*", max_rows=2**31)
    assert raised.value.field == "max_rows"


# --- Priorities (issue #15) ----------------------------------------------------------------------


async def test_a_head_start_is_served_first_and_shown_in_the_queue(
    client: AsyncClient, other: AsyncClient
) -> None:
    await client.create_limit("db", 1)
    order: list[str] = []

    async def wait_then_note(tag: str, priority: float) -> None:
        async with other.concurrency("db", priority=priority, timeout_seconds=30):
            order.append(tag)

    async with client.concurrency("db"):
        plain = spawn(lambda: wait_then_note("plain", 0.0))
        await until(lambda: queued(client, "db", 1), "the plain request is queued")
        urgent = spawn(lambda: wait_then_note("urgent", 30.0))
        await until(lambda: queued(client, "db", 2), "the urgent request is queued")
        waiting = await client.queue("db")
        assert [(w.position, w.priority) for w in waiting] == [(1, 30.0), (2, 0.0)]
    await urgent.result(timeout=30)
    await plain.result(timeout=30)
    assert order == ["urgent", "plain"]


async def hold_once_with(c: AsyncClient, name: str, **options: Any) -> None:
    async with c.concurrency(name, **options):
        pass


@pytest.mark.parametrize("priority", [86401, -86401, float("nan"), float("inf"), "1", True])
async def test_a_bad_priority_is_a_validation_error(client: AsyncClient, priority: Any) -> None:
    await client.create_limit("db", 1)
    with pytest.raises(pggcl.ValidationError) as raised:
        await hold_once_with(client, "db", priority=priority)
    assert raised.value.field == "priority"
    with pytest.raises(pggcl.ValidationError):
        await client.rate_limit("db", priority=priority)
    assert await client.holders() == [] and await client.queue() == []
