"""What a caller asks for: a checked request, and the contention hint. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pggcl.core import values
from pggcl.errors import ValidationError

Mode = Literal["concurrency", "rate_limit"]

_LONGEST_TTL: Final = 315_360_000.0  # the engine's bound on ttl_seconds (10 years)
_LONGEST_HEAD_START: Final = 86_400.0  # the engine's bound on priority (a day either way)


@dataclass(frozen=True, slots=True)
class Request:
    """A request for ``occupy`` slots on every limit in ``names``; ``timeout`` in seconds."""

    names: tuple[str, ...]
    occupy: int
    mode: Mode
    timeout: float | None
    strict: bool
    holder: str | None
    priority: float = 0.0  # a head start in seconds: served as if it had come that much earlier


def make_request(
    names: str | Sequence[str],
    occupy: int,
    mode: Mode,
    timeout_seconds: float | None,
    strict: bool,
    holder: str | None,
    priority: float = 0.0,
) -> Request:
    """Normalise and check the arguments of ``concurrency()`` / ``rate_limit()``."""
    name_tuple = (names,) if isinstance(names, str) else tuple(names)
    if not all(isinstance(n, str) for n in name_tuple):
        raise ValidationError(
            f"invalid names: {names!r}; give a name or a list of names", field="names"
        )
    for name in name_tuple:
        values.text("names", name)
    if values.whole("occupy", occupy, 1) < 1:
        raise ValidationError(
            f"invalid occupy: {occupy!r}; it must be a whole number of slots, 1 or more",
            field="occupy",
        )
    if timeout_seconds is not None and not (0 <= timeout_seconds < float("inf")):
        raise ValidationError(
            f"invalid timeout_seconds: {timeout_seconds!r}; it must be None or a finite number of "
            "seconds, 0 or more"
        )
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int | float)
        or not -_LONGEST_HEAD_START <= priority <= _LONGEST_HEAD_START
    ):
        raise ValidationError(
            f"invalid priority: {priority!r}; it must be a head start in seconds from "
            f"{-_LONGEST_HEAD_START:.0f} to {_LONGEST_HEAD_START:.0f} (one day)",
            field="priority",
        )
    return Request(name_tuple, occupy, mode, timeout_seconds, strict, holder, float(priority))


class Contention:
    """The limits on which a client's last request had to queue. There the fast path
    (pggcl.take) would only be refused, so acquire goes straight to pggcl.acquire: one round
    trip less per queued request, where the limit's row is busiest. A request granted at once
    clears the name. Shared by a client's threads or tasks: a lost race costs one round trip.
    """

    _MAX_NAMES: Final = 1024  # forget them all past this: a hint, not a registry

    def __init__(self) -> None:
        self._names: set[str] = set()

    def worth_taking(self, name: str) -> bool:
        return name not in self._names

    def queued(self, name: str) -> None:
        if len(self._names) >= self._MAX_NAMES:
            self._names.clear()
        self._names.add(name)

    def granted_at_once(self, name: str) -> None:
        self._names.discard(name)


def checked_lease_duration(lease_duration: float | None) -> float | None:
    """``lease_duration`` checked: None, or seconds above 0 (at most the engine's bound)."""
    if lease_duration is None:
        return None
    if (
        isinstance(lease_duration, bool)
        or not isinstance(lease_duration, int | float)
        or not (0 < lease_duration <= _LONGEST_TTL)
        or math.isnan(lease_duration)
    ):
        raise ValidationError(
            f"invalid lease_duration: {lease_duration!r}; it must be None or seconds above 0, "
            f"at most {_LONGEST_TTL:.0f}",
            field="lease_duration",
        )
    return float(lease_duration)


def checked_max_retries(max_retries: int | None) -> int | None:
    if max_retries is None:
        return None
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValidationError(
            f"invalid max_retries: {max_retries!r}; it must be None or a whole number, 0 or more",
            field="max_retries",
        )
    return max_retries
