"""Riding through an outage: which ops are retried, how often, and for how long. Pure.

A lost connection or an unreachable server (DatabaseUnavailableError) is retried, first at
once (a pooled connection the server closed costs one retry on a fresh one), then with
backoff, until the caller's deadline. Only ops that are safe to repeat come here: the
engine's clean-ups (release, cancel, recheck) are idempotent, and an acquire whose answer was
lost is settled by its request id before it is tried again (``pggcl.core.acquiring``). A
client that has never reached its database does not wait for it (FirstContactError).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pggcl.core.ops import Flow, Op, Sleep
from pggcl.core.policy import Backoff
from pggcl.errors import DatabaseUnavailableError


class FirstContactError(DatabaseUnavailableError):
    """The database could not be reached by a client that never reached it: a wrong address,
    or a server that is not up, is said at once rather than waited out. Not retried."""


class Unreachable(DatabaseUnavailableError):
    """The database stayed unreachable until the deadline; ``seconds``: for how long."""

    def __init__(self, seconds: float, last: DatabaseUnavailableError) -> None:
        super().__init__(f"the database was unreachable for {seconds:.1f} s ({last})")
        self.seconds = seconds


def retrying(op: Op, until: float | None, clock: Callable[[], float]) -> Flow[Any]:
    """Yield ``op`` until it succeeds; while the database is unreachable, again after a pause,
    until ``until`` (clock seconds; None: no end). Raises :class:`Unreachable` past it."""
    backoff, attempt, since = Backoff(), 0, None
    while True:
        try:
            return (yield op)
        except FirstContactError:
            raise
        except DatabaseUnavailableError as exc:
            now = clock()
            since = now if since is None else since
            if until is not None and now >= until:
                raise Unreachable(now - since, exc) from exc
            if attempt > 0:
                pause = backoff.delay(attempt - 1)
                yield Sleep(pause if until is None else min(pause, until - now))
            attempt += 1
