"""The acquire and release flows alone: each op they yield, answered by the test (no database).

A flow is a generator of ops; the test plays the database and the clock, so every branch of the
outage policy (retry, settle, start over, defer) is checked exactly, without a server.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from pggcl.core import queries as q
from pggcl.core.acquiring import acquire_flow, release_flow
from pggcl.core.notifications import LOST, Event
from pggcl.core.ops import Call, Defer, Flow, OpenSession, Sleep, Wait
from pggcl.core.requests import Contention, make_request
from pggcl.core.retrying import FirstContactError, Unreachable, retrying
from pggcl.errors import AcquireConcurrencySlotTimeoutError, DatabaseUnavailableError
from pggcl.models import Grant

DOWN = DatabaseUnavailableError("the database is unreachable: connection refused")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Script:
    """Drives a flow: ``answer(op)`` returns a value for the op or raises into the flow."""

    def __init__(self, flow: Flow[Any], clock: Clock) -> None:
        self.flow, self.clock, self.ops = flow, clock, list[Any]()
        self._next: tuple[str, Any] = ("send", None)

    def run(self, answer: Callable[[Any], Any]) -> Any:
        while True:
            how, value = self._next
            try:
                op = self.flow.send(value) if how == "send" else self.flow.throw(value)
            except StopIteration as stop:
                return stop.value
            self.ops.append(op)
            if isinstance(op, Sleep):
                self.clock.now += op.seconds
            try:
                self._next = ("send", answer(op))
            except BaseException as exc:
                self._next = ("throw", exc)


def _sql(op: Any) -> str:
    return op.sql if isinstance(op, Call) else type(op).__name__


def test_retrying_retries_at_once_then_with_pauses_until_the_deadline() -> None:
    clock = Clock()
    script = Script(retrying(Call("SELECT 1", ()), clock.now + 5, clock), clock)

    def answer(op: Any) -> Any:
        if isinstance(op, Call):
            raise DOWN
        return None

    with pytest.raises(Unreachable, match="unreachable for"):
        script.run(answer)
    calls = [op for op in script.ops if isinstance(op, Call)]
    assert len(calls) >= 3
    assert not isinstance(script.ops[1], Sleep)  # the first retry is immediate
    assert clock.now >= 105


def test_a_client_that_never_reached_its_database_is_told_at_once() -> None:
    clock = Clock()
    script = Script(retrying(Call("SELECT 1", ()), None, clock), clock)

    def answer(op: Any) -> Any:
        raise FirstContactError("the database is unreachable: no such host")

    with pytest.raises(FirstContactError):
        script.run(answer)
    assert len(script.ops) == 1


def _request(timeout: float | None) -> Any:
    return make_request("db", 1, "concurrency", timeout, False, "me")


def test_an_acquire_whose_answer_was_lost_is_settled_and_tried_again() -> None:
    clock = Clock()
    flow = acquire_flow(_request(None), clock, clock.now, Contention())
    script = Script(flow, clock)
    takes: list[uuid.UUID] = []

    def answer(op: Any) -> Any:
        if isinstance(op, OpenSession):
            return 7
        if op.sql == q.TAKE:
            takes.append(op.args[4])
            if len(takes) == 1:
                raise DOWN  # sent, but the answer never came: it may have run
            return [(True,)]
        if op.sql == q.CANCEL:
            return [("granted",)]  # the lost take had run: it holds a lease
        if op.sql == q.RELEASE:
            return [(True,)]
        raise AssertionError(op)

    grant = script.run(answer)
    first, second = takes
    assert first != second
    assert grant == Grant(("db",), 1, second)
    assert [_sql(op) for op in script.ops] == [
        "OpenSession", q.TAKE, q.CANCEL, q.RELEASE, "OpenSession", q.TAKE,
    ]  # fmt: skip
    assert script.ops[2].args == (None, first) and script.ops[3].args == (first,)


def test_a_waiter_whose_session_was_reclaimed_queues_again() -> None:
    clock = Clock()
    contention = Contention()
    contention.queued("db")  # straight to acquire
    script = Script(acquire_flow(_request(60), clock, clock.now, contention), clock)
    sessions = iter([7, 8])
    acquired: list[int] = []

    def answer(op: Any) -> Any:
        if isinstance(op, OpenSession):
            return next(sessions)
        if isinstance(op, Wait):
            return Event(LOST, "reclaimed") if len(acquired) == 1 else Event("g")
        if op.sql == q.ACQUIRE:
            acquired.append(op.args[6])
            return [(False, op.args[8], 40 + len(acquired), None, None)]
        raise AssertionError(op)

    grant = script.run(answer)
    assert acquired == [7, 8]  # the second attempt runs under the new session
    assert grant.lease_id is not None


def test_an_acquire_raises_only_at_its_own_deadline_and_says_why() -> None:
    clock = Clock()
    script = Script(acquire_flow(_request(10), clock, clock.now, Contention()), clock)

    def answer(op: Any) -> Any:
        if isinstance(op, Sleep):
            return None
        raise DOWN

    with pytest.raises(AcquireConcurrencySlotTimeoutError, match="unreachable for"):
        script.run(answer)
    assert clock.now >= 110


def test_a_release_past_its_bound_is_deferred_and_quiet_at_block_exit() -> None:
    clock = Clock()
    lease = uuid.uuid4()
    script = Script(release_flow(lease, clock.now + 3, clock, quiet=True), clock)

    def answer(op: Any) -> Any:
        if isinstance(op, Call):
            raise DOWN
        return None

    assert script.run(answer) is True
    assert script.ops[-1] == Defer((Call(q.RELEASE, (lease,)),))


def test_an_explicit_release_past_its_bound_raises() -> None:
    clock = Clock()
    script = Script(release_flow(uuid.uuid4(), clock.now + 1, clock, quiet=False), clock)

    def answer(op: Any) -> Any:
        if isinstance(op, Call):
            raise DOWN
        return None

    with pytest.raises(DatabaseUnavailableError):
        script.run(answer)
    assert isinstance(script.ops[-1], Defer)
