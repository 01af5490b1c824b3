"""What a client's flows run on, async source of ``port_sync``: a pool for calls, a session
connection for waiting.

The runner (``runner_async``) hands each op of a flow to the port: a call goes to a pool
connection, a wait to the session's dispatcher. ``close()`` closes the session (its leases are
released), then the pool; the port refuses every use after that with ClientClosedError.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any

from pggcl.client._acompat import sleep
from pggcl.client.pool_async import Pool
from pggcl.client.session_async import Session
from pggcl.core import queries as q
from pggcl.core.notifications import PING
from pggcl.core.notifications import Event as Notice
from pggcl.core.ops import Call, Row
from pggcl.core.options import Options
from pggcl.core.policy import Stats
from pggcl.core.retrying import FirstContactError
from pggcl.errors import ClientClosedError, DatabaseUnavailableError, PggclError


class AsyncPort:
    def __init__(self, dsn: str, options: Options, on_session_lost: Callable[[str], None]) -> None:
        self.stats = Stats()
        self._timeout = options.connect_timeout
        # With a separate session DSN, the calls go through a pooler.
        pooled = options.session_dsn is not None
        self._pool = Pool(
            dsn, options.pool_size, options.connect_timeout, options.pool_timeout, pooled
        )
        self.session = Session(
            options.session_dsn or dsn,
            grace_seconds=options.grace_seconds,
            heartbeat_seconds=options.heartbeat_seconds,
            idle_timeout=options.idle_session_timeout_seconds,
            connect_timeout=options.connect_timeout,
            stats=self.stats,
            on_session_lost=on_session_lost,
        )
        self._closed = False
        self._shared = options.pool_size == 0  # the calls take turns on the session connection

    @property
    def epoch(self) -> int:
        return self.session.epoch

    async def call(self, sql: str, args: tuple[Any, ...]) -> list[Row]:
        """Run one statement on a pool connection (or, without a pool, the session's)."""
        if self._closed:
            raise ClientClosedError("this pggcl client is closed: make a new one")
        if self._shared:
            try:
                return await self.session.call(sql, args)
            except DatabaseUnavailableError as exc:
                raise self._first_contact(exc) from exc
            finally:
                self.stats.calls += 1
        try:
            conn = await self._pool.get()
        except DatabaseUnavailableError as exc:
            raise self._first_contact(exc) from exc
        try:
            return await conn.execute(sql, args)
        finally:
            self.stats.calls += 1
            self._pool.put(conn)

    async def wait(self, waiter_id: int, timeout: float | None, epoch: int) -> Notice | None:
        return await self.session.wait(waiter_id, timeout, epoch)

    def forget(self, waiter_id: int) -> None:
        self.session.forget(waiter_id)

    async def sleep(self, seconds: float) -> None:
        await sleep(seconds)

    def defer(self, calls: tuple[Call, ...]) -> None:
        self.session.defer(calls)

    async def session_id(self) -> int:
        if self._closed:
            raise ClientClosedError("this pggcl client is closed: make a new one")
        try:
            return await self.session.session_id()
        except DatabaseUnavailableError as exc:
            raise self._first_contact(exc) from exc

    def _first_contact(self, exc: DatabaseUnavailableError) -> DatabaseUnavailableError:
        """``exc``, or, when this client never reached its database, the same as a
        FirstContactError: a wrong address is said at once, not waited out."""
        if self._pool.connected_once or self.stats.connects > 0:
            return exc
        return FirstContactError(str(exc))

    async def close(self) -> None:
        """Close the session (releasing what it still holds), then every connection. Calls
        still running finish; any later use raises ClientClosedError."""
        if self._closed:
            return
        self.session.stop()
        channel = self.session.channel
        if channel is not None:
            with suppress(PggclError):  # wake the worker, which then closes the session
                await self.call(q.NOTIFY, (channel, PING))
        self._closed = True
        await self.session.join()
        await self._pool.close(self._timeout)
