"""What the clients do, decided once, for both drivers. Pure: no driver, no I/O.

Every operation is a generator (a *flow*) that yields ops (:mod:`pggcl.core.ops`) and receives
their results. A runner (``pggcl.client.runner_*``) carries the ops out and throws errors into
the flow at the yield that failed. A flow interrupted at a call or a wait (task cancelled,
KeyboardInterrupt, lost connection) finds out what that call did - by the request id it chose,
or by repeating an idempotent release - and yields the calls that give back whatever it holds
or queued, then re-raises.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, Final

from pggcl.core import queries as q
from pggcl.core.notifications import GRANTED, LOST, REJECTED, Event
from pggcl.core.ops import Call, Flow, Op, Row, Wait
from pggcl.core.requests import Contention, Request
from pggcl.errors import (
    AcquireConcurrencySlotTimeoutError,
    ConcurrencySlotAcquisitionError,
    LimitNotFoundError,
    SessionLostError,
)
from pggcl.models import ConcurrencyLimit, Grant, Holder, Waiter

log = logging.getLogger("pggcl")


def _describe(req: Request) -> str:
    what = "slot" if req.occupy == 1 else "slots"
    return f"{req.occupy} {what} on {', '.join(repr(n) for n in req.names)}"


def _timeout(req: Request) -> AcquireConcurrencySlotTimeoutError:
    return AcquireConcurrencySlotTimeoutError(
        f"could not acquire {_describe(req)} within timeout_seconds={req.timeout}"
    )


# --- Acquire ------------------------------------------------------------------------------


def acquire_flow(
    req: Request,
    session_id: int,
    clock: Callable[[], float],
    started: float,
    contention: Contention,
) -> Flow[Grant]:
    """Take the slots, waiting in the engine's queue until granted (see module docstring).

    ``started`` is ``clock()`` at the user's call: ``timeout`` counts from there.
    """
    if not req.names:
        return Grant(req.names, req.occupy, None)
    deadline = None if req.timeout is None else started + req.timeout
    wait = req.timeout is None or req.timeout > 0
    # Our own request id: if the answer is lost (interrupted mid-call, connection dropped), the
    # request can still be found, cancelled and its slots released by this id.
    request_id = uuid.uuid4()
    # The usual case first, through the engine's small-call fast path (pggcl.take); when it
    # does not apply, pggcl.acquire handles every case.
    one_name = req.names[0] if len(req.names) == 1 else None
    taken = False
    if req.mode == "concurrency" and one_name is not None and contention.worth_taking(one_name):
        take = (one_name, req.occupy, session_id, req.holder, request_id)
        rows = yield from _guarded(Call(q.TAKE, take), req, None, request_id)
        taken = bool(rows[0][0])
    lease_id: uuid.UUID | None = request_id
    if not taken:
        args = (
            list(req.names), req.occupy, req.mode, req.strict, None, req.holder, session_id,
            wait, request_id,
        )  # fmt: skip
        rows = yield from _guarded(Call(q.ACQUIRE, args), req, None, request_id)
        granted, lease_id, waiter_id, retry_after, created = rows[0]
        lease_id = _uuid(lease_id)
        if created:
            log.warning(
                "created missing limit(s) %s inactive: they do not limit anything until activated",
                ", ".join(repr(n) for n in created),
            )
        if one_name is not None:
            if granted:
                contention.granted_at_once(one_name)
            else:
                contention.queued(one_name)
        if not granted:
            if waiter_id is None:
                raise _timeout(req)
            done = yield from _wait_for_grant(
                req, waiter_id, lease_id, retry_after, deadline, clock
            )
            if not done:
                raise _timeout(req)
    return Grant(req.names, req.occupy, lease_id)


# A finite wait longer than this wakes up to look again: threads cannot sleep past
# threading.TIMEOUT_MAX (about 292 years), and a timeout may be any finite number.
_LONGEST_WAIT: Final = 86_400.0


def _wait_for_grant(
    req: Request,
    waiter_id: int,
    lease_id: uuid.UUID | None,
    retry_after: float | None,
    deadline: float | None,
    clock: Callable[[], float],
) -> Flow[bool]:
    """Sleep until granted: True when the slots are ours, False when the deadline passed
    (and nothing is left queued or held)."""
    while True:
        now = clock()
        if deadline is not None and now >= deadline:
            return (yield from _give_up(req, waiter_id, lease_id))
        timeout = None if deadline is None else deadline - now
        if retry_after is not None:
            # A floor, so that a zero retry_after can never spin.
            timeout = (
                max(retry_after, 0.001)
                if timeout is None
                else min(timeout, max(retry_after, 0.001))
            )
        if timeout is not None:
            timeout = min(timeout, _LONGEST_WAIT)
        event: Event | None = yield from _guarded(
            Wait(waiter_id, timeout), req, waiter_id, lease_id
        )
        if event is None:
            if deadline is not None and clock() >= deadline:
                return (yield from _give_up(req, waiter_id, lease_id))
        elif event.kind == GRANTED:
            return True
        elif event.kind == REJECTED:
            raise ConcurrencySlotAcquisitionError(
                f"cannot acquire {_describe(req)}: {event.detail or 'it can never be granted'}"
            )
        elif event.kind == LOST:
            raise SessionLostError(f"gave up waiting for {_describe(req)}: {event.detail}")
        # Re-check: after an 'r' notification, a reconnect, or when retry_after has passed.
        rows = yield from _guarded(Call(q.RECHECK, (waiter_id, lease_id)), req, waiter_id, lease_id)
        status, retry_after = rows[0]
        if status == "granted":
            return True
        if status == "rejected":
            raise ConcurrencySlotAcquisitionError(
                f"cannot acquire {_describe(req)}: a limit was lowered below the request"
            )
        if status == "gone":
            if req.mode == "rate_limit":
                return True  # a rate-limit grant leaves no trace: it was delivered
            raise SessionLostError(
                f"the request for {_describe(req)} vanished: the session was reclaimed"
            )


def _guarded(op: Op, req: Request, waiter_id: int | None, lease_id: uuid.UUID | None) -> Flow[Any]:
    """Yield ``op``; if interrupted there, leave nothing queued or held, then re-raise.
    ``waiter_id`` None: the request is found by ``lease_id``, the id given to take/acquire."""
    try:
        return (yield op)
    except GeneratorExit:
        raise
    except BaseException:
        yield from _abandon(req, waiter_id, lease_id)
        raise


def _abandon(req: Request, waiter_id: int | None, lease_id: uuid.UUID | None) -> Flow[str]:
    """Leave nothing queued or held. ``waiter_id`` None: find the waiter by ``lease_id``, the
    request id given to acquire (whose answer was lost)."""
    rows = yield Call(q.CANCEL, (waiter_id, lease_id))
    status: str = rows[0][0]
    if status == "granted" and lease_id is not None:
        yield Call(q.RELEASE, (lease_id,))
    return status


def _give_up(req: Request, waiter_id: int, lease_id: uuid.UUID | None) -> Flow[bool]:
    try:
        status = yield from _abandon(req, waiter_id, lease_id)
    except GeneratorExit:
        raise
    except BaseException:
        yield from _abandon(req, waiter_id, lease_id)  # the interrupted attempt may not have run
        raise
    # A rate-limit grant that raced the timeout was consumed: it counts as acquired.
    return bool(status == "gone" and req.mode == "rate_limit")


def release_flow(lease_id: uuid.UUID) -> Flow[bool]:
    """Give the slots back; False when the lease was no longer held (reclaimed)."""
    try:
        rows = yield Call(q.RELEASE, (lease_id,))
    except GeneratorExit:
        raise
    except BaseException:
        # Interrupted: the release may not have run. Releasing twice is harmless.
        yield Call(q.RELEASE, (lease_id,))
        raise
    return bool(rows[0][0])


def _uuid(value: Any) -> uuid.UUID | None:
    # asyncpg returns its own UUID type; psycopg a uuid.UUID.
    if value is None or type(value) is uuid.UUID:
        return value
    return uuid.UUID(str(value))


# --- Management ---------------------------------------------------------------------------


def _limit(row: Row) -> ConcurrencyLimit:
    name, limit, active, active_slots, decay, waiting, created, updated, held, decaying = row
    return ConcurrencyLimit(
        name, limit, active, float(active_slots), float(decay), waiting, created, updated,
        held, float(decaying),
    )  # fmt: skip


def create_limit_flow(
    name: str, limit: int, slot_decay_per_second: float, active: bool
) -> Flow[ConcurrencyLimit]:
    """Create a limit of ``limit`` slots; ``slot_decay_per_second`` in slots per second."""
    rows = yield Call(q.CREATE_LIMIT, (name, limit, slot_decay_per_second, active))
    return _limit(rows[0])


def read_limit_flow(name: str) -> Flow[ConcurrencyLimit]:
    rows = yield Call(q.READ_LIMIT, (name,))
    if not rows:
        raise LimitNotFoundError(f"limit {name!r} does not exist")
    return _limit(rows[0])


def list_limits_flow() -> Flow[list[ConcurrencyLimit]]:
    rows = yield Call(q.LIST_LIMITS, ())
    return [_limit(r) for r in rows]


def update_limit_flow(
    name: str,
    limit: int | None,
    slot_decay_per_second: float | None,
    active: bool | None,
    new_name: str | None,
) -> Flow[ConcurrencyLimit]:
    rows = yield Call(q.UPDATE_LIMIT, (name, limit, slot_decay_per_second, active, new_name))
    return _limit(rows[0])


def delete_limit_flow(name: str) -> Flow[bool]:
    rows = yield Call(q.DELETE_LIMIT, (name,))
    return bool(rows[0][0])


def holders_flow(name: str | None) -> Flow[list[Holder]]:
    rows = yield Call(q.HOLDERS, (name,))
    return [Holder(_uuid(r[0]) or uuid.UUID(int=0), *r[1:]) for r in rows]


def queue_flow(name: str | None) -> Flow[list[Waiter]]:
    rows = yield Call(q.QUEUE, (name,))
    return [Waiter(*r) for r in rows]
