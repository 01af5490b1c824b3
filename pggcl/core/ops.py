"""The operations a flow yields, and the shape of a flow. Pure: no driver, no I/O.

Every client operation is a generator (a *flow*, see :mod:`pggcl.core.flows`) that yields ops
and receives their results:

- :class:`Call` -> the result rows (tuples) of one autocommit statement on a pool connection;
- :class:`Wait` -> the next :class:`~pggcl.core.notifications.Event` for a waiter, or None on
  timeout.
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


Op = Call | Wait
T = TypeVar("T")
Flow = Generator[Op, Any, T]
