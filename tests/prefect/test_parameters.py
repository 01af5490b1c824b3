"""Prefect 3's parameters of ``concurrency()`` and ``rate_limit()``, each doing what
docs/migrating-from-prefect.md says (issue #14, point 1). No Prefect needed here."""

from __future__ import annotations

import asyncio
import inspect
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import pggcl
import pggcl.asyncio
import pggcl.sync
from pggcl.core.acquiring import acquire_flow
from pggcl.core.notifications import GRANTED, LOST, Event
from pggcl.core.ops import Call, OpenSession, Wait
from pggcl.core.requests import Contention, make_request

# Prefect 3.9.1's signatures (prefect.concurrency.sync / .asyncio), names, order, defaults.
PREFECT_CONCURRENCY = [
    ("names", inspect.Parameter.empty),
    ("occupy", 1),
    ("timeout_seconds", None),
    ("max_retries", None),
    ("lease_duration", 300),
    ("strict", False),
    ("holder", None),
    ("raise_on_lease_renewal_failure", None),
]
PREFECT_RATE_LIMIT = [
    ("names", inspect.Parameter.empty),
    ("occupy", 1),
    ("timeout_seconds", None),
    ("strict", False),
]


def _shape(fn: Any) -> list[tuple[str, Any]]:
    """Prefect's parameters, by name, position and default. pggcl's own (``priority``) are
    keyword-only, after them, so that no positional call means anything else."""
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
    own = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert [p.name for p in own] in ([], ["priority"]), own
    params = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
    return [(p.name, p.default) for p in params]


@pytest.mark.parametrize(
    "fn",
    [
        pggcl.sync.concurrency,
        pggcl.asyncio.concurrency,
        pggcl.concurrency,
        pggcl.Client.concurrency,
        pggcl.AsyncClient.concurrency,
    ],
)
def test_concurrency_takes_prefects_parameters(fn: Any) -> None:
    assert _shape(fn) == PREFECT_CONCURRENCY


@pytest.mark.parametrize(
    "fn",
    [
        pggcl.sync.rate_limit,
        pggcl.asyncio.rate_limit,
        pggcl.rate_limit,
        pggcl.Client.rate_limit,
        pggcl.AsyncClient.rate_limit,
    ],
)
def test_rate_limit_takes_prefects_parameters(fn: Any) -> None:
    assert _shape(fn) == PREFECT_RATE_LIMIT


def test_the_signatures_are_those_of_the_installed_prefect() -> None:
    sync = pytest.importorskip("prefect.concurrency.sync")
    aio = pytest.importorskip("prefect.concurrency.asyncio")
    assert _shape(pggcl.sync.concurrency) == _shape(sync.concurrency)
    assert _shape(pggcl.asyncio.concurrency) == _shape(aio.concurrency)
    assert _shape(pggcl.sync.rate_limit) == _shape(sync.rate_limit)
    assert _shape(pggcl.asyncio.rate_limit) == _shape(aio.rate_limit)


def test_top_level_concurrency_is_the_sync_one_and_import_is_free_of_prefect() -> None:
    assert pggcl.concurrency is pggcl.sync.concurrency
    assert pggcl.rate_limit is pggcl.sync.rate_limit
    code = "import sys, pggcl; from pggcl import concurrency; print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- The parameters at work ------------------------------------------------------------------


@pytest.fixture
def client(pggcl_dsn: str) -> Iterator[pggcl.Client]:
    with pggcl.Client(pggcl_dsn) as c:
        yield c


@pytest.fixture
def other(pggcl_dsn: str) -> Iterator[pggcl.Client]:
    with pggcl.Client(pggcl_dsn) as c:
        yield c


@pytest.fixture
async def aclient(pggcl_dsn: str) -> AsyncIterator[pggcl.AsyncClient]:
    async with pggcl.AsyncClient(pggcl_dsn) as c:
        yield c


def _expires(client: pggcl.Client, name: str) -> Any:
    [held] = client.holders(name)
    return held.expires


def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def test_a_short_block_costs_one_call_each_way(client: pggcl.Client) -> None:
    """The default lease_duration (300 s) adds no round trip to acquire and release."""
    client.create_limit("db", 5)
    before = client.stats.calls
    with client.concurrency("db"):
        assert client.stats.calls == before + 1
    assert client.stats.calls == before + 2


def test_lease_duration_gives_the_lease_an_expiry_renewed_while_held(
    client: pggcl.Client, other: pggcl.Client
) -> None:
    client.create_limit("db", 1)
    with client.concurrency("db", lease_duration=0.9) as grant:
        assert _expires(other, "db") is None  # the grant itself takes no TTL
        _until(lambda: _expires(other, "db") is not None, "the first renewal set an expiry")
        first = _expires(other, "db")
        time.sleep(1.5)  # past the TTL: renewed meanwhile, so still held
        [held] = other.holders("db")
        assert held.lease_id == grant.lease_id and held.expires > first
    assert other.holders() == []


def test_no_lease_duration_no_expiry(client: pggcl.Client, other: pggcl.Client) -> None:
    client.create_limit("db", 1)
    with client.concurrency("db", lease_duration=None):
        time.sleep(1.2)
        assert _expires(other, "db") is None


def test_renewals_are_batched(client: pggcl.Client) -> None:
    """Five leases held by one client for ~three renewal intervals: one call per interval
    renews them all."""
    for i in range(5):
        client.create_limit(f"l{i}", 1)
    before = client.stats.calls
    blocks = [client.concurrency(f"l{i}", lease_duration=0.6) for i in range(5)]
    for block in blocks:
        block.__enter__()
    time.sleep(0.7)
    for block in reversed(blocks):
        block.__exit__(None, None, None)
    renewals = client.stats.calls - before - 5 - 5  # less the takes and the releases
    # Renewed one lease a call, the five would cost 5 calls an interval, 15 or more in all; a
    # loaded machine may add a wake-up or two, never a call per lease.
    assert 1 <= renewals < 15, renewals


@pytest.mark.parametrize(
    "kwargs", [{"raise_on_lease_renewal_failure": True}, {"strict": True}], ids=str
)
def test_a_lost_lease_raises_at_exit_when_asked(
    client: pggcl.Client, other: pggcl.Client, kwargs: dict[str, Any]
) -> None:
    client.create_limit("db", 1)
    with (
        pytest.raises(pggcl.SessionLostError, match="was lost while held"),
        client.concurrency("db", lease_duration=0.6, **kwargs) as grant,
    ):
        assert grant.lease_id is not None
        assert other.release(grant.lease_id)  # lost: released by hand
        time.sleep(0.5)  # the next renewal finds it gone
    assert other.holders() == []


def test_a_lost_lease_is_logged_by_default(
    client: pggcl.Client, other: pggcl.Client, caplog: pytest.LogCaptureFixture
) -> None:
    client.create_limit("db", 1)
    with (
        caplog.at_level(logging.WARNING, "pggcl"),
        client.concurrency("db", lease_duration=0.6) as grant,
    ):
        assert grant.lease_id is not None
        assert other.release(grant.lease_id)
        _until(lambda: "the limit may be exceeded" in caplog.text, "the loss is logged")
    # no exception: the body went on


async def test_an_async_holder_is_interrupted_at_once(
    aclient: pggcl.AsyncClient, pggcl_dsn: str
) -> None:
    await aclient.create_limit("db", 1)
    started = time.monotonic()
    with pytest.raises(pggcl.SessionLostError):
        async with aclient.concurrency(
            "db", lease_duration=0.6, raise_on_lease_renewal_failure=True
        ) as grant:
            assert grant.lease_id is not None
            async with pggcl.AsyncClient(pggcl_dsn) as other:
                assert await other.release(grant.lease_id)
            await asyncio.sleep(30)  # cut short by the loss
    assert time.monotonic() - started < 5
    assert await aclient.holders() == []
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_an_outside_cancellation_stays_a_cancellation(aclient: pggcl.AsyncClient) -> None:
    await aclient.create_limit("db", 1)

    async def hold() -> None:
        async with aclient.concurrency("db", raise_on_lease_renewal_failure=True):
            await asyncio.sleep(30)

    task = asyncio.create_task(hold())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await aclient.holders() == []


def test_max_retries_zero_does_not_queue(client: pggcl.Client, other: pggcl.Client) -> None:
    client.create_limit("db", 1)
    with client.concurrency("db", max_retries=0):  # free: granted
        started = time.monotonic()
        with (
            pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="max_retries=0"),
            other.concurrency("db", max_retries=0, timeout_seconds=30),
        ):
            pass
        assert time.monotonic() - started < 5
        assert other.queue() == []


def test_max_retries_bounds_starting_over() -> None:
    """An acquire that has to start over (its session reclaimed, an answer lost) gives up
    after max_retries start-overs, ending the flow between two attempts."""

    def drive(max_retries: int | None) -> str:
        # Every attempt queues; its session is reclaimed three times, then it is granted.
        contention = Contention()
        contention.queued("db")
        req = make_request("db", 1, "concurrency", None, False, "h")
        flow = acquire_flow(req, time.monotonic, time.monotonic(), contention, max_retries)
        losses = 3
        value: Any = None
        try:
            while True:
                op = flow.send(value)
                if isinstance(op, OpenSession):
                    value = 1
                elif isinstance(op, Wait):
                    losses -= 1
                    value = Event(LOST, "reclaimed") if losses >= 0 else Event(GRANTED)
                else:
                    assert isinstance(op, Call)
                    value = [(False, op.args[8], 7, None, None)]
        except StopIteration as stop:
            return "granted" if stop.value.lease_id is not None else "?"

    assert drive(3) == "granted"
    assert drive(None) == "granted"
    with pytest.raises(pggcl.ConcurrencySlotAcquisitionError, match="max_retries=2"):
        drive(2)


@pytest.mark.parametrize(
    "bad", [{"max_retries": -1}, {"lease_duration": 0}, {"lease_duration": float("nan")}]
)
def test_bad_values_are_refused(client: pggcl.Client, bad: dict[str, Any]) -> None:
    with pytest.raises(pggcl.ValidationError) as caught, client.concurrency("db", **bad):
        pass
    assert caught.value.field == next(iter(bad))


def test_prefects_holder_is_shown_as_type_id(client: pggcl.Client) -> None:
    client.create_limit("db", 2)
    run_id = uuid.uuid4()
    with (
        client.concurrency("db", holder={"type": "task_run", "id": run_id}),
        client.concurrency("db", holder="backup"),
    ):
        holders = sorted(h.holder or "" for h in client.holders("db"))
    assert holders == ["backup", f"task_run:{run_id}"]
    with pytest.raises(pggcl.ValidationError), client.concurrency("db", holder={"id": run_id}):
        pass


def test_prefects_holder_model_is_shown_as_type_id(client: pggcl.Client) -> None:
    objects = pytest.importorskip("prefect.client.schemas.objects")
    run_id = uuid.uuid4()
    holder = objects.ConcurrencyLeaseHolder(type="flow_run", id=run_id)
    with client.concurrency("db", holder=holder):
        [held] = client.holders("db")
    assert held.holder == f"flow_run:{run_id}"


def test_a_new_lease_wakes_a_renewer_that_sleeps_longer(
    client: pggcl.Client, other: pggcl.Client
) -> None:
    client.create_limit("long", 1)
    client.create_limit("short", 1)
    with client.concurrency("long", lease_duration=30):
        _until(lambda: _expires(other, "long") is not None, "the long lease has an expiry")
        # The renewer now sleeps until the long lease's next renewal, 10 s away.
        with client.concurrency("short", lease_duration=0.6):
            _until(lambda: _expires(other, "short") is not None, "woken", timeout=2.0)
