"""GENERATED from ``pggcl/client/client_async.py`` by ``tools/async_to_sync.py``: do not
edit; change the async source (it says what this module is for) and run the tool.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from pggcl.client._compat import worker_name
from pggcl.client.port_sync import SyncPort
from pggcl.client.runner_sync import run
from pggcl.core import acquiring, flows, requests
from pggcl.core.ops import Flow
from pggcl.core.options import HeldLeases, Options, default_holder
from pggcl.core.policy import Stats
from pggcl.errors import ClientClosedError
from pggcl.models import ConcurrencyLimit, Grant, Holder, Waiter

__all__ = ["Client"]
T = TypeVar("T")
# Ports of a forked parent: kept alive so that no destructor touches the parent's sockets.
_abandoned: list[SyncPort] = []


class Client:
    """A pggcl client: one session connection plus a small pool, whatever the number of
    waiters. The async client serves the tasks of one event loop; the sync client serves
    threads and may be shared between them. Both start afresh in a child after ``fork()``.

    Durations are in seconds; see :class:`pggcl._base.Options` for the keyword options.
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
    ) -> None:
        self.dsn = dsn
        self._options = Options(pool_size, grace_seconds, heartbeat_seconds, connect_timeout, pool_timeout, retry_seconds, session_dsn)  # fmt: skip
        self._held = HeldLeases()
        self._contention = requests.Contention()
        self._pid = os.getpid()
        self._port_ = self._new_port()

    def _new_port(self) -> SyncPort:
        return SyncPort(self.dsn, self._options, self._held.session_lost)

    @property
    def _port(self) -> SyncPort:
        if self._pid != os.getpid():  # forked: the parent's connections are not ours
            _abandoned.append(self._port_)
            self._pid, self._held, self._port_ = (os.getpid(), HeldLeases(), self._new_port())
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
        self._port.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Acquiring --------------------------------------------------------------------------

    def _acquire(self, req: requests.Request, started: float) -> Grant:
        flow = acquiring.acquire_flow(req, time.monotonic, started, self._contention)
        return run(flow, self._port)

    @contextmanager
    def concurrency(
        self,
        names: str | Sequence[str],
        occupy: int = 1,
        timeout_seconds: float | None = None,
        strict: bool = False,
        holder: str | None = None,
    ) -> Iterator[Grant]:
        """Hold ``occupy`` slots on every limit in ``names`` for the body of the block.

        Waits until granted (first come, first served), at most ``timeout_seconds`` seconds
        (None: no limit; 0: do not wait), then raises AcquireConcurrencySlotTimeoutError.
        Missing limits are created inactive, or raise with ``strict=True``.
        """
        started = time.monotonic()
        holder = holder or default_holder(worker_name())
        req = requests.make_request(names, occupy, "concurrency", timeout_seconds, strict, holder)
        if not req.names:
            yield Grant(req.names, req.occupy, None)
            return
        grant = self._acquire(req, started)
        self._held.count += 1
        try:
            yield grant
        finally:
            self._held.count -= 1
            assert grant.lease_id is not None
            self._release(grant.lease_id, req.names)

    def _release(self, lease_id: uuid.UUID, names: Sequence[str]) -> None:
        try:
            released = self._run(
                acquiring.release_flow(lease_id, self._retry_until(), time.monotonic, quiet=True)
            )
        except ClientClosedError:
            return  # closing the client closed its session, which released the lease
        if not released:
            acquiring.log.error(
                "lease %s on %s was gone when released: it was reclaimed", lease_id, names
            )

    def rate_limit(
        self,
        names: str | Sequence[str],
        occupy: int = 1,
        timeout_seconds: float | None = None,
        strict: bool = False,
    ) -> None:
        """Take ``occupy`` slots on every limit in ``names``; they decay away at each limit's
        ``slot_decay_per_second``. Waits until they fit (see :meth:`concurrency`)."""
        started = time.monotonic()
        holder = default_holder(worker_name())
        req = requests.make_request(names, occupy, "rate_limit", timeout_seconds, strict, holder)
        if req.names:
            self._acquire(req, started)

    def release(self, lease_id: uuid.UUID) -> bool:
        """Release a lease by id (e.g. one seen in :meth:`holders`); False when not held."""
        return self._run(
            acquiring.release_flow(lease_id, self._retry_until(), time.monotonic, quiet=False)
        )

    # --- Managing ---------------------------------------------------------------------------

    def create_limit(
        self, name: str, limit: int, slot_decay_per_second: float = 0.0, active: bool = True
    ) -> ConcurrencyLimit:
        """Create a limit of ``limit`` slots (rate limits: ``slot_decay_per_second`` > 0)."""
        return self._run(flows.create_limit_flow(name, limit, slot_decay_per_second, active))

    def read_limit(self, name: str) -> ConcurrencyLimit:
        """The limit called ``name``; LimitNotFoundError when there is none."""
        return self._run(flows.read_limit_flow(name, self._retry_until(), time.monotonic))

    def list_limits(self) -> list[ConcurrencyLimit]:
        """Every limit, sorted by name."""
        return self._run(flows.list_limits_flow(self._retry_until(), time.monotonic))

    def update_limit(
        self,
        name: str,
        *,
        limit: int | None = None,
        slot_decay_per_second: float | None = None,
        active: bool | None = None,
        new_name: str | None = None,
    ) -> ConcurrencyLimit:
        """Change what is given (None leaves it); ``new_name`` renames."""
        return self._run(
            flows.update_limit_flow(name, limit, slot_decay_per_second, active, new_name)
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

    # --- Test hooks -------------------------------------------------------------------------

    def _session_id(self) -> int:
        return self._port.session_id()

    def _wait_listening(self, after: int = 0, timeout: float = 10.0) -> int:
        """Wait until the session connection has started listening more than ``after`` times."""
        return self._port.session.wait_listening(after, timeout)
