"""The async port: an asyncpg pool, and the session connection watched by one task.

It carries out what ``pggcl._core`` decides and nothing more. The session connection comes from
``asyncpg.connect``, never from the pool (a pool reset runs ``UNLISTEN *`` and
``pg_advisory_unlock_all()``). The supervisor task opens (or resumes) the session, listens,
runs the heartbeat while this process has waiters, and reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import asyncpg

from pggcl.client.runner_async import shielded
from pggcl.core import queries as q
from pggcl.core.failures import translate_error
from pggcl.core.notifications import LOST, PING, RECHECK, Dispatcher, Event, parse_payload
from pggcl.core.ops import Row
from pggcl.core.policy import (
    Backoff,
    Stats,
    check_session_kept,
    next_heartbeat,
    reconnect_warning,
    session_failure,
)
from pggcl.errors import PggclError, SessionLostError

log = logging.getLogger("pggcl")

# What a dropped or unreachable connection raises.
_CONNECTION_ERRORS = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    OSError,
    TimeoutError,
)


def _translate(exc: BaseException) -> PggclError:
    sqlstate = getattr(exc, "sqlstate", None)
    lost = isinstance(exc, _CONNECTION_ERRORS)
    return translate_error(sqlstate, str(exc) or type(exc).__name__, lost)


async def _settle(conn: asyncpg.Connection) -> None:
    """After a statement was interrupted (its task cancelled): wait until it has finished on the
    server, committed or cancelled by asyncpg, so that whoever looks next at what it did (the
    flow's clean-up, maybe on another connection) sees its outcome. asyncpg runs the next
    statement on ``conn`` only once its cancellation is over. Further cancellations meanwhile
    are ignored: the caller is raising one already."""

    async def settled() -> None:
        try:
            await conn.execute("SELECT 1")
        except Exception:
            conn.terminate()

    await shielded(settled())


class _Pool:
    """At most ``size`` connections, made on demand, dropped when broken. Pool connections
    only run single autocommit statements, so there is nothing to reset between uses. (asyncpg's
    own pool costs about 65 us a call in its acquire/release bookkeeping: measured.)"""

    def __init__(self, dsn: str, size: int, connect_timeout: float) -> None:
        self._dsn, self._size, self._timeout = dsn, size, connect_timeout
        self._idle: list[asyncpg.Connection] = []
        self._open = 0  # connections made and not dropped (idle or in use)
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def get(self) -> asyncpg.Connection:
        """An idle connection, or a new one while fewer than ``size`` are open; waits (at most
        the connect timeout) for one to be returned otherwise. Give it back with :meth:`put`."""
        while not self._idle and self._open >= self._size:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(self._timeout):
                    await waiter
            finally:
                if not waiter.done():
                    self._waiters.remove(waiter)
        if self._idle:
            return self._idle.pop()
        self._open += 1
        try:
            return await asyncpg.connect(self._dsn, timeout=self._timeout)
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    def put(self, conn: asyncpg.Connection) -> None:
        if conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            self._open -= 1
        else:
            self._idle.append(conn)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self, timeout: float) -> None:
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for conn in idle:
            try:
                await asyncio.wait_for(conn.close(), timeout)
            except (TimeoutError, *_CONNECTION_ERRORS):
                conn.terminate()


class _Box:
    """A waiting task's mailbox."""

    def __init__(self) -> None:
        self._events: deque[Event] = deque()
        self._ready = asyncio.Event()

    def push(self, event: Event) -> None:
        self._events.append(event)
        self._ready.set()

    async def get(self, timeout: float | None) -> Event | None:
        if not self._events:
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return None
        return self._events.popleft() if self._events else None


class AsyncpgPort:
    """Pool, session supervisor and dispatcher of one async client (one per loop and DSN)."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int,
        grace_seconds: float,
        heartbeat_seconds: float,
        connect_timeout: float,
        on_session_lost: Callable[[str], None],
    ) -> None:
        self._dsn = dsn
        self._grace, self._heartbeat, self._timeout = (
            grace_seconds,
            heartbeat_seconds,
            connect_timeout,
        )
        self._on_session_lost = on_session_lost
        self.stats = Stats()
        self._pool = _Pool(dsn, pool_size, connect_timeout)
        self._dispatch: Dispatcher[_Box] = Dispatcher()
        self._changed: asyncio.Condition | None = None
        self._session: tuple[int, uuid.UUID, str] | None = None
        self._generation = 0
        self._failures = 0
        self._last_error: PggclError | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None

    # --- AsyncPort --------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._dispatch.epoch

    async def call(self, sql: str, args: tuple[Any, ...]) -> list[Row]:
        try:
            conn = await self._pool.get()
            try:
                rows = await conn.fetch(sql, *args)
            except asyncio.CancelledError:
                await _settle(conn)
                raise
            finally:
                self._pool.put(conn)
        except (asyncpg.PostgresError, *_CONNECTION_ERRORS) as exc:
            raise _translate(exc) from exc
        finally:
            self.stats.calls += 1
        return [tuple(r) for r in rows]

    async def wait(self, waiter_id: int, timeout: float | None, epoch: int) -> Event | None:
        box = self._dispatch.box(waiter_id)
        if box is None:
            box = _Box()
            self._dispatch.register(waiter_id, box, epoch, time.monotonic())
        return await box.get(timeout)

    def forget(self, waiter_id: int) -> None:
        self._dispatch.unregister(waiter_id)

    # --- Session ----------------------------------------------------------------------------

    def _cond(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _signal(self) -> None:
        async with self._cond():
            self._cond().notify_all()

    async def session_id(self) -> int:
        """The session id, starting the supervisor on first use; waits for the first session."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._supervise(), name="pggcl-session"
            )
        if self._session is None:
            failures = self._failures
            async with self._cond():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._cond().wait_for(
                            lambda: self._session is not None or self._failures > failures
                        ),
                        self._timeout,
                    )
        if self._session is None:
            raise session_failure(self._last_error)
        return self._session[0]

    async def wait_listening(self, after: int, timeout: float) -> int:
        """Wait until the supervisor has (re)started listening more than ``after`` times."""
        async with self._cond():
            await asyncio.wait_for(self._cond().wait_for(lambda: self._generation > after), timeout)
        return self._generation

    async def close(self) -> None:
        """Stop the supervisor (closing the session: its leases are released) and the pool."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_pool()

    async def _close_pool(self) -> None:
        await self._pool.close(self._timeout)

    # --- The supervisor task ----------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff, attempt = Backoff(), 0
        try:
            while True:
                try:
                    conn = self._conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
                    self.stats.connects += 1
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                    await conn.execute(q.KEEPALIVES)
                    channel = await self._take_session(conn)
                    assert self._session is not None
                    check_session_kept(self._session[0], await conn.fetchval(q.SESSION_SETTING))
                    await conn.add_listener(channel, self._on_notify)
                    attempt = 0
                    await self._listening()
                    await self._serve(conn, lost)
                except (asyncpg.PostgresError, PggclError, *_CONNECTION_ERRORS) as exc:
                    error = exc if isinstance(exc, PggclError) else _translate(exc)
                    self._last_error = error
                    self._failures += 1
                    await self._signal()
                    log.warning(reconnect_warning(self._generation > 0, error))
                    if self._conn is not None:
                        self._conn.terminate()
                    await asyncio.sleep(backoff.delay(attempt))
                    attempt += 1
        except asyncio.CancelledError:
            await self._shutdown()
            raise

    async def _shutdown(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.execute(q.CLOSE_SESSION), self._timeout)
                await asyncio.wait_for(conn.close(), self._timeout)
            except (asyncpg.PostgresError, *_CONNECTION_ERRORS):
                conn.terminate()
        self._session = None
        await self._close_pool()

    async def _take_session(self, conn: asyncpg.Connection) -> str:
        """Resume our session on a new connection, or open one; returns the channel."""
        if self._session is not None:
            session_id, token, channel = self._session
            deadline = time.monotonic() + self._grace + self._timeout
            while True:
                try:
                    resumed = bool(await conn.fetchval(q.RESUME_SESSION, session_id, token))
                    break
                except asyncpg.PostgresError as exc:
                    # GC008: the old connection still holds the session; it goes away soon.
                    if exc.sqlstate != "GC008" or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            if resumed:
                return channel
            self._lose_session(f"session {session_id} was reclaimed while disconnected")
        row = await conn.fetchrow(q.OPEN_SESSION, self._grace)
        assert row is not None
        self._session = (row[0], uuid.UUID(str(row[1])), row[2])
        self.stats.sessions_opened += 1
        return str(row[2])

    def _lose_session(self, why: str) -> None:
        self.stats.sessions_lost += 1
        self._session = None
        self._dispatch.broadcast(Event(LOST, why))
        self._on_session_lost(why)

    async def _listening(self) -> None:
        if self._generation > 0:
            self.stats.reconnects += 1
            self._dispatch.broadcast(Event(RECHECK))  # what was sent while we were away
        self._generation += 1
        self._last_error = None
        await self._signal()

    async def _serve(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_beat = next_heartbeat(loop.time(), self._heartbeat, None)
        while True:
            try:
                async with asyncio.timeout_at(next_beat):
                    await lost.wait()
                raise ConnectionError("the session connection was closed")
            except TimeoutError:
                expiry_in = await self._beat(conn) if len(self._dispatch) > 0 else None
                next_beat = next_heartbeat(loop.time(), self._heartbeat, expiry_in)

    async def _beat(self, conn: asyncpg.Connection) -> float | None:
        """Run the heartbeat; returns the seconds until the next expiry it knows of."""
        assert self._session is not None
        try:
            expiry_in = await conn.fetchval(q.HEARTBEAT, self._session[0], timeout=self._timeout)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != "GC007":
                raise
            self._lose_session(str(exc))
            raise SessionLostError(str(exc)) from exc  # reconnect and open a new session
        self.stats.heartbeats += 1
        return None if expiry_in is None else float(expiry_in)

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self.stats.notifications += 1
        if payload == PING:
            return
        parsed = parse_payload(str(payload))
        if parsed is not None:
            self._dispatch.deliver(parsed[0], parsed[1], time.monotonic())
