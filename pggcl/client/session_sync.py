"""The sync port: psycopg 3 connections, a tiny pool and the listener thread.

It carries out what ``pggcl._core`` decides and nothing more. The listener is one daemon thread
owning the session connection: it opens (or resumes) the session, LISTENs on its channel,
routes notifications to waiting threads, runs the heartbeat while this process has waiters,
and reconnects with backoff when the connection drops.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import psycopg

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

_IDLE = psycopg.pq.TransactionStatus.IDLE


def _connect(dsn: str, timeout: float) -> psycopg.Connection[Any]:
    # TCP keepalives: a peer that vanished without closing the connection (a dead machine, a
    # dropped NAT entry) is noticed in about 11 s, and the session connection is re-made.
    return psycopg.Connection.connect(
        dsn,
        autocommit=True,
        connect_timeout=max(1, round(timeout)),
        cursor_factory=psycopg.RawCursor,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
    )


def _translate(exc: psycopg.Error, conn: psycopg.Connection[Any] | None) -> PggclError:
    lost = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and (
        conn is None or conn.closed or conn.broken
    )
    # The primary message alone: str(exc) adds the statement's LINE/caret context.
    return translate_error(exc.sqlstate, exc.diag.message_primary or str(exc), lost)


def _session_error(exc: BaseException, conn: psycopg.Connection[Any] | None) -> PggclError:
    if isinstance(exc, PggclError):
        return exc
    if isinstance(exc, psycopg.Error):
        return _translate(exc, conn)
    return translate_error(None, str(exc), True)


class _Pool:
    """At most ``size`` autocommit connections, made on demand, dropped when broken.

    Each connection keeps one cursor: a cursor made per statement costs about as much client
    time as the rest of the call (measured by bench/, workload A). Taking and returning a
    connection is one uncontended lock each.
    """

    def __init__(self, dsn: str, size: int, connect_timeout: float) -> None:
        self._dsn, self._timeout, self._size = dsn, connect_timeout, size
        self._idle: list[psycopg.RawCursor[Any]] = []
        self._open = 0  # connections made and not dropped (idle or in use)
        self._waiting = 0  # threads waiting for a connection
        self._cond = threading.Condition(threading.Lock())

    def get(self) -> psycopg.RawCursor[Any]:
        """A cursor of an idle connection, or of a new one while fewer than ``size`` are open;
        blocks until one is returned otherwise. Give it back with :meth:`put`."""
        with self._cond:
            while not self._idle and self._open >= self._size:
                self._waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
            if self._idle:
                return self._idle.pop()
            self._open += 1
        try:
            return psycopg.RawCursor(_connect(self._dsn, self._timeout))
        except BaseException as exc:
            self._dropped()
            if isinstance(exc, psycopg.Error):
                raise _translate(exc, None) from exc
            raise

    def put(self, cur: psycopg.RawCursor[Any]) -> None:
        conn = cur.connection
        if conn.closed or conn.broken or conn.pgconn.transaction_status != _IDLE:
            conn.close()
            self._dropped()
            return
        with self._cond:
            self._idle.append(cur)
            if self._waiting:
                self._cond.notify()

    def _dropped(self) -> None:
        with self._cond:
            self._open -= 1
            if self._waiting:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for cur in idle:
            cur.connection.close()


class _Box:
    """A waiting thread's mailbox. A SimpleQueue: the put wakes the waiting thread, which then
    needs no lock the listener might still hold (a Condition's, here, cost a second wake-up)."""

    def __init__(self) -> None:
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def push(self, event: Event) -> None:
        self._events.put(event)

    def get(self, timeout: float | None) -> Event | None:
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None


class PsycopgPort:
    """Pool, listener and dispatcher of one sync client (one per process and DSN)."""

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
        self._lock = threading.Lock()  # guards the dispatcher, the session and the thread
        self._dispatch: Dispatcher[_Box] = Dispatcher()
        self._changed = threading.Condition(self._lock)
        self._session: tuple[int, uuid.UUID, str] | None = None
        self._generation = 0  # grows each time the listener (re)starts listening
        self._last_error: PggclError | None = None
        self._failures = 0  # connection attempts of the listener that failed
        self._thread: threading.Thread | None = None
        self._session_conn: psycopg.Connection[Any] | None = None
        self._stopping = threading.Event()
        # When this process went from no waiters to some: the heartbeat counts from there, not
        # from when the listener (which looks at most once a second while idle) noticed.
        self._waiting_since = 0.0

    # --- SyncPort ---------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._dispatch.epoch

    def call(self, sql: str, args: tuple[Any, ...]) -> list[Row]:
        cur = self._pool.get()
        try:
            cur.execute(sql, args)
            return cur.fetchall()
        except psycopg.Error as exc:
            raise _translate(exc, cur.connection) from exc
        finally:
            self.stats.calls += 1
            self._pool.put(cur)

    def wait(self, waiter_id: int, timeout: float | None, epoch: int) -> Event | None:
        with self._lock:
            box = self._dispatch.box(waiter_id)
            if box is None:
                box = _Box()
                now = time.monotonic()
                if len(self._dispatch) == 0:
                    self._waiting_since = now
                self._dispatch.register(waiter_id, box, epoch, now)
        return box.get(timeout)

    def forget(self, waiter_id: int) -> None:
        with self._lock:
            self._dispatch.unregister(waiter_id)

    # --- Session ----------------------------------------------------------------------------

    def session_id(self) -> int:
        """The session id, starting the listener on first use; waits for the first session."""
        with self._lock:
            if self._thread is None:
                self._stopping.clear()
                self._thread = threading.Thread(
                    target=self._listen, name="pggcl-listener", daemon=True
                )
                self._thread.start()
            if self._session is None:
                failures = self._failures
                self._changed.wait_for(
                    lambda: self._session is not None or self._failures > failures, self._timeout
                )
            if self._session is None:
                raise session_failure(self._last_error)
            return self._session[0]

    def wait_listening(self, after: int, timeout: float) -> int:
        """Block until the listener has (re)started listening more than ``after`` times."""
        with self._lock:
            if not self._changed.wait_for(lambda: self._generation > after, timeout):
                raise TimeoutError(f"the listener did not listen again within {timeout} s")
            return self._generation

    def ping(self) -> None:
        """Wake the listener by notifying our own channel."""
        if self._session is not None:
            self.call(q.NOTIFY, (self._session[2], PING))

    def close(self) -> None:
        """Stop the listener (closing the session: its leases are released) and the pool."""
        thread = self._thread
        if thread is not None:
            self._stopping.set()
            with suppress(PggclError):
                self.ping()
            thread.join(self._timeout + 2)
        self._pool.close()

    # --- The listener thread ----------------------------------------------------------------

    def _listen(self) -> None:
        backoff, attempt = Backoff(), 0
        while not self._stopping.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = _connect(self._dsn, self._timeout)
                self._session_conn = conn
                self.stats.connects += 1
                conn.execute(q.KEEPALIVES)
                channel = self._take_session(conn)
                assert self._session is not None
                kept = conn.execute(q.SESSION_SETTING).fetchone()
                check_session_kept(self._session[0], kept[0] if kept else None)
                conn.execute(q.listen(channel))
                attempt = 0
                self._listening()
                self._serve(conn)
            except (psycopg.Error, OSError, PggclError) as exc:
                if self._stopping.is_set():
                    break
                error = _session_error(exc, conn)
                with self._lock:
                    self._last_error = error
                    self._failures += 1
                    self._changed.notify_all()
                log.warning(reconnect_warning(self._generation > 0, error))
                self._stopping.wait(backoff.delay(attempt))
                attempt += 1
            finally:
                if conn is not None:
                    self._finish(conn)

    def _finish(self, conn: psycopg.Connection[Any]) -> None:
        if self._stopping.is_set() and not (conn.closed or conn.broken):
            with suppress(psycopg.Error):
                conn.execute(q.CLOSE_SESSION)
            with self._lock:
                self._session = None
        conn.close()
        self._session_conn = None

    def _take_session(self, conn: psycopg.Connection[Any]) -> str:
        """Resume our session on a new connection, or open one; returns the channel."""
        if self._session is not None:
            session_id, token, channel = self._session
            deadline = time.monotonic() + self._grace + self._timeout
            while True:
                try:
                    row = conn.execute(q.RESUME_SESSION, (session_id, token)).fetchone()
                    resumed = bool(row and row[0])
                    break
                except psycopg.Error as exc:
                    # GC008: the old connection still holds the session; it goes away soon.
                    if exc.sqlstate != "GC008" or time.monotonic() > deadline:
                        raise
                    self._stopping.wait(0.05)
            if resumed:
                return channel
            self._lose_session(f"session {session_id} was reclaimed while disconnected")
        row = conn.execute(q.OPEN_SESSION, (self._grace,)).fetchone()
        assert row is not None
        with self._lock:
            self._session = (row[0], row[1], row[2])
        self.stats.sessions_opened += 1
        return str(row[2])

    def _lose_session(self, why: str) -> None:
        self.stats.sessions_lost += 1
        with self._lock:
            self._session = None
            self._dispatch.broadcast(Event(LOST, why))
        self._on_session_lost(why)

    def _listening(self) -> None:
        with self._lock:
            if self._generation > 0:
                self.stats.reconnects += 1
                self._dispatch.broadcast(Event(RECHECK))  # what was sent while we were away
            self._generation += 1
            self._last_error = None
            self._changed.notify_all()

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        next_beat: float | None = None
        while not self._stopping.is_set():
            now = time.monotonic()
            with self._lock:
                waiting = len(self._dispatch) > 0
            if not waiting:
                next_beat = None
            elif next_beat is None:
                next_beat = min(now, self._waiting_since) + self._heartbeat
            elif now >= next_beat:
                next_beat = next_heartbeat(now, self._heartbeat, self._beat(conn))
            tick = 1.0 if next_beat is None else min(1.0, max(0.0, next_beat - now))
            for notify in conn.notifies(timeout=tick):
                self._deliver(notify.payload)
                if self._stopping.is_set():
                    return

    def _beat(self, conn: psycopg.Connection[Any]) -> float | None:
        """Run the heartbeat; returns the seconds until the next expiry it knows of."""
        assert self._session is not None
        try:
            row = conn.execute(q.HEARTBEAT, (self._session[0],)).fetchone()
        except psycopg.Error as exc:
            if exc.sqlstate != "GC007":
                raise
            self._lose_session(str(exc))
            raise SessionLostError(str(exc)) from exc  # reconnect and open a new session
        self.stats.heartbeats += 1
        return None if row is None or row[0] is None else float(row[0])

    def _deliver(self, payload: str) -> None:
        self.stats.notifications += 1
        parsed = parse_payload(payload)
        if parsed is not None:
            with self._lock:
                self._dispatch.deliver(parsed[0], parsed[1], time.monotonic())
