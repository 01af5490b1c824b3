"""The operations a flow yields, and the shape of a flow. Pure: no driver, no I/O.

Every client operation is a generator (a *flow*, see :mod:`pggcl.core.flows`) that yields ops
and receives their results:

- :class:`Call` -> the result rows (tuples) of one autocommit statement on a pool connection;
- :class:`Wait` -> the next :class:`~pggcl.core.notifications.Event` for a waiter, or None on
  timeout;
- :class:`Sleep` -> None, after a pause; :class:`OpenSession` -> the session id;
- :class:`Defer` -> None at once: the calls run later, on the session connection.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Call:
    """Run ``sql`` (``$n`` placeholders) with ``args``; the result is the list of rows."""

    sql: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait at most ``timeout`` seconds (None: forever) for the next event of a waiter."""

    waiter_id: int
    timeout: float | None


@dataclass(frozen=True, slots=True)
class Sleep:
    """Sleep ``seconds`` (between two attempts while the database is unreachable)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class OpenSession:
    """The id of the client's session, opening it first if needed."""


@dataclass(frozen=True, slots=True)
class Defer:
    """Leave ``calls`` (idempotent clean-ups) to the session's worker, which runs them, in
    order, as soon as the database answers it: for a flow that cannot wait any longer."""

    calls: tuple[Call, ...]


Op = Call | Wait | Sleep | OpenSession | Defer
T = TypeVar("T")
Flow = Generator[Op, Any, T]
