"""GENERATED from ``pggcl/client/session_async.py`` by ``tools/async_to_sync.py``: do not
edit; change the async source (it says what this module is for) and run the tool.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from pggcl.client._compat import Event, Lock, Mailbox, Signal, Turn, Worker, cancel, join, spawn
from pggcl.core import queries as q
from pggcl.core.notifications import CLOSED, LOST, RECHECK, Dispatcher, parse_payload
from pggcl.core.notifications import Event as Notice
from pggcl.core.ops import Call, Row
from pggcl.core.policy import (
    Backoff,
    Stats,
    check_fresh_connection,
    check_session_kept,
    keepalive_interval,
    next_heartbeat,
    reconnect_warning,
    session_failure,
)
from pggcl.core.versions import check_server_version
from pggcl.drivers.psycopg_driver import Connection, connect
from pggcl.errors import ConfigurationError, DatabaseUnavailableError, PggclError, SessionLostError

log = logging.getLogger("pggcl")
# How often the worker looks up while idle: to start the heartbeat once waiters appear, and to
# notice that it is asked to stop. A timer, not a query.
_IDLE_TICK = 1.0
# How long to wait between attempts to resume a session the old connection still holds.
_RESUME_RETRY = 0.05


def _unexpected(exc: Exception) -> PggclError:
    """A driver's error that no rule names (a protocol state error after a lost connection,
    say): the worker treats it as a lost connection and reconnects, rather than dying."""
    return DatabaseUnavailableError(f"the session connection failed: {exc!r}")


class Session:
    def __init__(
        self,
        dsn: str,
        *,
        grace_seconds: float,
        heartbeat_seconds: float,
        idle_timeout: float | None,
        connect_timeout: float,
        stats: Stats,
        on_session_lost: Callable[[str], None],
    ) -> None:
        self._dsn = dsn
        self._grace, self._heartbeat = (grace_seconds, heartbeat_seconds)
        self._idle_timeout = idle_timeout  # to set on the connection; None: the server's
        self._keepalive_every: float | None = None  # a third of the idle timeout in effect
        self._last_statement = 0.0  # monotonic: the worker's or a shared call's last statement
        self._timeout = connect_timeout
        self._stats = stats
        self._on_session_lost = on_session_lost
        self._lock = Lock()  # guards the dispatcher and the fields below
        self._dispatch: Dispatcher[Mailbox] = Dispatcher()
        self._session: tuple[int, uuid.UUID, str] | None = None  # id, token, channel
        self._generation = 0  # grows each time the worker (re)starts listening
        self._changed = Signal()  # the session, the generation or the failures changed
        self._failures = 0  # connection attempts of the worker that failed
        self._last_error: PggclError | None = None
        self._fatal: PggclError | None = None  # a misconfiguration: the worker has given up
        self._worker: Worker | None = None
        self._stopping = Event()
        # When this process went from no waiters to some: the heartbeat counts from there, not
        # from when the worker (which looks at most once a tick while idle) noticed.
        self._waiting_since = 0.0
        self._deferred: list[Call] = []  # clean-ups a flow could not wait for (see defer)
        # The connection while it listens, for calls that share it (a client without a pool),
        # which take turns with the worker's own statements.
        self._conn: Connection | None = None
        self._turn = Turn()

    @property
    def epoch(self) -> int:
        return self._dispatch.epoch

    @property
    def channel(self) -> str | None:
        session = self._session
        return None if session is None else session[2]

    # --- Waiters ----------------------------------------------------------------------------

    def wait(self, waiter_id: int, timeout: float | None, epoch: int) -> Notice | None:
        """The next event for ``waiter_id``, or None after ``timeout`` seconds."""
        with self._lock:
            box = self._dispatch.box(waiter_id)
            if box is None:
                box = Mailbox()
                now = time.monotonic()
                if len(self._dispatch) == 0:
                    self._waiting_since = now
                self._dispatch.register(waiter_id, box, epoch, now)
        return box.get(timeout)

    def forget(self, waiter_id: int) -> None:
        with self._lock:
            self._dispatch.unregister(waiter_id)

    def waiter_ids(self) -> list[int]:
        """The waiters of this process's requests that wait now, oldest first."""
        with self._lock:
            return self._dispatch.waiter_ids()

    def defer(self, calls: tuple[Call, ...]) -> None:
        """Run ``calls`` (idempotent clean-ups: cancel, release) on the session connection as
        soon as the database answers, in order."""
        with self._lock:
            self._deferred.extend(calls)

    def call(self, sql: str, args: tuple[Any, ...]) -> list[Row]:
        """Run one statement on the session connection, in turn with the worker's own (a
        client without a pool). While the worker reconnects, waits for it at most the connect
        timeout, then raises DatabaseUnavailableError (the caller's retry policy decides)."""
        conn = self._conn
        if conn is None:
            self.session_id()
            self._changed.wait_for(
                lambda: self._conn is not None or self._fatal is not None, self._timeout
            )
            if self._fatal is not None:
                raise self._fatal
            conn = self._conn
            if conn is None:
                raise session_failure(self._last_error)
        return self._in_turn(conn, sql, args)

    def _in_turn(self, conn: Connection, sql: str, args: tuple[Any, ...]) -> list[Row]:
        """A statement on the session connection, in turn with any other there."""
        with self._turn:
            self._last_statement = time.monotonic()
            return conn.execute(sql, args)

    # --- The session ------------------------------------------------------------------------

    def session_id(self) -> int:
        """The session id, starting the worker on first use; waits (at most the connect
        timeout) for the first session."""
        session = self._session
        if session is not None and self._worker is not None:
            return session[0]
        if self._fatal is not None:
            raise self._fatal
        with self._lock:
            if self._worker is None:
                self._stopping.clear()
                self._worker = spawn(self._run, "pggcl-session")
            failures = self._failures
        self._changed.wait_for(
            lambda: self._session is not None or self._failures != failures, self._timeout
        )
        session = self._session
        if self._fatal is not None:
            raise self._fatal
        if session is None:
            raise session_failure(self._last_error)
        return session[0]

    def wait_listening(self, after: int, timeout: float) -> int:
        """Wait until the worker has (re)started listening more than ``after`` times."""
        if not self._changed.wait_for(lambda: self._generation > after, timeout):
            raise TimeoutError(f"the session did not listen again within {timeout} s")
        return self._generation

    def stop(self) -> None:
        """Ask the worker to close the session (its leases are released) and end."""
        self._stopping.set()

    def join(self) -> None:
        """Wait for the worker to end after :meth:`stop` (it is woken by a ping on its channel),
        then tell every waiter that the client is closed (closing the session dequeued them)."""
        worker, self._worker = (self._worker, None)
        if worker is not None and (not join(worker, self._timeout + 2)):
            cancel(worker)
        with self._lock:
            self._dispatch.broadcast(Notice(CLOSED))

    # --- The worker -------------------------------------------------------------------------

    def _run(self) -> None:
        # Attempts come often enough to be back well within the grace period: after an outage
        # the server starts counting a session's grace the moment it sees it gone.
        backoff, attempt = (Backoff(cap=min(2.0, max(0.05, self._grace / 4))), 0)
        while not self._stopping.is_set():
            conn: Connection | None = None
            try:
                # No cached prepared statements: a pooler must be detected, not trip over them.
                conn = connect(self._dsn, self._timeout, pooled=True)
                self._stats.connects += 1
                check_server_version(conn.server_version_num)
                idle_ms = (
                    None if self._idle_timeout is None else str(round(self._idle_timeout * 1000.0))
                )
                ((idle, *_, setting),) = conn.execute(q.KEEPALIVES, (idle_ms,))
                self._keepalive_every = keepalive_interval(float(idle))
                check_fresh_connection(setting)
                session_id, channel = self._take_session(conn)
                conn.listen(channel, self._deliver)
                # After the LISTEN: the check also shows that it ran on the session's server
                # session, and pg_stat_activity shows this statement, not the secret channel.
                ((kept,),) = conn.execute(q.SESSION_SETTING, ())
                check_session_kept(session_id, kept)
                self._last_statement = time.monotonic()
                attempt = 0
                self._conn = conn
                self._listening()
                self._serve(conn)
            except Exception as exc:
                if self._stopping.is_set():
                    break
                error = exc if isinstance(exc, PggclError) else _unexpected(exc)
                with self._lock:
                    self._last_error = error
                    self._failures += 1
                    if isinstance(error, ConfigurationError):
                        self._fatal = error  # retrying cannot help: every caller is told
                self._changed.notify()
                if self._fatal is not None:
                    log.error("pggcl cannot keep a session: %s", error)
                    if conn is not None:
                        self._abandon_session(conn)
                    return
                log.warning(reconnect_warning(self._generation > 0, error))
                self._stopping.wait(backoff.delay(attempt))
                attempt += 1
            finally:
                self._conn = None
                if conn is not None:
                    self._finish(conn)

    def _abandon_session(self, conn: Connection) -> None:
        """Close the session this worker opened on a connection it cannot keep (by id and
        token: behind a pooler, this connection's server session may be another's)."""
        with self._lock:
            session, self._session = (self._session, None)
        if session is not None and conn.usable:
            with suppress(PggclError):
                self._in_turn(conn, q.CLOSE_SESSION_OF, (session[0], session[1]))

    def _finish(self, conn: Connection) -> None:
        with self._turn:  # a shared call still running ends first
            if self._stopping.is_set() and conn.usable:
                with suppress(PggclError):
                    conn.execute(q.CLOSE_SESSION, ())
                with self._lock:
                    self._session = None
            conn.close(self._timeout)

    def _take_session(self, conn: Connection) -> tuple[int, str]:
        """Resume our session on a new connection, or open one; its id and channel."""
        if self._session is not None:
            session_id, token, channel = self._session
            deadline = time.monotonic() + self._grace + self._timeout
            while True:
                try:
                    ((resumed,),) = conn.execute(q.RESUME_SESSION, (session_id, token))
                    break
                except SessionLostError as exc:
                    # GC008: the old connection still holds the session; it goes away soon.
                    if exc.sqlstate != "GC008" or time.monotonic() > deadline:
                        raise
                    self._stopping.wait(_RESUME_RETRY)
            if resumed:
                return (session_id, channel)
            self._lose_session(f"session {session_id} was reclaimed while disconnected")
        ((carried, session_id, token, channel),) = conn.execute(q.OPEN_SESSION, (self._grace,))
        check_fresh_connection(carried)
        with self._lock:
            self._session = (session_id, uuid.UUID(str(token)), channel)
        self._stats.sessions_opened += 1
        return (session_id, channel)

    def _lose_session(self, why: str) -> None:
        self._stats.sessions_lost += 1
        with self._lock:
            self._session = None
            self._dispatch.broadcast(Notice(LOST, why))
        self._on_session_lost(why)

    def _listening(self) -> None:
        with self._lock:
            if self._generation > 0:
                self._stats.reconnects += 1
                self._dispatch.broadcast(Notice(RECHECK))  # what was sent while we were away
            self._generation += 1
            self._last_error = None
        self._changed.notify()

    def _serve(self, conn: Connection) -> None:
        next_beat: float | None = None
        while not self._stopping.is_set():
            if self._deferred:
                self._run_deferred(conn)
            now = time.monotonic()
            if len(self._dispatch) == 0:
                next_beat = None
            elif next_beat is None:
                next_beat = min(now, self._waiting_since) + self._heartbeat
            elif now >= next_beat:
                next_beat = next_heartbeat(now, self._heartbeat, self._beat(conn))
            tick = _IDLE_TICK if next_beat is None else min(_IDLE_TICK, max(0.0, next_beat - now))
            if self._keepalive_every is not None:
                keepalive_in = self._last_statement + self._keepalive_every - now
                if keepalive_in <= 0:
                    self._keepalive(conn)
                    keepalive_in = self._keepalive_every
                tick = min(tick, keepalive_in)
            conn.pump(tick)  # what arrives meanwhile goes to _deliver at once

    def _run_deferred(self, conn: Connection) -> None:
        while self._deferred:
            call = self._deferred[0]
            try:
                self._in_turn(conn, call.sql, call.args)
            except DatabaseUnavailableError:
                raise  # kept: run again after the reconnect
            except PggclError as exc:
                log.error("pggcl could not clean up (%s): %s", call.sql, exc)
            with self._lock:
                self._deferred.pop(0)

    def _beat(self, conn: Connection) -> float | None:
        """Run the heartbeat; the seconds until the next expiry it knows of."""
        assert self._session is not None
        try:
            ((expiry_in, setting),) = self._in_turn(conn, q.HEARTBEAT, (self._session[0],))
        except SessionLostError as exc:
            self._lose_session(str(exc))
            raise  # reconnect and open a new session
        check_session_kept(self._session[0], setting)
        self._stats.heartbeats += 1
        return None if expiry_in is None else float(expiry_in)

    def _keepalive(self, conn: Connection) -> None:
        """A statement on a quiet session connection, before the server's idle timeout ends
        it; it also checks that the server session is still ours."""
        assert self._session is not None
        ((setting,),) = self._in_turn(conn, q.SESSION_SETTING, ())
        check_session_kept(self._session[0], setting)
        self._stats.keepalives += 1

    def _deliver(self, payload: str) -> None:
        self._stats.notifications += 1
        parsed = parse_payload(payload)
        if parsed is not None:
            with self._lock:
                self._dispatch.deliver(parsed[0], parsed[1], time.monotonic())
