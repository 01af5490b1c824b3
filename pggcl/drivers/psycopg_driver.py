"""psycopg 3 primitives for the sync client (see :mod:`pggcl.drivers`).

psycopg must be >= 3.2.10: earlier releases lose or leak notifications.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import Any

import psycopg

from pggcl.core.failures import translate_error
from pggcl.core.ops import Row
from pggcl.core.queries import listen
from pggcl.errors import PggclError

_IDLE = psycopg.pq.TransactionStatus.IDLE


def _error(exc: psycopg.Error, conn: psycopg.Connection[Any] | None) -> PggclError:
    lost = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and (
        conn is None or conn.closed or conn.broken
    )
    # The primary message alone: str(exc) adds the statement's LINE/caret context.
    diag = exc.diag
    return translate_error(
        exc.sqlstate, diag.message_primary or str(exc), lost, field=diag.column_name
    )


def connect(dsn: str, timeout: float, pooled: bool = False) -> Connection:
    """A new autocommit connection, within ``timeout`` seconds (libpq counts whole seconds).
    ``pooled``: through a transaction pooler, which cannot keep named prepared statements."""
    try:
        # TCP keepalives: a peer that vanished without closing the connection (a dead machine,
        # a dropped NAT entry) is noticed in about 11 s.
        conn = psycopg.Connection.connect(
            dsn,
            autocommit=True,
            connect_timeout=max(1, round(timeout)),
            cursor_factory=psycopg.RawCursor,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
        )
        if pooled:
            conn.prepare_threshold = None
    except psycopg.Error as exc:
        raise _error(exc, None) from exc
    return Connection(conn)


def _ignore(payload: str) -> None:
    pass


class Connection:
    """One psycopg connection and its one cursor: a cursor made per statement costs about as
    much client time as the rest of the call (measured by bench/, workload A)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._cursor: psycopg.RawCursor[Any] = psycopg.RawCursor(conn)
        self._deliver: Callable[[str], None] = _ignore
        self._listening = False

    @property
    def usable(self) -> bool:
        """Open and idle, as far as the client can tell without a round trip. An idle pool
        connection has nothing to read unless the server closed it (a restart,
        pg_terminate_backend, idle_session_timeout): then it is not usable either."""
        conn = self._conn
        if conn.closed or conn.broken or conn.pgconn.transaction_status != _IDLE:
            return False
        return not select.select([conn.pgconn.socket], [], [], 0)[0]

    @property
    def server_version_num(self) -> int:
        """The server's version as `server_version_num` (150018), known since connecting."""
        return self._conn.info.server_version

    def execute(self, sql: str, args: tuple[Any, ...]) -> list[Row]:
        """Run one statement; its rows as tuples."""
        try:
            self._cursor.execute(sql, args)
            return self._cursor.fetchall()
        except psycopg.Error as exc:
            raise _error(exc, self._conn) from exc

    def listen(self, channel: str, deliver: Callable[[str], None]) -> None:
        """Receive the notifications of ``channel``: each payload goes to ``deliver`` as it is
        read, by :meth:`pump` or, while another thread runs a statement here (calls may share
        the session connection), by psycopg in that thread."""
        self._deliver = deliver
        if not self._listening:
            self._conn.add_notify_handler(self._on_notify)
            self._listening = True
        try:
            self._conn.execute(listen(channel))
        except psycopg.Error as exc:
            raise _error(exc, self._conn) from exc

    def _on_notify(self, notify: psycopg.Notify) -> None:
        self._deliver(notify.payload)

    def pump(self, timeout: float) -> None:
        """Read and deliver what arrives until a notification has been delivered or ``timeout``
        seconds have passed. Raises DatabaseUnavailableError when the connection is lost.
        Waits without holding the connection (psycopg's notifies() would hold its lock
        throughout), so that other threads may run statements on it meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                if select.select([self._conn.fileno()], [], [], remaining)[0] and self._read():
                    return
            except psycopg.Error as exc:
                raise translate_error(exc.sqlstate, str(exc), True) from exc
            except (OSError, ValueError) as exc:  # closed under us
                lost = translate_error(None, f"the session connection was closed: {exc}", True)
                raise lost from exc

    def _read(self) -> bool:
        """Take in what the server sent and deliver the notifications among it (nothing else
        arrives on an idle connection but an error that ends it); whether there were any."""
        with self._conn.lock:
            pgconn = self._conn.pgconn
            pgconn.consume_input()
            encoding = self._conn.info.encoding
            payloads = []
            while notify := pgconn.notifies():
                payloads.append(notify.extra.decode(encoding))
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise translate_error(None, "the session connection was closed", True)
        for payload in payloads:
            self._deliver(payload)
        return bool(payloads)

    def close(self, timeout: float) -> None:
        """Close the connection (``timeout`` is for the async twin: closing here does not wait)."""
        self._conn.close()

    def terminate(self) -> None:
        """Drop the connection at once."""
        self._conn.close()
