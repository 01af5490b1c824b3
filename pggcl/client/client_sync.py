"""GENERATED from ``pggcl/client/client_async.py`` by ``tools/async_to_sync.py``: do not
edit; change the async source (it says what this module is for) and run the tool.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from pggcl import tracing
from pggcl.client import _compat as _world
from pggcl.client._compat import Event, Lock, Worker, cancel, join, shielded, spawn, worker_name
from pggcl.client.port_sync import SyncPort
from pggcl.client.runner_sync import run
from pggcl.core import acquiring, flows, requests
from pggcl.core.ops import Flow
from pggcl.core.options import HeldLeases, Options, current_pid, default_holder
from pggcl.core.policy import Stats
from pggcl.errors import (
    AcquireConcurrencySlotTimeoutError,
    ClientClosedError,
    ConcurrencySlotAcquisitionError,
    PggclError,
    SessionLostError,
)
from pggcl.models import (
    ConcurrencyLimit,
    Explanation,
    Grant,
    Holder,
    LimitTemplate,
    TemplateTotals,
    Waiter,
)
from pggcl.prefect import holder_text, run_holder

__all__ = ["Client"]
T = TypeVar("T")
# The asyncio world can interrupt a holder at once (its task is cancelled); threads cannot.
_ASYNC: Final = _world.__name__ == "pggcl.client._acompat"
# Lease TTLs. A lease of concurrency() gets an expiry of lease_duration seconds, renewed at a
# third of it while the process lives. The grant itself takes no TTL (the fast path,
# pggcl.take, has no room for one): the first renewal sets it, _FIRST_RENEWAL seconds after the
# grant at most, so a block shorter than that costs no call at all. One call renews every lease
# of the client that is due (or nearly: _SLACK of its interval), whatever their number.
_FIRST_RENEWAL: Final = 1.0
_RENEW_EVERY: Final = 1.0 / 3.0
_SLACK: Final = 0.25
_RETRY_RENEWAL: Final = 1.0


@dataclass(slots=True, eq=False)
class _Lease:
    """A lease this client holds, as its renewals see it."""

    lease_id: uuid.UUID
    names: tuple[str, ...]
    ttl: float | None  # lease_duration; None: no expiry, the session alone keeps it
    raise_on_loss: bool
    renewed_at: float  # monotonic: the grant, then the start of the last renewal that held
    due: float  # monotonic: when to renew next
    task: Any = None  # the holder's task (asyncio world), interrupted on loss
    lost: str | None = None  # why it was lost, once it was
    interrupted: bool = False


# Ports of a forked parent: kept alive so that no destructor touches the parent's sockets.
_abandoned: list[SyncPort] = []


class Client:
    """A pggcl client: one session connection plus a small pool, whatever the number of
    waiters. The async client serves the tasks of one event loop; the sync client serves
    threads and may be shared between them. Both start afresh in a child after ``fork()``.

    Durations are in seconds; see :class:`pggcl.core.options.Options` for the keyword options.
    """

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        grace_seconds: float = 5.0,
        heartbeat_seconds: float = 2.0,
        connect_timeout: float = 10.0,
        pool_timeout: float = 30.0,
        retry_seconds: float = 30.0,
        session_dsn: str | None = None,
        idle_session_timeout_seconds: float | None = None,
    ) -> None:
        self.dsn = dsn
        self._options = Options(pool_size, grace_seconds, heartbeat_seconds, connect_timeout, pool_timeout, retry_seconds, session_dsn, idle_session_timeout_seconds)  # fmt: skip
        self._held = HeldLeases()
        self._contention = requests.Contention()
        self._pid = current_pid()
        self._leases_lock = Lock()
        self._renew_now = Event()
        self._fresh_leases()
        self._port_ = self._new_port()

    def _fresh_leases(self) -> None:
        self._leases: dict[uuid.UUID, _Lease] = {}
        self._renewer: Worker | None = None
        self._renewing = False
        self._closing = False
        # While the renewer sleeps: when it wakes. A new lease due sooner wakes it.
        self._wakes_at = -math.inf

    def _new_port(self) -> SyncPort:
        return SyncPort(self.dsn, self._options, self._session_lost)

    @property
    def _port(self) -> SyncPort:
        if self._pid != current_pid():  # forked: the parent's connections are not ours
            _abandoned.append(self._port_)
            self._pid, self._held = (current_pid(), HeldLeases())
            self._leases_lock, self._renew_now = (Lock(), Event())
            self._fresh_leases()
            self._port_ = self._new_port()
        return self._port_

    @property
    def stats(self) -> Stats:
        """Counters (calls, notifications, heartbeats, reconnects...) of this client."""
        return self._port.stats

    def _retry_until(self) -> float:
        return time.monotonic() + self._options.retry_seconds

    def _run(self, flow: Flow[T]) -> T:
        return run(flow, self._port)

    def close(self) -> None:
        """Close the session (releasing what it still holds) and every connection."""
        port = self._port
        with self._leases_lock:
            self._closing = True
            renewer = self._renewer
            self._renew_now.set()
        port.close()
        if renewer is not None and (not join(renewer, 2.0)):
            cancel(renewer)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Acquiring --------------------------------------------------------------------------

    def _acquire(
        self, req: requests.Request, started: float, max_retries: int | None = None
    ) -> Grant:
        flow = acquiring.acquire_flow(req, time.monotonic, started, self._contention, max_retries)
        return run(flow, self._port)

    @contextmanager
    def concurrency(
        self,
        names: str | Sequence[str],
        occupy: int = 1,
        timeout_seconds: float | None = None,
        max_retries: int | None = None,
        lease_duration: float | None = 300,
        strict: bool = False,
        holder: str | Any | None = None,
        raise_on_lease_renewal_failure: bool | None = None,
        *,
        priority: float = 0.0,
    ) -> Iterator[Grant]:
        """Hold ``occupy`` slots on every limit in ``names`` for the body of the block.

        Prefect's parameters, by the same names, positions and defaults
        (docs/migrating-from-prefect.md says what each does here):

        - ``timeout_seconds``: wait at most this long (None: no limit; 0: do not wait), then
          raise AcquireConcurrencySlotTimeoutError (a TimeoutError). Waiting is first come,
          first served.
        - ``max_retries``: None, no bound. 0: do not queue; slots not free at once raise
          ConcurrencySlotAcquisitionError (Prefect's error when no retry is left). N: queue,
          and start over (after a reclaimed session or an outage) at most N times.
        - ``lease_duration``: the lease's TTL in seconds, renewed at a third of it while
          this process lives (one call renews all of the client's leases due); the engine
          reclaims the slots when it passes unrenewed, or when the client's session is gone
          past its grace, whichever comes first. None: no TTL.
        - ``strict``: a missing limit raises ConcurrencySlotAcquisitionError instead of being
          created inactive.
        - ``holder``: a string, or Prefect's ``{"type": ..., "id": UUID}`` (stored as
          ``type:id``). By default the Prefect task (or flow) run this runs in, else
          ``host:pid:thread`` (or task name).
        - ``raise_on_lease_renewal_failure``: when the lease is lost meanwhile (a renewal
          refused, the session reclaimed), True raises SessionLostError (an async holder is
          cancelled at once, and SessionLostError replaces the CancelledError; a sync holder
          learns it at the block's exit); False logs a warning and lets the body go on.
          None: as ``strict``, as in Prefect.
        - ``priority`` (pggcl's own): a head start in seconds, -86400 to 86400. The request is
          served as if it had come that many seconds earlier (negative: later), so a later
          arrival passes a waiter only by its own head start, and nobody starves.
        """
        started = time.monotonic()
        ttl = requests.checked_lease_duration(lease_duration)
        max_retries = requests.checked_max_retries(max_retries)
        raise_on_loss = (
            strict if raise_on_lease_renewal_failure is None else raise_on_lease_renewal_failure
        )
        text = holder_text(holder) or run_holder() or default_holder(worker_name())
        no_queue = max_retries == 0 and timeout_seconds != 0
        req = requests.make_request(
            names, occupy, "concurrency", 0 if no_queue else timeout_seconds, strict, text, priority
        )
        if not req.names:
            yield Grant(req.names, req.occupy, None)
            return
        with tracing.acquire_span(req.names, req.occupy, req.mode) as waited:
            try:
                grant = self._acquire(req, started, max_retries)
            except AcquireConcurrencySlotTimeoutError as exc:
                if not no_queue:
                    raise
                raise ConcurrencySlotAcquisitionError(
                    f"{exc}; max_retries=0: the request does not queue"
                ) from exc
            tracing.outcome(waited, "granted")
        assert grant.lease_id is not None
        lease: _Lease | None = None
        try:
            with tracing.hold_span(req.names, req.occupy, grant.lease_id) as held:
                lease = self._hold(grant.lease_id, req.names, ttl, raise_on_loss)
                self._held.count += 1
                released = True
                try:
                    yield grant
                except BaseException as exc:
                    self._held.count -= 1
                    released = self._let_go(lease)
                    # Cancelled by us alone (and not by someone else as well): say why.
                    ours = lease.interrupted and isinstance(exc, asyncio.CancelledError)
                    if ours and lease.task.uncancel() == 0:
                        raise self._lost_error(lease) from exc
                    raise
                else:
                    self._held.count -= 1
                    released = self._let_go(lease)
                    if lease.interrupted and lease.task.uncancel() > 0:
                        raise asyncio.CancelledError()  # someone else's cancellation as well
                kept = lease.lost is None and released
                if raise_on_loss and (not kept):
                    raise self._lost_error(lease)
                tracing.outcome(held, "released" if kept else "lost")
        except BaseException:
            # Interrupted (a Ctrl-C, in the sync world) between the grant and the block: the
            # slots go back all the same.
            if lease is None:
                shielded(self._release(grant.lease_id, req.names))
            raise

    def _lost_error(self, lease: _Lease) -> SessionLostError:
        why = lease.lost or "it was gone when released (reclaimed)"
        return SessionLostError(
            f"lease {lease.lease_id} on {', '.join(map(repr, lease.names))} was lost while held: {why}; its slots may have been given to others"
        )

    def _let_go(self, lease: _Lease) -> bool:
        """Forget the lease, then release it; False when it was gone already."""
        with self._leases_lock:
            self._leases.pop(lease.lease_id, None)
        if lease.interrupted:  # a cancellation of ours may still be pending: let it land here
            return shielded(self._release(lease.lease_id, lease.names))
        return self._release(lease.lease_id, lease.names)

    def _release(self, lease_id: uuid.UUID, names: Sequence[str]) -> bool:
        try:
            released = self._run(
                acquiring.release_flow(lease_id, self._retry_until(), time.monotonic, quiet=True)
            )
        except ClientClosedError:
            return True  # closing the client closed its session, which released the lease
        if not released:
            acquiring.log.error(
                "lease %s on %s was gone when released: it was reclaimed", lease_id, names
            )
        return released

    # --- Lease renewal ----------------------------------------------------------------------

    def _hold(
        self, lease_id: uuid.UUID, names: tuple[str, ...], ttl: float | None, raise_on_loss: bool
    ) -> _Lease:
        now = time.monotonic()
        due = now + min(_FIRST_RENEWAL, ttl * _RENEW_EVERY) if ttl is not None else math.inf
        task = asyncio.current_task() if _ASYNC else None
        lease = _Lease(lease_id, names, ttl, raise_on_loss, now, due, task)
        with self._leases_lock:
            self._leases[lease_id] = lease
            if ttl is not None and (not self._renewing) and (not self._closing):
                self._renewing = True
                self._renewer = spawn(self._renew_leases, "pggcl-renewer")
            elif due < self._wakes_at:
                self._wakes_at = -math.inf
                self._renew_now.set()
        return lease

    def _session_lost(self, why: str) -> None:
        self._held.session_lost(why)  # logs it, for every lease at once
        with self._leases_lock:
            leases = list(self._leases.values())
        for lease in leases:
            self._lose(lease, f"the client's session was lost ({why})", logged=True)

    def _lose(self, lease: _Lease, why: str, logged: bool = False) -> None:
        with self._leases_lock:
            if lease.lost is not None or lease.lease_id not in self._leases:
                return
            lease.lost = why
            interrupt = lease.raise_on_loss and lease.task is not None
            lease.interrupted = interrupt
        if interrupt:
            acquiring.log.error('lease %s on %s lost: %s; interrupting its holder', lease.lease_id, lease.names, why)  # fmt: skip
            lease.task.cancel()
        elif not lease.raise_on_loss and (not logged):
            acquiring.log.warning('lease %s on %s lost: %s; the block goes on, but the limit may be exceeded', lease.lease_id, lease.names, why)  # fmt: skip

    def _renew_leases(self) -> None:
        """The renewer: one per client, while it holds leases with a TTL."""
        while True:
            with self._leases_lock:
                timed = [x for x in self._leases.values() if x.ttl is not None and (not x.lost)]
                if self._closing or not timed:
                    self._renewing = False
                    return
                self._renew_now.clear()
                now = time.monotonic()
                next_due = min([x.due for x in timed])
                self._wakes_at = next_due
            if next_due > now:
                self._renew_now.wait(next_due - now)
                with self._leases_lock:
                    self._wakes_at = -math.inf
                continue
            with self._leases_lock:
                self._wakes_at = -math.inf
            batch = [x for x in timed if x.due <= now + _SLACK * (x.ttl or 0) * _RENEW_EVERY]
            self._renew(batch, now)

    def _renew(self, batch: list[_Lease], now: float) -> None:
        # Retry while the database is unreachable, until the first of these TTLs passes.
        until = min([x.renewed_at + (x.ttl or 0) for x in batch])
        try:
            rows = self._run(
                acquiring.renew_flow(
                    [lease.lease_id for lease in batch],
                    [lease.ttl for lease in batch],
                    max(until, now),
                    time.monotonic,
                )
            )
        except ClientClosedError:
            return
        except PggclError as exc:
            later = time.monotonic()
            for lease in batch:
                if later >= lease.renewed_at + (lease.ttl or 0):
                    self._lose(lease, f"it could not be renewed for {lease.ttl:g} s: {exc}")
                else:
                    lease.due = later + _RETRY_RENEWAL
            acquiring.log.debug("could not renew %d lease(s): %s", len(batch), exc)
            return
        held = {acquiring.as_uuid(lease_id): bool(ok) for lease_id, ok in rows}
        for lease in batch:
            if held.get(lease.lease_id):
                lease.renewed_at = now
                lease.due = now + (lease.ttl or 0) * _RENEW_EVERY
            else:
                self._lose(
                    lease,
                    "it was gone when renewed (reclaimed: its TTL passed, or its session was lost; or released by hand)",
                )

    def rate_limit(
        self,
        names: str | Sequence[str],
        occupy: int = 1,
        timeout_seconds: float | None = None,
        strict: bool = False,
        *,
        priority: float = 0.0,
    ) -> None:
        """Take ``occupy`` slots on every limit in ``names``; they decay away at each limit's
        ``slot_decay_per_second``. Waits until they fit (see :meth:`concurrency`, also for
        ``priority``)."""
        started = time.monotonic()
        holder = run_holder() or default_holder(worker_name())
        req = requests.make_request(
            names, occupy, "rate_limit", timeout_seconds, strict, holder, priority
        )
        if req.names:
            with tracing.acquire_span(req.names, req.occupy, req.mode) as waited:
                self._acquire(req, started)
                tracing.outcome(waited, "granted")

    def release(self, lease_id: uuid.UUID) -> bool:
        """Release a lease by id (e.g. one seen in :meth:`holders`); False when not held."""
        return self._run(
            acquiring.release_flow(lease_id, self._retry_until(), time.monotonic, quiet=False)
        )

    # --- Managing ---------------------------------------------------------------------------

    def create_limit(
        self,
        name: str,
        limit: int,
        slot_decay_per_second: float = 0.0,
        active: bool = True,
        *,
        idle_seconds: float | None = None,
    ) -> ConcurrencyLimit:
        """Create a limit of ``limit`` slots (rate limits: ``slot_decay_per_second`` > 0). A
        name with ``*`` creates a template (:class:`~pggcl.models.LimitTemplate`): limits it
        matches are created from it on first use, and removed after ``idle_seconds`` unused
        (default an hour)."""
        flow = flows.create_limit_flow(name, limit, slot_decay_per_second, active, idle_seconds)
        return self._run(flow)

    def read_limit(self, name: str) -> ConcurrencyLimit:
        """The limit called ``name``; LimitNotFoundError when there is none."""
        return self._run(flows.read_limit_flow(name, self._retry_until(), time.monotonic))

    def list_limits(self) -> list[ConcurrencyLimit]:
        """Every limit, sorted by name (templates are apart: :meth:`list_templates`)."""
        return self._run(flows.list_limits_flow(self._retry_until(), time.monotonic))

    def list_templates(self) -> list[LimitTemplate]:
        """Every template, sorted by name, with how many instances each has."""
        return self._run(flows.list_templates_flow(self._retry_until(), time.monotonic))

    def busiest_limits(
        self, per_template: int = 10, also: Sequence[str] = ()
    ) -> list[ConcurrencyLimit]:
        """Every plain limit and, of each template, the ``per_template`` instances busiest now
        (most slots in use plus waiting, then by name), and the limits named in ``also``
        wherever they rank, sorted by name: what ``/metrics`` and the UI show, bounded however
        many instances a template has (chosen in the database)."""
        return self._run(
            flows.busiest_limits_flow(per_template, also, self._retry_until(), time.monotonic)
        )

    def list_instances(
        self, template: str, *, after: str | None = None, max_rows: int = 100
    ) -> list[ConcurrencyLimit]:
        """The instances of ``template``, sorted by name, at most ``max_rows`` of them, from
        the first name after ``after`` (a page: pass the last name of the previous one)."""
        return self._run(
            flows.list_instances_flow(
                template, after, max_rows, self._retry_until(), time.monotonic
            )
        )

    def template_totals(self) -> list[TemplateTotals]:
        """Every template, sorted by name, with its instances taken together: how many, their
        occupancy now, and counters that only grow (revision 0014)."""
        return self._run(flows.template_totals_flow(self._retry_until(), time.monotonic))

    def update_limit(
        self,
        name: str,
        *,
        limit: int | None = None,
        slot_decay_per_second: float | None = None,
        active: bool | None = None,
        new_name: str | None = None,
        idle_seconds: float | None = None,
    ) -> ConcurrencyLimit:
        """Change what is given (None leaves it); ``new_name`` renames. A template changes
        with its instances not changed individually (it cannot be renamed); ``idle_seconds``
        is a template's alone."""
        return self._run(
            flows.update_limit_flow(
                name, limit, slot_decay_per_second, active, new_name, idle_seconds
            )
        )

    def delete_limit(self, name: str) -> bool:
        """Delete a limit; False when there was none. Its waiters proceed."""
        return self._run(flows.delete_limit_flow(name))

    def holders(self, name: str | None = None) -> list[Holder]:
        """Slots held now, one row per lease and limit (of ``name`` only, if given)."""
        return self._run(flows.holders_flow(name, self._retry_until(), time.monotonic))

    def queue(self, name: str | None = None) -> list[Waiter]:
        """Queued requests, in the order they will be served (of ``name`` only, if given)."""
        return self._run(flows.queue_flow(name, self._retry_until(), time.monotonic))

    def explain(self, waiter_id: int, max_holders: int | None = None) -> list[Explanation]:
        """Why the queued request ``waiter_id`` (a :class:`Waiter`'s) waits: one
        :class:`Explanation` per limit it waits on, by name (whether that limit blocks it, its
        place in the queue, who holds the slots; ``max_holders``: list at most that many).
        [] when it is not queued (granted, cancelled, or unknown). Any waiter, whoever's."""
        return self._run(
            flows.explain_flow(waiter_id, max_holders, self._retry_until(), time.monotonic)
        )

    def explain_queue(
        self, name: str | None = None, max_holders: int | None = None
    ) -> list[Explanation]:
        """:meth:`explain` for every queued request (those queued on ``name`` only, if given),
        in the order they queued, each on every limit it waits on; in one call."""
        return self._run(
            flows.explain_queue_flow(name, max_holders, self._retry_until(), time.monotonic)
        )

    def explain_own(self, max_holders: int | None = None) -> list[Explanation]:
        """:meth:`explain` for the requests of this client that wait now (its tasks' or
        threads' ``concurrency()`` and ``rate_limit()`` calls), in the order they queued: e.g.
        from a watchdog while they wait. [] without a call when none waits."""
        waiter_ids = self._port.session.waiter_ids()
        return self._run(
            flows.explain_many_flow(waiter_ids, max_holders, self._retry_until(), time.monotonic)
        )

    # --- Test hooks -------------------------------------------------------------------------

    def _session_id(self) -> int:
        return self._port.session_id()

    def _wait_listening(self, after: int = 0, timeout: float = 10.0) -> int:
        """Wait until the session connection has started listening more than ``after`` times."""
        return self._port.session.wait_listening(after, timeout)
