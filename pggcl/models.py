"""Typed records returned by the clients."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """A limit as it stands now.

    ``active_slots`` is the occupancy at the moment of reading, in slots: ``held_slots``
    (held by leases) plus ``decaying_slots`` (the rate-limit bucket, which decays at
    ``slot_decay_per_second``). ``waiting`` counts queued requests.
    """

    name: str
    limit: int
    active: bool
    active_slots: float
    slot_decay_per_second: float
    waiting: int
    created: datetime
    updated: datetime
    held_slots: int
    decaying_slots: float


@dataclass(frozen=True, slots=True)
class Grant:
    """Slots granted: what ``concurrency()`` yields. ``lease_id`` identifies them in
    concurrency mode (None in rate mode, or when no names were given)."""

    names: tuple[str, ...]
    occupy: int
    lease_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class Holder:
    """Slots held on one limit by one lease."""

    lease_id: uuid.UUID
    name: str
    slots: int
    holder: str | None
    session_id: int | None
    since: datetime
    expires: datetime | None


@dataclass(frozen=True, slots=True)
class Waiter:
    """A queued request on one limit; ``position`` 1 is served next."""

    waiter_id: int
    name: str
    position: int
    occupy: int
    mode: str
    holder: str | None
    session_id: int
    since: datetime
