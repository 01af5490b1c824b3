"""GENERATED from ``pggcl/client/pool_async.py`` by ``tools/async_to_sync.py``: do not
edit; change the async source (it says what this module is for) and run the tool.
"""

from __future__ import annotations

import time
from collections import deque

from pggcl.client._compat import Event, Lock
from pggcl.drivers.psycopg_driver import Connection, connect
from pggcl.errors import PoolTimeoutError


class Pool:
    def __init__(
        self, dsn: str, size: int, connect_timeout: float, pool_timeout: float, pooled: bool
    ) -> None:
        self._dsn, self._size, self._pooled = (dsn, size, pooled)
        self._connect_timeout, self._pool_timeout = (connect_timeout, pool_timeout)
        self._lock = Lock()
        self._idle: list[Connection] = []
        self._open = 0  # connections made and not dropped (idle or in use)
        self._waiting: deque[Event] = deque()  # callers waiting for a connection, in order
        self._closed = False
        self.connected_once = False  # a connection was ever made: the database exists

    def get(self) -> Connection:
        """An idle connection, or a new one while fewer than ``size`` are open; otherwise wait
        for one to be returned. Give it back with :meth:`put`."""
        deadline: float | None = None
        while True:
            with self._lock:
                while self._idle:
                    conn = self._idle.pop()
                    if conn.usable:
                        return conn
                    conn.terminate()  # the server closed it while it was idle
                    self._open -= 1
                if self._open < self._size:
                    self._open += 1
                    break
                turn = Event()
                self._waiting.append(turn)
            now = time.monotonic()
            if deadline is None:
                deadline = now + self._pool_timeout
            try:
                woken = turn.wait(max(0.0, deadline - now))
            except BaseException:
                self._withdraw(turn)
                raise
            if not woken:
                self._withdraw(turn)
                raise PoolTimeoutError(
                    f"all {self._size} pool connection(s) stayed busy for {self._pool_timeout} s; raise pool_size or pool_timeout"
                )
        try:
            conn = connect(self._dsn, self._connect_timeout, pooled=self._pooled)
            self.connected_once = True
            return conn
        except BaseException:
            self._dropped()
            raise

    def put(self, conn: Connection) -> None:
        """Take back a connection from :meth:`get`; a broken or busy one is dropped."""
        if self._closed or not conn.usable:
            conn.terminate()
            self._dropped()
            return
        with self._lock:
            self._idle.append(conn)
            self._wake_next()

    def _dropped(self) -> None:
        with self._lock:
            self._open -= 1
            self._wake_next()

    def _wake_next(self) -> None:
        if self._waiting:
            self._waiting.popleft().set()

    def _withdraw(self, turn: Event) -> None:
        with self._lock:
            if turn in self._waiting:
                self._waiting.remove(turn)
            elif turn.is_set():
                self._wake_next()  # our turn came as we gave up: pass it on

    def close(self, timeout: float) -> None:
        """Close the idle connections (those in use are dropped when they come back)."""
        with self._lock:
            self._closed = True
            idle, self._idle = (self._idle, [])
            self._open -= len(idle)
        for conn in idle:
            conn.close(timeout)
