"""asyncpg primitives for the async client (see :mod:`pggcl.drivers`).

Connections are made with ``asyncpg.connect``, never taken from asyncpg's pool: its reset runs
``UNLISTEN *`` and ``pg_advisory_unlock_all()``, and its bookkeeping costs about 65 us a call
(measured).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from pggcl.core.failures import translate_error
from pggcl.core.ops import Row
from pggcl.core.versions import version_num
from pggcl.drivers._aio import shielded
from pggcl.errors import PggclError

# What a dropped or unreachable connection raises.
_CONNECTION_ERRORS = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a protocol state error, after a connection was lost mid-call
    asyncpg.PostgresConnectionError,
    OSError,
    TimeoutError,
)
_ERRORS = (asyncpg.PostgresError, *_CONNECTION_ERRORS)


def _ignore(payload: str) -> None:
    pass


def _error(exc: BaseException) -> PggclError:
    sqlstate = getattr(exc, "sqlstate", None)
    lost = isinstance(exc, _CONNECTION_ERRORS)
    field = getattr(exc, "column_name", None)
    return translate_error(sqlstate, str(exc) or type(exc).__name__, lost, field=field)


async def connect(dsn: str, timeout: float, pooled: bool = False) -> Connection:
    """A new connection, within ``timeout`` seconds. ``pooled``: through a transaction
    pooler, which cannot keep the prepared statements asyncpg caches."""
    try:
        cache = 0 if pooled else 100
        return Connection(await asyncpg.connect(dsn, timeout=timeout, statement_cache_size=cache))
    except _ERRORS as exc:
        raise _error(exc) from exc


class Connection:
    """One asyncpg connection, in autocommit (asyncpg's default outside a transaction)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._deliver: Callable[[str], None] = _ignore
        self._arrived = asyncio.Event()
        self._lost = False

    @property
    def usable(self) -> bool:
        """Open and idle, as far as the client can tell without a round trip."""
        return not self._conn.is_closed() and not self._conn.is_in_transaction()

    @property
    def server_version_num(self) -> int:
        """The server's version as `server_version_num` (150018), known since connecting."""
        major, minor, micro, *_ = self._conn.get_server_version()
        return version_num(major, minor, micro)

    async def execute(self, sql: str, args: tuple[Any, ...]) -> list[Row]:
        """Run one statement; its rows as tuples."""
        try:
            rows = await self._conn.fetch(sql, *args)
        except asyncio.CancelledError:
            await self._settle()
            raise
        except _ERRORS as exc:
            raise _error(exc) from exc
        return [tuple(r) for r in rows]

    async def _settle(self) -> None:
        """After a statement was interrupted (its task cancelled): wait until it has finished on
        the server, committed or cancelled by asyncpg, so that whoever looks next at what it did
        (the flow's clean-up, maybe on another connection) sees its outcome. asyncpg runs the
        next statement only once its cancellation is over. Further cancellations meanwhile are
        ignored: the caller is raising one already."""

        async def settled() -> None:
            try:
                await self._conn.execute("SELECT 1")
            except Exception:
                self._conn.terminate()

        await shielded(settled())

    async def listen(self, channel: str, deliver: Callable[[str], None]) -> None:
        """Receive the notifications of ``channel``: each payload goes to ``deliver`` as it
        arrives, from asyncpg's callback (no hop through another task). :meth:`pump` waits."""
        self._deliver = deliver
        self._conn.add_termination_listener(self._on_lost)
        try:
            await self._conn.add_listener(channel, self._on_notify)
        except _ERRORS as exc:
            raise _error(exc) from exc

    async def pump(self, timeout: float) -> None:
        """Wait until a notification has been delivered or ``timeout`` seconds have passed.
        Raises DatabaseUnavailableError when the connection is lost."""
        if not self._lost and not self._conn.is_closed():
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                return
        if self._lost or self._conn.is_closed():
            raise translate_error(None, "the session connection was closed", True)

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._deliver(str(payload))
        self._arrived.set()

    def _on_lost(self, conn: object) -> None:
        self._lost = True
        self._arrived.set()

    async def close(self, timeout: float) -> None:
        """Close politely within ``timeout`` seconds, or drop the connection."""
        try:
            await asyncio.wait_for(self._conn.close(), timeout)
        except (TimeoutError, *_ERRORS):
            self._conn.terminate()

    def terminate(self) -> None:
        """Drop the connection at once."""
        self._conn.terminate()
