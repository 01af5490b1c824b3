"""How the clients treat their connections, decided once for both worlds. Pure.

Reconnect backoff, heartbeat scheduling, what a failed session attempt tells a caller, and the
counters a client keeps. The I/O layer (``pggcl.client``) asks; this module answers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from pggcl.errors import ConfigurationError, DatabaseUnavailableError, PggclError


@dataclass(slots=True)
class Backoff:
    """Delays between reconnect attempts, in seconds: exponential, capped, with full jitter."""

    initial: float = 0.05
    cap: float = 2.0
    rand: Callable[[], float] = random.random

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (0 is the first retry)."""
        return min(self.cap, self.initial * 2.0 ** min(attempt, 16)) * (0.5 + self.rand() / 2)


@dataclass(slots=True)
class Stats:
    """Counters a client keeps; tests use them to prove what happened instead of timing it."""

    calls: int = 0
    notifications: int = 0
    heartbeats: int = 0
    keepalives: int = 0
    connects: int = 0
    reconnects: int = 0
    sessions_opened: int = 0
    sessions_lost: int = 0


def next_heartbeat(now: float, interval: float, expiry_in: float | None) -> float:
    """When to run the next heartbeat (monotonic seconds): every ``interval`` seconds while this
    process has waiters, and sooner when the last heartbeat named the next expiry on their limits
    (a dead holder's grace period or a TTL ending), just after it, so a slot is reclaimed the
    moment it may be."""
    if expiry_in is None:
        return now + interval
    return now + min(interval, expiry_in + 0.01)


def keepalive_interval(idle_session_timeout: float) -> float | None:
    """How often a quiet session connection sends a statement, given the server's
    ``idle_session_timeout`` in effect on it (seconds, 0: none): a third of it, so that a live
    client's connection is never ended for idling."""
    return idle_session_timeout / 3 if idle_session_timeout > 0 else None


def session_failure(last_error: PggclError | None) -> PggclError:
    """The error for a caller who needs a session that could not be opened: the same kind as
    the last failure (unreachable, schema missing, ...), saying what could not be done."""
    if last_error is None:
        return DatabaseUnavailableError("could not open a session: the database did not answer")
    return type(last_error)(f"could not open a session: {last_error}")


def reconnect_warning(ever_listened: bool, error: PggclError) -> str:
    """The log line for a failed attempt of the session connection, on one line."""
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    if ever_listened:
        return f"pggcl session connection lost, reconnecting: {first_line}"
    return f"pggcl could not open its session connection, retrying: {first_line}"


_POOLER_FIX = (
    "give pggcl a direct connection for its session (session_dsn=..., or PGGCL_SESSION_DSN)"
    " and send only its calls through the pooler, or use PgBouncer in session pooling mode"
    " with server_reset_query = DISCARD ALL"
)


def check_fresh_connection(setting: str | None) -> None:
    """A new session connection must reach a server session of its own. One that already
    carries a pggcl session was used by another client before: a pooler hands server
    connections from client to client (PgBouncer in transaction or statement mode, or in
    session mode without a reset), and the session, its LISTEN and its liveness lock would be
    shared."""
    if setting:
        raise ConfigurationError(
            f"the session connection reached a server session that already carries pggcl "
            f"session {setting}: a connection pooler is between pggcl and PostgreSQL; "
            + _POOLER_FIX
        )


def check_session_kept(session_id: int, setting: str | None) -> None:
    """The session connection must keep its server session from one statement to the next: the
    LISTEN and the liveness lock live there. Behind PgBouncer in transaction (or statement)
    pooling mode it does not, and the engine's per-connection setting shows it."""
    if setting != str(session_id):
        raise ConfigurationError(
            "the session connection does not keep its PostgreSQL session between statements "
            "(a connection pooler in transaction or statement mode?); " + _POOLER_FIX
        )
