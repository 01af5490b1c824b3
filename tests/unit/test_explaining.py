"""Why a request waits: the timeout's one line, and when the flow asks for it (no database)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from pggcl.core import queries as q
from pggcl.core.acquiring import acquire_flow
from pggcl.core.explaining import explanation, why_waiting
from pggcl.core.ops import OpenSession, Wait
from pggcl.core.requests import Contention, make_request
from pggcl.errors import AcquireConcurrencySlotTimeoutError, SchemaNotInstalledError
from pggcl.models import Explanation, Holding
from tests.unit.test_acquiring import Clock, Script, _sql

SINCE = datetime(2026, 12, 2, 12, 1, 7, 400000, tzinfo=UTC)


def _row(name: str = "database", **changes: Any) -> tuple[Any, ...]:
    """A row of queries.EXPLAIN, as a driver returns it."""
    fields: dict[str, Any] = {
        "waiter_id": 12, "name": name, "blocking": True, "position": 5, "occupy": 1,
        "mode": "concurrency", "limit": 5, "active": True, "held_slots": 5,
        "active_slots": 5.0, "leases": 3,
        "holders": json.dumps([{"holder": "web1:4242", "slots": 3,
                                "since": "2026-12-02T13:01:07.4+01:00", "expires": None}]),
        "seconds_until_room": None, "since": SINCE,
    }  # fmt: skip
    fields.update(changes)
    return tuple(fields.values())


def test_a_row_becomes_a_model_in_utc() -> None:
    e = explanation(_row())
    assert e == Explanation(
        12, "database", True, 5, 1, "concurrency", 5, True, 5, 5.0, 3,
        (Holding("web1:4242", 3, SINCE, None),), None, SINCE,
    )  # fmt: skip
    assert e.holders[0].since.tzinfo == UTC
    local = SINCE.astimezone(timezone(timedelta(hours=-5)))
    assert explanation(_row(since=local)).since.tzinfo == UTC


def test_the_line_names_what_blocks() -> None:
    one = [explanation(_row())]
    assert why_waiting(one, ["database"]) == (
        "5 of 5 slots held by 3 leases (oldest: web1:4242 since 2026-12-02T12:01:07Z),"
        " 4 requests ahead"
    )
    rate = explanation(
        _row("api", mode="rate_limit", held_slots=0, active_slots=1.996, leases=0,
             holders="[]", seconds_until_room=3.46, position=1)
    )  # fmt: skip
    free = explanation(_row("free", blocking=False, position=1))
    assert why_waiting([rate, free], ["api", "free"]) == (
        "'api' 2 of 5 slots in use, room in 3.5 s, nobody ahead"
    )
    # None blocks (room came, not yet served): all are shown. Not queued: nothing to say.
    assert why_waiting([free], ["free"]) == (
        "5 of 5 slots held by 3 leases (oldest: web1:4242 since 2026-12-02T12:01:07Z), nobody ahead"
    )
    assert why_waiting([], ["database"]) is None


def test_a_holders_text_is_shown_printable_and_short() -> None:
    holders = json.dumps([{"holder": "evil\x1b[2J" + "x" * 500, "slots": 1,
                           "since": SINCE.isoformat(), "expires": None}])  # fmt: skip
    line = why_waiting([explanation(_row(holders=holders, leases=1))], ["database"])
    assert line is not None and "\x1b" not in line and "\n" not in line
    assert "held by 1 lease (oldest: evil" in line and len(line) < 200


def _timing_out(answer_explain: Callable[[], Any]) -> tuple[Script, Callable[[Any], Any]]:
    clock = Clock()
    contention = Contention()
    contention.queued("db")  # straight to acquire
    req = make_request("db", 1, "concurrency", 10, False, "me")
    script = Script(acquire_flow(req, clock, clock.now, contention), clock)

    def answer(op: Any) -> Any:
        if isinstance(op, OpenSession):
            return 7
        if isinstance(op, Wait):
            clock.now += 10  # nothing came: the deadline passed
            return None
        if op.sql == q.ACQUIRE:
            return [(False, op.args[8], 12, None, None)]
        if op.sql == q.EXPLAIN:
            assert op.args == (12, 1)  # this waiter, the oldest holder only
            return answer_explain()
        if op.sql == q.CANCEL:
            return [("cancelled",)]
        raise AssertionError(op)

    return script, answer


def test_a_timeout_asks_why_once_then_withdraws() -> None:
    script, answer = _timing_out(lambda: [_row("db")])
    with pytest.raises(AcquireConcurrencySlotTimeoutError) as timed_out:
        script.run(answer)
    assert [_sql(op) for op in script.ops] == [
        "OpenSession", q.ACQUIRE, "Wait", q.EXPLAIN, q.CANCEL,
    ]  # fmt: skip
    assert str(timed_out.value).startswith(
        "timed out after 10 s waiting for 1 slot on 'db': 5 of 5 slots held by 3 leases"
    )
    assert str(timed_out.value).endswith(f": {timed_out.value.waiting}")
    assert timed_out.value.waiting is not None and "4 requests ahead" in timed_out.value.waiting


def test_a_timeout_whose_why_fails_says_what_it_said_before() -> None:
    def fails() -> Any:
        raise SchemaNotInstalledError("function pggcl.explain(bigint, integer) does not exist")

    script, answer = _timing_out(fails)
    with pytest.raises(AcquireConcurrencySlotTimeoutError) as timed_out:
        script.run(answer)
    assert str(timed_out.value) == "could not acquire 1 slot on 'db' within timeout_seconds=10"
    assert timed_out.value.waiting is None
    assert _sql(script.ops[-1]) == q.CANCEL  # withdrawn all the same


def test_an_interrupt_while_asking_why_withdraws_and_is_raised() -> None:
    def interrupted() -> Any:
        raise KeyboardInterrupt

    script, answer = _timing_out(interrupted)
    with pytest.raises(KeyboardInterrupt):
        script.run(answer)
    assert _sql(script.ops[-1]) == q.CANCEL
    assert script.ops[-1].args[0] == 12


def test_no_wait_no_question() -> None:
    clock = Clock()
    contention = Contention()
    contention.queued("db")
    req = make_request("db", 1, "concurrency", 0, False, "me")  # timeout 0: not waiting
    script = Script(acquire_flow(req, clock, clock.now, contention), clock)

    def answer(op: Any) -> Any:
        if isinstance(op, OpenSession):
            return 7
        if op.sql == q.ACQUIRE:
            return [(False, None, None, None, None)]
        raise AssertionError(op)

    with pytest.raises(AcquireConcurrencySlotTimeoutError, match="within timeout_seconds=0"):
        script.run(answer)
    assert [_sql(op) for op in script.ops] == ["OpenSession", q.ACQUIRE]
    assert uuid.UUID(str(script.ops[1].args[8]))
