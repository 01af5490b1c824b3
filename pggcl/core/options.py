"""What the sync and async clients share besides the core: options, holder text, the DSN."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from pggcl.errors import ConfigurationError, ValidationError

log = logging.getLogger("pggcl")

DSN_ENV = "PGGCL_DSN"
SESSION_DSN_ENV = "PGGCL_SESSION_DSN"


# Bounds of idle_session_timeout_seconds: the keepalive runs every third of it, on the worker's
# one-second tick; and it must fit PostgreSQL's setting (milliseconds in an int4).
MIN_IDLE_SESSION_TIMEOUT = 3.0
MAX_IDLE_SESSION_TIMEOUT = 86400.0


@dataclass(frozen=True, slots=True)
class Options:
    """Client options. All durations in seconds.

    ``pool_size``: connections for acquire/release/management (the session connection is extra).
    0: no pool; the calls take turns on the session connection, so the client uses one
    connection in all (for a process that makes one call at a time: a single-threaded holder).
    ``grace_seconds``: how long this client's leases survive a lost session connection.
    ``heartbeat_seconds``: safety-net interval while this process has waiters.
    ``connect_timeout``: how long to wait for a connection, or for the first session.
    ``pool_timeout``: how long a call waits for a free pool connection before it raises
    PoolTimeoutError.
    ``retry_seconds``: how long a release, or a read of limits, holders and queues, keeps
    retrying while the database is unreachable (an acquire retries until its own timeout).
    ``idle_session_timeout_seconds``: set PostgreSQL's ``idle_session_timeout`` on the session
    connection: the server ends it after this long without a statement from the client. A
    client that vanished while its server session stays open (behind PgBouncer in session mode
    without a reset query) is then seen gone after this plus its grace. None (the default):
    the server's own setting applies. Either way the client sends a cheap statement every third
    of the timeout in effect while it has nothing else to say, so a live client's connection is
    never ended for idling; but a process frozen longer than it (stopped, or an event loop
    blocked) loses its session connection, and its leases after the grace.
    ``session_dsn``: a direct connection for the session connection, when the calls go
    through a transaction pooler (PgBouncer) at the client's DSN; the pool then uses no named
    prepared statements.
    """

    pool_size: int = 10
    grace_seconds: float = 5.0
    heartbeat_seconds: float = 2.0
    connect_timeout: float = 10.0
    pool_timeout: float = 30.0
    retry_seconds: float = 30.0
    session_dsn: str | None = None
    idle_session_timeout_seconds: float | None = None

    def __post_init__(self) -> None:
        size = self.pool_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValidationError(
                f"invalid pool_size: {size!r}; it must be a whole number of connections, 0 or "
                "more (0: the calls share the session connection)",
                field="pool_size",
            )
        if size == 0 and self.session_dsn is not None:
            raise ValidationError(
                "invalid pool_size: 0 runs the calls on the session connection, but with "
                "session_dsn they go through the pooler at the client's DSN: give pool_size 1 "
                "or more",
                field="pool_size",
            )
        idle = self.idle_session_timeout_seconds
        if idle is not None and (
            isinstance(idle, bool)
            or not isinstance(idle, int | float)
            or not MIN_IDLE_SESSION_TIMEOUT <= idle <= MAX_IDLE_SESSION_TIMEOUT
        ):
            raise ValidationError(
                f"invalid idle_session_timeout_seconds: {idle!r}; it must be a number of "
                f"seconds from {MIN_IDLE_SESSION_TIMEOUT:g} to {MAX_IDLE_SESSION_TIMEOUT:g}, or "
                "None (the server's setting)",
                field="idle_session_timeout_seconds",
            )


def env_dsn() -> str:
    """The DSN of the module-level functions, from PGGCL_DSN."""
    dsn = os.environ.get(DSN_ENV)
    if not dsn:
        raise ConfigurationError(
            f"{DSN_ENV} is not set: set it to a PostgreSQL DSN (postgresql://user@host/db), "
            "or use pggcl.Client(dsn) / pggcl.AsyncClient(dsn)"
        )
    return dsn


def env_session_dsn() -> str | None:
    """The direct DSN for the session connection of the module-level functions and the CLI,
    from PGGCL_SESSION_DSN, when PGGCL_DSN is a transaction pooler's (see Options)."""
    return os.environ.get(SESSION_DSN_ENV) or None


# This process's pid and ``host:pid``, read once and again in a child after fork(): every
# acquire reads them, and os.getpid() and gethostname() are system calls.
_pid = os.getpid()
_host_pid = f"{socket.gethostname()}:{_pid}"


def _forked() -> None:
    global _pid, _host_pid
    _pid = os.getpid()
    _host_pid = f"{socket.gethostname()}:{_pid}"


os.register_at_fork(after_in_child=_forked)


def current_pid() -> int:
    """os.getpid(), without the system call."""
    return _pid


def default_holder(worker: str | None) -> str:
    """``host:pid`` plus the thread or task name: who holds a lease, as shown by pggcl.holders."""
    return f"{_host_pid}:{worker}" if worker else _host_pid


class HeldLeases:
    """Leases this client holds now, so that a lost session can be reported to the holders."""

    def __init__(self) -> None:
        self.count = 0

    def session_lost(self, why: str) -> None:
        if self.count:
            log.error(
                "pggcl session lost (%s): the %d lease(s) this process holds are gone and their "
                "slots may be given to others",
                why,
                self.count,
            )
