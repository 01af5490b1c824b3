"""GENERATED from ``tests/client/test_behaviour_async.py`` by ``tools/async_to_sync.py``: do not
edit; change the async source (it says what this module is for) and run the tool.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry import trace as otel_trace

import pggcl
from pggcl import Client, schema, tracing
from pggcl.core.versions import MIN_SERVER_VERSION_NUM
from pggcl.drivers.psycopg_driver import connect
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
from tests.client._compat import (
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
from tests.client.conftest import max_overlap, sql, terminate_session_connection


@pytest.fixture
def client(pggcl_dsn: str) -> Iterator[Client]:
    with Client(pggcl_dsn) as c:
        yield c


@pytest.fixture
def other(pggcl_dsn: str) -> Iterator[Client]:
    """A second client (a second session) on the same database."""
    with Client(pggcl_dsn) as c:
        yield c


def queued(c: Client, name: str, n: int) -> bool:
    return len(c.queue(name)) == n


def held(c: Client, name: str, n: int) -> bool:
    return len(c.holders(name)) == n


def hold_once(
    c: Client,
    names: str | list[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
) -> uuid.UUID | None:
    """Acquire, then release at once; the lease id it held."""
    with c.concurrency(names, occupy, timeout_seconds, strict=strict) as grant:
        return grant.lease_id


# --- Managing and holding --------------------------------------------------------------------


def test_manage_limits(client: Client) -> None:
    created = client.create_limit("database", limit=5)
    assert (created.name, created.limit, created.active, created.active_slots) == (
        "database",
        5,
        True,
        0,
    )
    client.create_limit("api", limit=2, slot_decay_per_second=0.5, active=False)
    assert [lim.name for lim in client.list_limits()] == ["api", "database"]
    api = client.read_limit("api")
    assert api.slot_decay_per_second == 0.5
    updated = client.update_limit("api", limit=3, active=True, new_name="api2")
    assert (updated.name, updated.limit, updated.active) == ("api2", 3, True)
    with pytest.raises(pggcl.LimitNotFoundError, match="'api'"):
        client.read_limit("api")
    with pytest.raises(pggcl.LimitExistsError, match="'database'"):
        client.create_limit("database", limit=1)
    with pytest.raises(pggcl.ValidationError, match="-1"):
        client.create_limit("bad", limit=-1)
    with pytest.raises(pggcl.ValidationError, match="a/b"):
        client.create_limit("a/b", limit=1)
    assert client.delete_limit("api2") is True
    assert client.delete_limit("api2") is False
    assert [lim.name for lim in client.list_limits()] == ["database"]


def test_a_hold_shows_in_holders_and_is_released(client: Client) -> None:
    client.create_limit("db", 2)
    with client.concurrency("db", occupy=2, holder="me") as grant:
        (held_now,) = client.holders("db")
        assert (held_now.lease_id, held_now.slots, held_now.holder) == (grant.lease_id, 2, "me")
        db = client.read_limit("db")
        assert db.active_slots == 2
    assert client.holders() == []
    db = client.read_limit("db")
    assert db.active_slots == 0


def test_workers_never_exceed_the_limit_and_reach_it(client: Client) -> None:
    client.create_limit("db", 3)
    intervals: list[tuple[float, float]] = []
    entries = itertools.count(1)
    full = Event()  # the first 3 holders stay until all 3 are in: the peak is reached

    def worker() -> None:
        for _ in range(3):
            with client.concurrency("db"):
                start = time.monotonic()
                entry = next(entries)
                if entry == 3:
                    full.set()
                if entry <= 3:
                    full.wait()
                sleep(0.002)
                intervals.append((start, time.monotonic()))

    workers = [spawn(worker) for _ in range(8)]
    for w in workers:
        w.result(timeout=30)
    assert len(intervals) == 24
    assert max_overlap(intervals) == 3
    assert client.stats.connects == 1  # one session connection, however many wait


def test_a_timeout_past_what_the_platform_can_sleep_waits(client: Client) -> None:
    years_300 = 300 * 365 * 24 * 3600.0  # past threading.TIMEOUT_MAX (about 292 years)
    client.create_limit("db", 1)
    with client.concurrency("db"):
        waiter = spawn(lambda: hold_once(client, "db", timeout_seconds=years_300))
        until(lambda: queued(client, "db", 1), "the waiter is queued")
    assert waiter.result() is not None


def test_a_limit_that_made_us_queue_skips_the_fast_path(client: Client) -> None:
    # pggcl.take is refused wherever requests queue: after one request queued, the next on
    # that limit goes straight to pggcl.acquire; a request granted at once brings take back.
    client.create_limit("db", 1)
    costs = []
    with client.concurrency("db"):
        for _ in range(2):
            before = client.stats.calls
            with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError):
                hold_once(client, "db", timeout_seconds=0.05)
            costs.append(client.stats.calls - before)
    # take, acquire (queued), explain (why it waited, for the message), cancel; then the same
    # without take.
    assert costs == [4, 3]
    assert not client._contention.worth_taking("db")
    assert hold_once(client, "db") is not None  # acquire, granted at once
    assert client._contention.worth_taking("db")


# --- Pool exhaustion ------------------------------------------------------------------------


def test_a_call_waits_for_a_busy_pool_beyond_connect_timeout(pggcl_dsn: str) -> None:
    with Client(pggcl_dsn, pool_size=1, pool_timeout=30.0, connect_timeout=0.5) as c:
        c.create_limit("db", 1)
        with row_locked(pggcl_dsn, "db"):
            blocked = spawn(lambda: c.update_limit("db", limit=2))
            until(lambda: lock_waits(pggcl_dsn) == 1, "update_limit waits for the lock")
            waiting = spawn(c.list_limits)
            # Not synchronisation: the scenario. The only pool connection stays busy for twice
            # connect_timeout, which must not bound the wait for it (pool_timeout does).
            sleep(1.0)
            assert not waiting.done()
        updated = blocked.result()
        assert updated.limit == 2
        assert [lim.name for lim in waiting.result()] == ["db"]


def test_an_exhausted_pool_raises_pool_timeout_error(pggcl_dsn: str) -> None:
    with Client(pggcl_dsn, pool_size=1, pool_timeout=0.2) as c:
        c.create_limit("db", 1)
        c._session_id()
        with row_locked(pggcl_dsn, "db"):
            blocked = spawn(lambda: c.update_limit("db", limit=2))
            until(lambda: lock_waits(pggcl_dsn) == 1, "update_limit waits for the lock")
            with pytest.raises(pggcl.PoolTimeoutError) as exhausted:
                c.list_limits()
            with pytest.raises(pggcl.PoolTimeoutError):
                hold_once(c, "db")
        updated = blocked.result()
        assert updated.limit == 2
        assert c.queue() == []
        assert c.holders() == []
    error = exhausted.value
    assert isinstance(error, TimeoutError)
    assert not isinstance(error, pggcl.DatabaseUnavailableError)
    message = str(error)
    assert "pool_size" in message and "pool_timeout" in message, message
    assert "unreachable" not in message, message


# --- Use after close() ----------------------------------------------------------------------


def test_every_call_after_close_raises_client_closed_error(pggcl_dsn: str) -> None:
    c = Client(pggcl_dsn)
    c.create_limit("db", 1, slot_decay_per_second=0.0)
    lease = hold_once(c, "db")
    assert lease is not None
    connects = c.stats.connects
    c.close()
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
            call()
    assert c.stats.connects == connects  # nothing was reopened
    assert sql(pggcl_dsn, "SELECT count(*) FROM pggcl.sessions") == [(0,)]
    c.close()  # a second close() is harmless


def test_a_client_closed_before_any_use_raises_client_closed_error(pggcl_dsn: str) -> None:
    c = Client(pggcl_dsn)
    c.close()
    with pytest.raises(pggcl.ClientClosedError, match="closed"):
        c.list_limits()
    with pytest.raises(pggcl.ClientClosedError, match="closed"):
        hold_once(c, "db")
    assert c.stats.connects == 0


# --- Heartbeat and reclaim ------------------------------------------------------------------


def test_the_heartbeat_runs_while_there_are_waiters_and_only_then(pggcl_dsn: str) -> None:
    with Client(pggcl_dsn, heartbeat_seconds=0.05) as c:
        c.create_limit("db", 1)
        with c.concurrency("db"):
            # Not synchronisation: five heartbeat intervals in which no heartbeat may run.
            sleep(0.25)
            assert c.stats.heartbeats == 0
            waiter = spawn(lambda: hold_once(c, "db"))
            until(lambda: c.stats.heartbeats >= 3, "three heartbeats ran")
        assert waiter.result() is not None
        beats = c.stats.heartbeats
        sleep(0.25)
        assert c.stats.heartbeats <= beats + 1  # one may have been under way: then none


def test_the_heartbeat_reclaims_a_dead_holder_for_a_waiter(pggcl_dsn: str) -> None:
    with Client(pggcl_dsn, heartbeat_seconds=0.05) as c:
        c.create_limit("db", 1)
        proc = run_blocking(start_holder, pggcl_dsn)
        try:
            (dead,) = c.holders("db")
            waiter = spawn(lambda: hold_once(c, "db"))
            until(lambda: queued(c, "db", 1), "the waiter is queued")
        finally:
            run_blocking(kill, proc)
        lease = waiter.result(timeout=30)
        assert lease is not None and lease != dead.lease_id

        def counted() -> bool:
            return c.stats.heartbeats >= 1

        # The grant reaches the waiter during the heartbeat's own statement (the driver hands
        # notifications over as they are read), so the heartbeat is counted just after.
        until(counted, "the heartbeat that reclaimed is counted")
        assert c.holders() == []
        assert c.queue() == []


# --- Rejection, timeout, cancellation -------------------------------------------------------


def test_lowering_the_limit_rejects_a_waiter_that_can_never_fit(client: Client) -> None:
    client.create_limit("db", 2)
    with client.concurrency("db"):
        big = spawn(lambda: hold_once(client, "db", occupy=2))
        until(lambda: queued(client, "db", 1), "the 2-slot request is queued")
        client.update_limit("db", limit=1)
        with pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="'db'"):
            big.result()
        assert client.queue() == []
    assert client.holders() == []


def test_a_timeout_leaves_nothing_queued(client: Client) -> None:
    client.create_limit("db", 1)
    with client.concurrency("db"):
        with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError, match="'db'"):
            hold_once(client, "db", timeout_seconds=0.05)
        assert client.queue() == []
        calls = client.stats.calls
        with pytest.raises(TimeoutError):  # 0: one try, no waiting
            hold_once(client, "db", timeout_seconds=0)
        assert client.stats.calls == calls + 1
        assert client.queue() == []
        assert len(client.holders()) == 1
    assert client.holders() == []


def test_explain_says_why_a_request_waits(client: Client) -> None:
    client.create_limit("db", 2)
    client.create_limit("gpu", 4)
    with client.concurrency("db", holder="backup", lease_duration=None) as held_now:
        big = spawn(lambda: hold_once(client, "db", occupy=2))
        until(lambda: queued(client, "db", 1), "the 2-slot request is queued")
        small = spawn(lambda: hold_once(client, ["db", "gpu"]))
        until(lambda: queued(client, "db", 2), "both requests are queued")
        first, second = [w.waiter_id for w in client.queue("db")]
        (why,) = client.explain(first)
        assert (why.waiter_id, why.name, why.blocking, why.position) == (first, "db", True, 1)
        assert (why.occupy, why.mode, why.limit, why.active) == (2, "concurrency", 2, True)
        assert (why.held_slots, why.active_slots, why.leases) == (1, 1.0, 1)
        (holding,) = why.holders
        assert (holding.holder, holding.slots, holding.expires) == ("backup", 1, None)
        (lease,) = client.holders("db")
        assert lease.lease_id == held_now.lease_id and holding.since == lease.since
        assert holding.since.utcoffset() == timedelta(0) and why.seconds_until_room is None
        # A request on two limits: blocked on db (one ahead), not on gpu (room, nobody ahead).
        both = client.explain(second, max_holders=0)
        assert [(e.name, e.blocking, e.position, e.holders) for e in both] == [
            ("db", True, 2, ()),
            ("gpu", False, 1, ()),
        ]
        everyone = client.explain_queue()
        expected = [(first, "db"), (second, "db"), (second, "gpu")]
        assert [(e.waiter_id, e.name) for e in everyone] == expected
        # Those queued on gpu, on every limit they wait on.
        on_gpu = client.explain_queue("gpu")
        assert [(e.waiter_id, e.name) for e in on_gpu] == [(second, "db"), (second, "gpu")]
        with pytest.raises(pggcl.ValidationError) as bad:
            client.explain(first, max_holders=-1)
        assert bad.value.field == "max_holders"
        with pytest.raises(pggcl.ValidationError):
            client.explain("1")  # type: ignore[arg-type]
        assert client.explain(10**15) == []  # not queued: nothing to explain
    big.result()
    small.result()
    assert client.explain(first) == [] and client.explain_queue() == []


def test_explain_own_says_why_this_clients_requests_wait(client: Client, other: Client) -> None:
    client.create_limit("db", 1)
    calls = client.stats.calls
    assert client.explain_own() == []  # none waits: not even a call
    assert client.stats.calls == calls
    with other.concurrency("db", holder="backup", lease_duration=None):
        theirs = spawn(lambda: hold_once(other, "db"))
        until(lambda: queued(client, "db", 1), "their request is queued")
        mine = spawn(lambda: hold_once(client, "db", occupy=1))
        until(lambda: queued(client, "db", 2), "my request is queued")
        waiting = [w.waiter_id for w in client.queue("db")]
        until(lambda: len(client._port.session.waiter_ids()) == 1, "mine waits")
        until(lambda: len(other._port.session.waiter_ids()) == 1, "theirs waits")
        (why,) = client.explain_own(max_holders=1)
        assert (why.waiter_id, why.name, why.position, why.blocking) == (waiting[1], "db", 2, True)
        assert [h.holder for h in why.holders] == ["backup"]
        (theirs_why,) = other.explain_own()
        assert (theirs_why.waiter_id, theirs_why.position) == (waiting[0], 1)
    theirs.result()
    mine.result()
    assert client.explain_own() == [] and other.explain_own() == []


def test_a_timeout_says_why_it_waited(client: Client) -> None:
    client.create_limit("db", 1)
    with client.concurrency("db", holder="backup", lease_duration=None):
        (lease,) = client.holders("db")
        ahead = spawn(lambda: hold_once(client, "db"))
        until(lambda: queued(client, "db", 1), "a request is queued")
        with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError) as timed_out:
            hold_once(client, "db", timeout_seconds=0.2)
        since = lease.since.strftime("%Y-%m-%dT%H:%M:%SZ")
        waited = "timed out after 0.2 s waiting for 1 slot on 'db': "
        held_by = f"1 of 1 slots held by 1 lease (oldest: backup since {since}), "
        assert str(timed_out.value) == waited + held_by + "1 request ahead"
        assert timed_out.value.waiting == held_by + "1 request ahead"
        assert len(client.queue("db")) == 1  # and it withdrew: only the one ahead
    ahead.result()
    # Rate mode: how full the bucket is and when it will have room; several limits, each.
    client.create_limit("api", 2, slot_decay_per_second=0.001)
    client.create_limit("free", 5, slot_decay_per_second=1.0)
    client.rate_limit("api", occupy=2)
    with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError) as timed_out:
        client.rate_limit(["api", "free"], timeout_seconds=0.2)
    waited = re.escape("timed out after 0.2 s waiting for 1 slot on 'api', 'free': ")
    in_use = "'api' 2 of 2 slots in use, room in \\d+\\.\\d s, nobody ahead"
    assert re.fullmatch(waited + in_use, str(timed_out.value)), str(timed_out.value)
    assert client.queue() == []


def test_a_timeout_says_what_it_did_before_when_why_cannot_be_read(
    client: Client, pggcl_dsn: str
) -> None:
    # A database at revision 0011 has no pggcl.explain: the call fails, the message is the
    # one from before it, and nothing is left queued.
    client.create_limit("db", 1)  # (the client's management needs the current schema)
    run_blocking(schema.downgrade, pggcl_dsn, "0011")
    with client.concurrency("db"):
        with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError) as timed_out:
            hold_once(client, "db", timeout_seconds=0.2)
        assert str(timed_out.value) == "could not acquire 1 slot on 'db' within timeout_seconds=0.2"
        assert timed_out.value.waiting is None
        assert run_blocking(sql, pggcl_dsn, "SELECT count(*) FROM pggcl.queue") == [(0,)]


def test_cancel_while_waiting_leaves_nothing_and_serves_the_next(client: Client) -> None:
    client.create_limit("db", 2)
    with client.concurrency("db", holder="holder"):

        def behind() -> uuid.UUID | None:
            # Queued behind the 2-slot request although one slot is free: first come, first
            # served. Cancelling the request ahead must serve this one.
            until(lambda: queued(client, "db", 1), "the 2-slot request is queued")
            return hold_once(client, "db")

        small = spawn(behind)
        with pytest.raises(Cancelled):
            cancel_when(
                lambda: hold_once(client, "db", occupy=2),
                lambda: queued(client, "db", 2),
                "both requests are queued",
            )
        assert small.result() is not None
        assert client.queue() == []
        assert [h.holder for h in client.holders()] == ["holder"]
    assert client.holders() == []


def test_cancel_while_holding_releases(client: Client) -> None:
    client.create_limit("db", 1)

    def hold_long() -> None:
        with client.concurrency("db"):
            sleep(60)

    with pytest.raises(Cancelled):
        cancel_when(hold_long, lambda: held(client, "db", 1), "the slot is held")
    assert client.holders() == []
    assert hold_once(client, "db") is not None


def test_a_call_interrupted_mid_statement_has_settled_when_it_raises(
    pggcl_dsn: str, client: Client
) -> None:
    client.create_limit("db", 1)
    with row_locked(pggcl_dsn, "db"):
        with pytest.raises(Cancelled):
            cancel_when(
                lambda: client.update_limit("db", limit=5),
                lambda: lock_waits(pggcl_dsn) == 1,
                "update_limit waits for the lock",
            )
        assert lock_waits(pggcl_dsn) == 0  # cancelled on the server, not left to run later
    limit = client.read_limit("db")
    assert limit.limit == 1
    assert hold_once(client, "db") is not None  # the pool connection is fine


# --- Hand-off and rate limits ---------------------------------------------------------------


def test_waiters_are_served_first_come_first_served(client: Client, other: Client) -> None:
    client.create_limit("db", 1)
    order: list[str] = []

    def take_turn(name: str) -> None:
        with other.concurrency("db", holder=name):
            order.append(name)

    with client.concurrency("db"):
        first = spawn(lambda: take_turn("first"))
        until(lambda: queued(client, "db", 1), "the first waiter is queued")
        second = spawn(lambda: take_turn("second"))
        until(lambda: queued(client, "db", 2), "the second waiter is queued")
        assert [w.holder for w in client.queue("db")] == ["first", "second"]
        assert order == []
    first.result()
    second.result()
    assert order == ["first", "second"]
    assert other.stats.notifications >= 2  # each grant came by NOTIFY
    assert client.holders() == []


def test_rate_limit_waits_until_the_bucket_has_room(client: Client) -> None:
    client.create_limit("api", 1, slot_decay_per_second=10.0)
    client._session_id()
    calls = client.stats.calls
    for _ in range(3):
        client.rate_limit("api")
    # 1 immediate grant, then for each of the 2 others: the call that names the wait, a sleep
    # of exactly that long, and one call that grants.
    assert client.stats.calls == calls + 1 + 2 * 2
    assert client.stats.heartbeats == 0
    client.update_limit("api", slot_decay_per_second=0.01)
    with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError, match="'api'"):
        client.rate_limit("api", timeout_seconds=0.05)
    assert client.queue() == []


# --- Sessions: reconnect, loss, close -------------------------------------------------------


def test_a_lost_session_connection_is_remade_and_keeps_its_leases(
    pggcl_dsn: str, client: Client
) -> None:
    client.create_limit("db", 1)
    with client.concurrency("db") as grant:
        waiter = spawn(lambda: hold_once(client, "db"))
        until(lambda: queued(client, "db", 1), "the waiter is queued")
        generation = client._wait_listening(0)
        session_id = client._session_id()
        run_blocking(terminate_session_connection, pggcl_dsn, session_id)
        client._wait_listening(generation)
        assert [h.lease_id for h in client.holders("db")] == [grant.lease_id]
        assert queued(client, "db", 1)
    assert waiter.result() is not None
    assert client._session_id() == session_id
    assert (client.stats.reconnects, client.stats.sessions_opened) == (1, 1)


def queued_in_its_session(c: Client, name: str) -> bool:
    """One request queued on ``name``, and it belongs to ``c``'s session of now."""
    return [w.session_id for w in c.queue(name)] == [c._session_id()]


def test_a_reclaimed_session_requeues_its_waiters_and_logs_for_its_holders(
    pggcl_dsn: str, client: Client, other: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # Cut off for longer than its grace, a client loses its leases (its holders are told in
    # the log), but its waiters queue again under its new session and are served in turn.
    client.create_limit("held", 1)
    client.create_limit("busy", 1)
    with other.concurrency("busy"), client.concurrency("held"):
        waiter = spawn(lambda: hold_once(client, "busy"))
        until(lambda: queued(client, "busy", 1), "the waiter is queued")
        session_id = client._session_id()
        ((token, pid),) = sql(
            pggcl_dsn, "SELECT token, backend_pid FROM pggcl.sessions WHERE id = %s", session_id
        )
        generation = client._wait_listening(0)
        with caplog.at_level(logging.WARNING, logger="pggcl"):
            # Closed from outside while its connection is away: it cannot be resumed.
            sql(pggcl_dsn, "SELECT pggcl.close_session(%s, %s)", session_id, token)
            sql(pggcl_dsn, "SELECT pg_terminate_backend(%s)", pid)
            client._wait_listening(generation)
            until(
                lambda: queued_in_its_session(client, "busy"),
                "the waiter is queued again under the new session",
            )
        assert client._session_id() != session_id
        assert not waiter.done()
    assert waiter.result() is not None
    assert "1 lease(s)" in caplog.text and "queueing again" in caplog.text
    assert client.stats.sessions_opened == 2
    assert client.holders() == []
    assert client.queue() == []


def test_close_ends_a_waiter_with_client_closed_error(client: Client, other: Client) -> None:
    client.create_limit("db", 1)
    with other.concurrency("db"):
        waiter = spawn(lambda: hold_once(client, "db"))
        until(lambda: queued(client, "db", 1), "the waiter is queued")
        client.close()
        assert other.queue() == []
        with pytest.raises(pggcl.ClientClosedError):
            waiter.result(timeout=2)


def test_close_releases_what_the_session_held(pggcl_dsn: str) -> None:
    c = Client(pggcl_dsn)
    c.create_limit("db", 1)
    held = c.concurrency("db")
    held.__enter__()
    assert len(c.holders()) == 1
    c.close()
    assert sql(pggcl_dsn, "SELECT count(*) FROM pggcl.leases") == [(0,)]


def test_an_unreachable_database_says_so() -> None:
    with Client("postgresql://nobody@127.0.0.1:1/x", connect_timeout=1) as c:
        with pytest.raises(pggcl.DatabaseUnavailableError, match="unreachable"):
            c.list_limits()
        with pytest.raises(pggcl.DatabaseUnavailableError, match="unreachable"):
            hold_once(c, "db")


# --- What a request may ask -----------------------------------------------------------------


def test_missing_strict_and_impossible_requests(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pggcl"):
        assert hold_once(client, "fresh") is not None
    assert "'fresh'" in caplog.text
    fresh = client.read_limit("fresh")
    assert fresh.active is False
    with pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="'nope'"):
        hold_once(client, "nope", strict=True)
    with pytest.raises(pggcl.LimitNotFoundError):
        client.read_limit("nope")
    client.create_limit("db", 2)
    with pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="3 slots on limit 'db'"):
        hold_once(client, "db", occupy=3)
    with pytest.raises(pggcl.ValidationError, match="occupy: 0"):
        hold_once(client, "db", occupy=0)
    with pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="slot_decay_per_second"):
        client.rate_limit("db")
    assert client.holders() == []
    assert client.queue() == []


def test_a_multi_name_request_is_all_or_nothing(client: Client) -> None:
    client.create_limit("a", 1)
    client.create_limit("b", 1)

    def both() -> set[str]:
        with client.concurrency(["a", "b"]):
            return {h.name for h in client.holders()}

    with client.concurrency("b"):
        waiter = spawn(both)
        until(lambda: queued(client, "b", 1), "the request is queued on b")
        assert queued(client, "a", 1)
        a = client.read_limit("a")
        assert a.active_slots == 0  # nothing taken on a meanwhile
    assert waiter.result() == {"a", "b"}
    assert client.holders() == []


def test_an_error_in_the_body_propagates_and_releases(client: Client) -> None:
    client.create_limit("db", 1)

    def fail_inside() -> None:
        with client.concurrency("db"):
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail_inside()
    assert client.holders() == []


def test_release_by_id(client: Client) -> None:
    client.create_limit("db", 1)
    with client.concurrency("db") as grant:
        assert grant.lease_id is not None
        assert client.release(grant.lease_id) is True
        assert client.release(uuid.uuid4()) is False
        assert client.holders() == []


# --- Cost and the fast path ----------------------------------------------------------------


def test_empty_names_do_nothing(client: Client) -> None:
    with client.concurrency([]) as grant:
        client.rate_limit([])
    assert grant.lease_id is None
    assert (client.stats.calls, client.stats.connects) == (0, 0)


def test_the_uncontended_path_is_one_round_trip_each_way(client: Client) -> None:
    client.create_limit("db", 1)
    client._session_id()
    before = client.stats.calls
    with client.concurrency("db"):
        assert client.stats.calls == before + 1
    assert client.stats.calls == before + 2


def test_a_hand_off_is_a_notification_not_a_poll(client: Client, other: Client) -> None:
    client.create_limit("db", 1)
    with client.concurrency("db"):
        waiter = spawn(lambda: hold_once(other, "db"))
        until(lambda: queued(client, "db", 1), "the waiter is queued")
    assert waiter.result() is not None
    # take (refused), acquire (queued), release: nothing ran in between; the grant came by
    # NOTIFY.
    assert (other.stats.calls, other.stats.notifications) == (3, 1)


# --- What changes to a limit do to its waiters ----------------------------------------------


def test_inactive_limits_never_block(client: Client) -> None:
    client.create_limit("off", 1, active=False)
    with client.concurrency("off"):
        assert hold_once(client, "off", timeout_seconds=0) is not None
        client.rate_limit("off", timeout_seconds=0)


def test_raising_disabling_or_deleting_a_limit_frees_waiters(client: Client) -> None:
    for change in ("raise", "disable", "delete"):
        client.create_limit("db", 1)
        with client.concurrency("db"):
            waiter = spawn(lambda: hold_once(client, "db"))
            until(lambda: queued(client, "db", 1), f"the waiter is queued ({change})")
            if change == "raise":
                client.update_limit("db", limit=2)
            elif change == "disable":
                client.update_limit("db", active=False)
            else:
                client.delete_limit("db")
            waiter.result()
            assert client.queue() == [], change
        client.delete_limit("db")
    assert client.holders() == []


# --- Connections ----------------------------------------------------------------------------


def test_a_pool_connection_killed_while_idle_is_replaced(pggcl_dsn: str) -> None:
    with Client(pggcl_dsn, pool_size=2) as c:
        c.create_limit("db", 1)
        c._session_id()
        assert terminate_pool_connections(pggcl_dsn) == 1
        assert [lim.name for lim in c.list_limits()] == ["db"]
        assert hold_once(c, "db") is not None
        assert c.stats.reconnects == 0


# --- Values: what both drivers send and give back -------------------------------------------
#
# The two drivers encode arguments and decode results differently (psycopg: text adaptation
# and casts on the server; asyncpg: binary encoding by the parameter's type, in the client).
# The cases below are where that showed through: the same call was refused differently, or
# accepted with different results (see BAD_VALUES).
ONE_AND_A_HALF: Any = 1.5  # a caller without a type checker


def bad_value_call(c: Client, case: str) -> Pending:
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
def test_a_bad_value_is_a_validation_error(client: Client, case: str) -> None:
    client.create_limit("db", 1)
    try:
        bad_value_call(client, case)
    except pggcl.ValidationError as exc:
        assert exc.field == BAD_VALUES[case], (exc.field, str(exc))
    except Exception as exc:
        raise AssertionError(f"not a ValidationError: {type(exc).__name__}: {exc}") from None
    else:
        raise AssertionError("accepted")
    assert [(lim.name, lim.limit) for lim in client.list_limits()] == [("db", 1)]
    assert client.holders() == []


def test_timestamps_are_utc_whatever_the_database_time_zone(pggcl_dsn: str) -> None:
    set_database_time_zone(pggcl_dsn, "Asia/Tokyo")
    with Client(pggcl_dsn) as c:
        created = c.create_limit("db", 1)
        with c.concurrency("db"):
            waiter = spawn(lambda: hold_once(c, "db"))
            until(lambda: queued(c, "db", 1), "the waiter is queued")
            (holder,) = c.holders()
            (queued_request,) = c.queue()
        assert waiter.result() is not None
    stamps = [created.created, created.updated, holder.since, queued_request.since]
    assert [t.utcoffset() for t in stamps] == [timedelta(0)] * 4


def _spans(exporter: Any, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def traced_work() -> None:
    with otel_trace.get_tracer("test").start_as_current_span("work"):
        pass


def traced_hold(c: Client) -> None:
    with c.concurrency("db"):
        traced_work()


def timed_out(c: Client) -> None:
    with pytest.raises(pggcl.AcquireConcurrencySlotTimeoutError):
        hold_once(c, "db", timeout_seconds=0)


def test_waits_and_holds_are_opentelemetry_spans(client: Client, other: Client) -> None:
    client.create_limit("db", 1)
    client.create_limit("api", 10, slot_decay_per_second=10)
    with recorded_spans() as exporter:
        with other.concurrency("db"):
            waiter = spawn(lambda: traced_hold(client))
            until(lambda: queued(client, "db", 1), "the waiter is queued")
        waiter.result()
        with other.concurrency("db"):
            timed_out(client)
        client.rate_limit("api")
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


def test_without_a_tracer_provider_nothing_is_traced(client: Client) -> None:
    client.create_limit("db", 1)
    assert tracing._tracer() is None  # OpenTelemetry may be loaded, but no provider is set
    assert hold_once(client, "db") is not None


def test_the_session_connection_knows_the_server_version(pggcl_dsn: str) -> None:
    # What the session worker checks at every connect (pggcl.core.versions): the number the
    # driver has from the connection's start, without a round trip.
    conn = connect(pggcl_dsn, 10.0)
    try:
        ((shown,),) = conn.execute("SELECT current_setting('server_version_num')", ())
        assert conn.server_version_num == int(shown) >= MIN_SERVER_VERSION_NUM
    finally:
        conn.close(10.0)


# --- One connection: pool_size=0 ---------------------------------------------------------------


def connections_named(dsn: str, name: str) -> int:
    rows = sql(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", name)
    (count,) = rows[0]
    assert isinstance(count, int)
    return count


def test_without_a_pool_one_connection_carries_everything(pggcl_dsn: str, other: Client) -> None:
    solo_dsn = pggcl_dsn + ("&" if "?" in pggcl_dsn else "?") + "application_name=pggcl-solo"
    with Client(solo_dsn, pool_size=0) as solo:
        solo.create_limit("db", 1)
        with solo.concurrency("db"):  # the fast path: one call
            assert run_blocking(connections_named, pggcl_dsn, "pggcl-solo") == 1
        with other.concurrency("db"):
            waiter = spawn(lambda: hold_once(solo, "db"))  # queues, is woken, releases
            until(lambda: queued(other, "db", 1), "the waiter is queued")
            assert run_blocking(connections_named, pggcl_dsn, "pggcl-solo") == 1
        assert waiter.result() is not None
        assert [lim.name for lim in solo.list_limits()] == ["db"]
        assert solo.holders() == [] and solo.queue() == []
        assert solo.stats.connects == 1  # the session connection, and nothing else
        assert run_blocking(connections_named, pggcl_dsn, "pggcl-solo") == 1


def test_without_a_pool_a_lost_connection_is_remade_and_the_lease_released(
    pggcl_dsn: str, other: Client
) -> None:
    with Client(pggcl_dsn, pool_size=0) as solo:
        solo.create_limit("db", 1)
        with solo.concurrency("db") as grant:
            generation = solo._wait_listening(0)
            session_id = solo._session_id()
            run_blocking(terminate_session_connection, pggcl_dsn, session_id)
            solo._wait_listening(generation)
            assert [h.lease_id for h in other.holders("db")] == [grant.lease_id]
        assert other.holders("db") == []  # released on the remade connection
        assert (solo.stats.reconnects, solo.stats.sessions_opened) == (1, 1)


@pytest.mark.parametrize(
    "options",
    [{"pool_size": -1}, {"pool_size": 1.5}, {"pool_size": 0, "session_dsn": "postgresql://x"}],
    ids=["negative", "fraction", "with-session-dsn"],
)
def test_a_bad_pool_size_is_a_validation_error(pggcl_dsn: str, options: dict[str, Any]) -> None:
    with pytest.raises(pggcl.ValidationError) as raised:
        Client(pggcl_dsn, **options)
    assert raised.value.field == "pool_size"


# --- The session connection's idle timeout -------------------------------------------------------


@pytest.mark.parametrize("set_by", ["client", "server"])
def test_an_idle_session_connection_is_kept_alive_past_its_idle_timeout(
    pggcl_dsn: str, other: Client, set_by: str
) -> None:
    # The server ends a session connection quiet for 3 s: idle_session_timeout, set by the
    # client on that connection (tests/faults/test_pgbouncer.py shows it ending a dead
    # client's), or in the server's settings (here the connection's startup options). The
    # keepalives keep a live one from being ended while it holds a slot and has nothing else
    # to say.
    if set_by == "client":
        idle = Client(pggcl_dsn, idle_session_timeout_seconds=3)
    else:
        joiner = "&" if "?" in pggcl_dsn else "?"
        idle = Client(pggcl_dsn + joiner + "options=-c%20idle_session_timeout%3D3s")
    with idle:
        idle.create_limit("db", 1)
        with idle.concurrency("db") as grant:
            session_id = idle._session_id()
            until(lambda: idle.stats.keepalives >= 3, "three keepalives were sent")
            assert (idle.stats.connects, idle.stats.reconnects) == (1, 0)
            assert idle._session_id() == session_id
            assert [h.lease_id for h in other.holders("db")] == [grant.lease_id]


@pytest.mark.parametrize("value", [0, 2.9, 86401, float("nan"), float("inf"), "30", True])
def test_a_bad_idle_session_timeout_is_a_validation_error(pggcl_dsn: str, value: Any) -> None:
    with pytest.raises(pggcl.ValidationError) as raised:
        Client(pggcl_dsn, idle_session_timeout_seconds=value)
    assert raised.value.field == "idle_session_timeout_seconds"
    assert "idle_session_timeout_seconds" in str(raised.value)


# --- Templates: per-key limits (issue #15) -------------------------------------------------------


def test_a_template_makes_per_key_limits_on_first_use(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    made = client.create_limit("tenant:*", 2, idle_seconds=600)
    assert (made.name, made.limit) == ("tenant:*", 2)

    def read_while_holding(name: str) -> pggcl.ConcurrencyLimit:
        with client.concurrency(name, strict=True):
            return client.read_limit(name)

    with caplog.at_level(logging.WARNING, logger="pggcl"):
        acme = read_while_holding("tenant:acme")
    assert (acme.limit, acme.active, acme.held_slots) == (2, True, 1)
    assert (acme.template, acme.customized) == ("tenant:*", False)
    assert "created" not in caplog.text  # no "created inactive" warning: it limits
    [template] = client.list_templates()
    assert (template.name, template.limit, template.idle_seconds, template.instances) == (
        "tenant:*",
        2,
        600.0,
        1,
    )
    client.update_limit("tenant:*", limit=4)
    assert client.read_limit("tenant:acme").limit == 4
    with pytest.raises(pggcl.ValidationError) as raised:
        client.update_limit("tenant:*", idle_seconds=-1)
    assert raised.value.field == "idle_seconds"
    with pytest.raises(pggcl.ValidationError, match="is a template") as raised:
        hold_once(client, "tenant:*")  # a template holds no slots itself
    assert raised.value.field == "names"


def test_nested_quotas_hold_per_tenant_and_in_all(client: Client) -> None:
    # concurrency(["openai", f"openai:{tenant}"]): each tenant at most 2, all together at most
    # 3, granted atomically, first come first served, without a deadlock.
    client.create_limit("openai", 3)
    client.create_limit("openai:*", 2)
    intervals: dict[str, list[tuple[float, float]]] = {"a": [], "b": [], "c": []}

    def worker(tenant: str) -> None:
        for _ in range(3):
            with client.concurrency(["openai", f"openai:{tenant}"], timeout_seconds=30):
                start = time.monotonic()
                sleep(0.002)
                intervals[tenant].append((start, time.monotonic()))

    def start(tenant: str) -> Worker[None]:
        return spawn(lambda: worker(tenant))

    workers = [start(t) for t in "aabbbccc"]
    for w in workers:
        w.result(timeout=60)
    per_tenant = [max_overlap(spans) for spans in intervals.values()]
    every_hold = [span for spans in intervals.values() for span in spans]
    assert max(per_tenant) <= 2 and max_overlap(every_hold) <= 3
    assert len(every_hold) == 24
    assert client.holders() == [] and client.queue() == []


def test_bounded_reads_of_many_instances(client: Client) -> None:
    # What /metrics and the UI read (issues #15, #16.2): never every instance.
    client.create_limit("db", 1)
    client.create_limit("tenant:*", 2)
    for i in range(12):
        hold_once(client, f"tenant:{i:02}")
    with client.concurrency("tenant:07", 2):
        busiest = client.busiest_limits(3)
        assert [lim.name for lim in busiest] == ["db", "tenant:00", "tenant:01", "tenant:07"]
        also = client.busiest_limits(1, also=["tenant:11", "missing"])
        assert [lim.name for lim in also] == ["db", "tenant:07", "tenant:11"]
        [totals] = client.template_totals()
    assert isinstance(totals, pggcl.TemplateTotals)
    assert (totals.name, totals.limit, totals.instances, totals.held_slots) == (
        "tenant:*",
        2,
        12,
        2,
    )
    assert (totals.grants, totals.hold_seconds_count, totals.retired_instances) == (13, 12, 0)
    assert totals.wait_seconds_buckets[-1] == totals.wait_seconds_count == 13
    first = client.list_instances("tenant:*", max_rows=5)
    assert [lim.name for lim in first] == [f"tenant:{i:02}" for i in range(5)]
    rest = client.list_instances("tenant:*", after=first[-1].name, max_rows=100)
    assert [lim.name for lim in rest] == [f"tenant:{i:02}" for i in range(5, 12)]
    assert client.list_instances("db") == []  # a plain limit has no instances
    with pytest.raises(pggcl.ValidationError) as raised:
        client.busiest_limits(-1)
    assert raised.value.field == "per_template"
    with pytest.raises(pggcl.ValidationError) as raised:
        client.list_instances("tenant:*", max_rows=2**31)
    assert raised.value.field == "max_rows"


# --- Priorities (issue #15) ----------------------------------------------------------------------


def test_a_head_start_is_served_first_and_shown_in_the_queue(client: Client, other: Client) -> None:
    client.create_limit("db", 1)
    order: list[str] = []

    def wait_then_note(tag: str, priority: float) -> None:
        with other.concurrency("db", priority=priority, timeout_seconds=30):
            order.append(tag)

    with client.concurrency("db"):
        plain = spawn(lambda: wait_then_note("plain", 0.0))
        until(lambda: queued(client, "db", 1), "the plain request is queued")
        urgent = spawn(lambda: wait_then_note("urgent", 30.0))
        until(lambda: queued(client, "db", 2), "the urgent request is queued")
        waiting = client.queue("db")
        assert [(w.position, w.priority) for w in waiting] == [(1, 30.0), (2, 0.0)]
    urgent.result(timeout=30)
    plain.result(timeout=30)
    assert order == ["urgent", "plain"]


def hold_once_with(c: Client, name: str, **options: Any) -> None:
    with c.concurrency(name, **options):
        pass


@pytest.mark.parametrize("priority", [86401, -86401, float("nan"), float("inf"), "1", True])
def test_a_bad_priority_is_a_validation_error(client: Client, priority: Any) -> None:
    client.create_limit("db", 1)
    with pytest.raises(pggcl.ValidationError) as raised:
        hold_once_with(client, "db", priority=priority)
    assert raised.value.field == "priority"
    with pytest.raises(pggcl.ValidationError):
        client.rate_limit("db", priority=priority)
    assert client.holders() == [] and client.queue() == []
