"""Acquiring and releasing slots, decided once for both clients. Pure: no driver, no I/O.

An acquire is a series of attempts, each with a fresh request id of the client's choosing (it
becomes the lease id), so that an attempt whose answer was lost can be found and settled:
cancelled if it queued, released if it was granted. An attempt starts over when

- its answer was lost (the connection dropped mid-call): it is settled first, so it is never
  granted twice and never left behind;
- its session was reclaimed while it waited (the client was cut off for longer than the grace
  period): its queue entry is gone, and it queues again under the client's new session.

While the database is unreachable every call is retried (``pggcl.core.retrying``) until the
caller's own deadline, ``timeout_seconds`` from its call; only then does it raise, saying so.
Interrupted (task cancelled, KeyboardInterrupt) or failed, an attempt settles what it did and
re-raises. A release is retried for ``retry_seconds``; past that it is left to the session's
worker, which releases it once the database answers, and at the end of a block it logs instead
of raising over a body that succeeded.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, Final

from pggcl.core import queries as q
from pggcl.core.explaining import explanation, why_waiting
from pggcl.core.notifications import CLOSED, GRANTED, LOST, REJECTED, Event
from pggcl.core.ops import Call, Defer, Flow, OpenSession, Wait
from pggcl.core.requests import Contention, Request
from pggcl.core.retrying import Unreachable, retrying
from pggcl.errors import (
    AcquireConcurrencySlotTimeoutError,
    ClientClosedError,
    ConcurrencySlotAcquisitionError,
    DatabaseUnavailableError,
    PggclError,
)
from pggcl.models import Grant

log = logging.getLogger("pggcl")

Clock = Callable[[], float]

# A finite wait longer than this wakes up to look again: threads cannot sleep past
# threading.TIMEOUT_MAX (about 292 years), and a timeout may be any finite number.
_LONGEST_WAIT: Final = 86_400.0


def _describe(req: Request) -> str:
    what = "slot" if req.occupy == 1 else "slots"
    return f"{req.occupy} {what} on {', '.join(repr(n) for n in req.names)}"


def _timeout(
    req: Request, cause: Unreachable | None = None, waiting: str | None = None
) -> AcquireConcurrencySlotTimeoutError:
    """The timeout error; ``waiting``: why the request waited (pggcl.core.explaining), when
    it could be read."""
    if waiting is not None:
        error = AcquireConcurrencySlotTimeoutError(
            f"timed out after {req.timeout:g} s waiting for {_describe(req)}: {waiting}"
        )
        error.waiting = waiting
        return error
    why = "" if cause is None else f": {cause}"
    return AcquireConcurrencySlotTimeoutError(
        f"could not acquire {_describe(req)} within timeout_seconds={req.timeout}{why}"
    )


class _StartOver(Exception):
    """This attempt is settled and over; the acquire tries again."""


def acquire_flow(
    req: Request,
    clock: Clock,
    started: float,
    contention: Contention,
    max_retries: int | None = None,
) -> Flow[Grant]:
    """Take the slots, waiting in the engine's queue until granted (see the module docstring).
    ``started`` is ``clock()`` at the user's call: ``timeout`` counts from there.
    ``max_retries``: how many times the request may start over (None: no bound); one more
    raises ConcurrencySlotAcquisitionError, the last attempt settled."""
    if not req.names:
        return Grant(req.names, req.occupy, None)
    deadline = None if req.timeout is None else started + req.timeout
    starts = 0
    while True:
        try:
            session_id = yield from retrying(OpenSession(), deadline, clock)
            return (yield from _attempt(req, session_id, deadline, clock, contention))
        except _StartOver:
            starts += 1
            if max_retries is not None and starts > max_retries:
                raise ConcurrencySlotAcquisitionError(
                    f"could not acquire {_describe(req)}: gave up after "
                    f"max_retries={max_retries} retries (the request had to start over: its "
                    "session was reclaimed, or the database went away)"
                ) from None
            continue
        except Unreachable as exc:
            raise _timeout(req, exc) from exc


def _attempt(
    req: Request, session_id: int, deadline: float | None, clock: Clock, contention: Contention
) -> Flow[Grant]:
    wait = req.timeout is None or req.timeout > 0
    request_id = uuid.uuid4()
    # The usual case first, through the engine's small-call fast path (pggcl.take); when it
    # does not apply, pggcl.acquire handles every case.
    one_name = req.names[0] if len(req.names) == 1 else None
    if req.mode == "concurrency" and one_name is not None and contention.worth_taking(one_name):
        take = Call(q.TAKE, (one_name, req.occupy, session_id, req.holder, request_id))
        rows = yield from _asking(take, req, None, request_id, deadline, clock)
        if rows[0][0]:
            return Grant(req.names, req.occupy, request_id)
    args = (
        list(req.names), req.occupy, req.mode, req.strict, None, req.holder, session_id,
        wait, request_id,
    )  # fmt: skip
    ask = Call(q.ACQUIRE, args) if not req.priority else (
        Call(q.ACQUIRE_WITH_PRIORITY, (*args, req.priority))
    )  # fmt: skip
    rows = yield from _asking(ask, req, None, request_id, deadline, clock)
    granted, lease_id, waiter_id, retry_after, created = rows[0]
    lease_id = as_uuid(lease_id)
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
    if granted:
        return Grant(req.names, req.occupy, lease_id)
    if waiter_id is None:
        raise _timeout(req)
    yield from _wait_for_grant(req, waiter_id, request_id, retry_after, deadline, clock)
    return Grant(req.names, req.occupy, lease_id)


def _asking(
    op: Call | Wait,
    req: Request,
    waiter_id: int | None,
    request_id: uuid.UUID,
    deadline: float | None,
    clock: Clock,
    idempotent: bool = False,
) -> Flow[Any]:
    """Yield ``op`` for this attempt; an ``idempotent`` one is retried while the database is
    unreachable. An answer lost to the database going away: settle the attempt and start over.
    Interrupted or failed otherwise: settle it and re-raise."""
    try:
        if idempotent:
            return (yield from retrying(op, deadline, clock))
        return (yield op)
    except GeneratorExit:
        raise
    except DatabaseUnavailableError:
        yield from _settle(waiter_id, request_id, deadline, clock)
        raise _StartOver() from None
    except BaseException:
        yield from _settle(waiter_id, request_id, clock(), clock)
        raise


def _settle(
    waiter_id: int | None, request_id: uuid.UUID, until: float | None, clock: Clock
) -> Flow[str | None]:
    """Leave nothing queued or held for the attempt ``request_id`` (also its lease id): cancel
    it, and release what it was granted. ``waiter_id`` None: the engine finds the waiter by the
    request id. While the database is unreachable retry until ``until``; past it the session's
    worker does both. Returns cancel's answer, or None when left to the worker."""
    cancel = Call(q.CANCEL, (waiter_id, request_id))
    release = Call(q.RELEASE, (request_id,))
    try:
        rows = yield from _settling(cancel, until, clock)
    except Unreachable:
        yield Defer((cancel, release))
        return None
    status: str = rows[0][0]
    if status == "granted":
        try:
            yield from _settling(release, until, clock)
        except Unreachable:
            yield Defer((release,))
    return status


def _settling(call: Call, until: float | None, clock: Clock) -> Flow[Any]:
    """``call``, retried until ``until``, and retried once more if interrupted meanwhile (the
    interrupted attempt may not have run): a clean-up must run to its end."""
    try:
        return (yield from retrying(call, until, clock))
    except GeneratorExit:
        raise
    except Unreachable:
        raise
    except BaseException:
        yield from retrying(call, clock(), clock)
        raise


def _wait_for_grant(
    req: Request,
    waiter_id: int,
    request_id: uuid.UUID,
    retry_after: float | None,
    deadline: float | None,
    clock: Clock,
) -> Flow[bool]:
    """Sleep until granted: True when the slots are ours. When the deadline passes, raises
    the timeout error (nothing is left queued or held); _StartOver when the session was
    reclaimed."""
    lease_id = request_id if req.mode == "concurrency" else None
    while True:
        now = clock()
        if deadline is not None and now >= deadline:
            return (yield from _give_up(req, waiter_id, request_id, clock))
        timeout = None if deadline is None else deadline - now
        if retry_after is not None:
            # A floor, so that a zero retry_after can never spin.
            floor = max(retry_after, 0.001)
            timeout = floor if timeout is None else min(timeout, floor)
        if timeout is not None:
            timeout = min(timeout, _LONGEST_WAIT)
        wait = Wait(waiter_id, timeout)
        event: Event | None = yield from _asking(wait, req, waiter_id, request_id, deadline, clock)
        if event is None:
            if deadline is not None and clock() >= deadline:
                return (yield from _give_up(req, waiter_id, request_id, clock))
        elif event.kind == GRANTED:
            return True
        elif event.kind == REJECTED:
            raise ConcurrencySlotAcquisitionError(
                f"cannot acquire {_describe(req)}: {event.detail or 'it can never be granted'}"
            )
        elif event.kind == CLOSED:
            raise ClientClosedError(f"the client was closed while waiting for {_describe(req)}")
        elif event.kind == LOST:
            log.warning("the session was reclaimed: queueing again for %s", _describe(req))
            raise _StartOver()
        # Re-check: after an 'r' notification, a reconnect, or when retry_after has passed.
        recheck = Call(q.RECHECK, (waiter_id, lease_id))
        rows = yield from _asking(recheck, req, waiter_id, request_id, deadline, clock, True)
        status, retry_after = rows[0]
        if status == "granted":
            return True
        if status == "rejected":
            raise ConcurrencySlotAcquisitionError(
                f"cannot acquire {_describe(req)}: a limit was lowered below the request"
            )
        if status == "gone":
            # Not granted (a grant says 'granted', in rate mode too, since revision 0010):
            # reclaimed with its session, dropped, or rejected while the 'e:' was missed.
            log.warning("the request vanished (session reclaimed): queueing again for %s",
                        _describe(req))  # fmt: skip
            raise _StartOver()


def _give_up(req: Request, waiter_id: int, request_id: uuid.UUID, clock: Clock) -> Flow[bool]:
    """The deadline passed: read why it waited (one call, while it is still queued), then
    settle. True when a grant raced the timeout after all; else the timeout error, saying
    why when that could be read."""
    waiting = yield from _why_waiting(req, waiter_id, request_id, clock)
    status = yield from _settle(waiter_id, request_id, clock(), clock)
    # A rate-limit grant that raced the timeout was consumed: it counts as acquired. (A
    # concurrency grant that raced it was released by the settling.)
    if status == "granted" and req.mode == "rate_limit":
        return True
    raise _timeout(req, waiting=waiting)


def _why_waiting(
    req: Request, waiter_id: int, request_id: uuid.UUID, clock: Clock
) -> Flow[str | None]:
    """Why the queued request waits, in one line (pggcl.explain, the oldest holder of each
    limit only): one statement, not retried. None when it cannot be said: the database
    does not answer, the pool is busy, a schema older than revision 0012, or no longer
    queued. Interrupted meanwhile, the attempt is settled and the interruption re-raised."""
    try:
        rows = yield Call(q.EXPLAIN, (waiter_id, 1))
    except GeneratorExit:
        raise
    except PggclError:
        return None
    except BaseException:
        yield from _settle(waiter_id, request_id, clock(), clock)
        raise
    return why_waiting([explanation(r) for r in rows], req.names)


def release_flow(lease_id: uuid.UUID, until: float, clock: Clock, quiet: bool) -> Flow[bool]:
    """Give the slots back; False when the lease was no longer held (reclaimed). While the
    database is unreachable retry until ``until``; past it the session's worker releases the
    lease once the database answers, and the flow raises Unreachable, or (``quiet``) logs and
    returns True."""
    release = Call(q.RELEASE, (lease_id,))
    try:
        rows = yield from _settling(release, until, clock)
    except Unreachable as exc:
        yield Defer((release,))
        if not quiet:
            raise
        log.warning(
            "could not release lease %s: %s; it is released as soon as the database answers",
            lease_id,
            exc,
        )
        return True
    return bool(rows[0][0])


def renew_flow(
    lease_ids: list[uuid.UUID], ttls: list[float | None], until: float, clock: Clock
) -> Flow[list[Any]]:
    """One call that renews every lease in ``lease_ids`` to its TTL in ``ttls``: rows
    (lease_id, still held). Retried while the database is unreachable, until ``until``."""
    rows: list[Any] = yield from retrying(Call(q.RENEW_MANY, (lease_ids, ttls)), until, clock)
    return rows


def as_uuid(value: Any) -> uuid.UUID | None:
    """``value`` as a uuid.UUID (asyncpg returns its own UUID type; psycopg a uuid.UUID)."""
    # asyncpg returns its own UUID type; psycopg a uuid.UUID.
    if value is None or type(value) is uuid.UUID:
        return value
    return uuid.UUID(str(value))
