"""Typed records returned by the clients."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

#: The upper bounds, in seconds, of the buckets of the wait and hold histograms of
#: :class:`ConcurrencyLimit` (Prometheus's ``le``: a bound is inclusive), the last +Inf. The
#: engine's ``pggcl._bucket`` uses the same.
HISTOGRAM_BOUNDS: Final[tuple[float, ...]] = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 600.0, math.inf,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    """A limit as it stands now.

    ``active_slots`` is the occupancy at the moment of reading, in slots: ``held_slots``
    (held by leases) plus ``decaying_slots`` (the rate-limit bucket, which decays at
    ``slot_decay_per_second``). ``waiting`` counts queued requests.

    The counters, kept by the engine with each change they count, since the limit was created
    (or its database upgraded to revision 0009); they only grow:

    - ``grants``: requests granted, at once or after queuing;
    - ``enqueued``: requests that had to queue;
    - ``denied``: ``try_acquire`` refusals (a timeout of 0) on this limit, when it was full or
      had a queue (Prefect's ``denied_slots``, counted in requests);
    - ``gave_up``: queued requests that left without a grant (cancelled, timed out,
      interrupted, or their session was closed or died);
    - ``rejected``: queued requests told they can never be granted (the limit was lowered
      below them);
    - ``reclaimed_slots``: slots taken back from dead holders and expired TTL leases.

    Wait time (queued to granted, 0 s for a grant at once) of every grant, and hold time
    (granted to released or reclaimed) of every lease that ended, in seconds: a count, a sum
    and cumulative buckets, one per bound of :data:`HISTOGRAM_BOUNDS` (element i counts those
    of at most ``HISTOGRAM_BOUNDS[i]``; the last equals the count). The mean hold,
    ``hold_seconds_sum / hold_seconds_count``, is Prefect's ``avg_slot_occupancy_seconds``.
    Rate limits hold nothing: their hold counts stay 0.

    ``template``: for a limit made from a template (a name with ``*``, see
    :class:`LimitTemplate`), that template's name; ``customized``: the limit was changed
    individually since, so that a change of its template leaves it alone.
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
    grants: int = 0
    enqueued: int = 0
    denied: int = 0
    gave_up: int = 0
    rejected: int = 0
    reclaimed_slots: int = 0
    wait_seconds_count: int = 0
    wait_seconds_sum: float = 0.0
    wait_seconds_buckets: tuple[int, ...] = ()
    hold_seconds_count: int = 0
    hold_seconds_sum: float = 0.0
    hold_seconds_buckets: tuple[int, ...] = ()
    template: str | None = None
    customized: bool = False


@dataclass(frozen=True, slots=True)
class LimitTemplate:
    """A template: a limit name with ``*`` (one or more characters). A request naming a
    missing limit that matches it creates that limit, active, with these values; changing it
    changes those of its instances not changed individually. An instance unused (no lease, no
    waiter, an empty bucket) for ``idle_seconds`` is removed. ``instances`` counts those that
    exist now."""

    name: str
    limit: int
    slot_decay_per_second: float
    active: bool
    idle_seconds: float
    instances: int
    created: datetime
    updated: datetime


@dataclass(frozen=True, slots=True)
class TemplateTotals:
    """A template's instances taken together (``pggcl.template_totals``, revision 0014).

    ``instances``: how many exist now; the occupancy now, summed over them (``active_slots``
    = ``held_slots`` + ``decaying_slots``, ``waiting``); and every counter of
    :class:`ConcurrencyLimit`, under the same name, summed over the instances that exist plus
    what those already removed as idle had counted, so that each only grows while the
    template exists. ``retired_instances``: the instances removed as idle so far."""

    name: str
    limit: int
    slot_decay_per_second: float
    active: bool
    instances: int
    active_slots: float
    waiting: int
    held_slots: int
    decaying_slots: float
    grants: int
    enqueued: int
    denied: int
    gave_up: int
    rejected: int
    reclaimed_slots: int
    wait_seconds_count: int
    wait_seconds_sum: float
    wait_seconds_buckets: tuple[int, ...]
    hold_seconds_count: int
    hold_seconds_sum: float
    hold_seconds_buckets: tuple[int, ...]
    retired_instances: int


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
    """A queued request on one limit; ``position`` 1 is served next, in the order of arrival
    less ``priority`` (a head start in seconds), then arrival."""

    waiter_id: int
    name: str
    position: int
    occupy: int
    mode: str
    holder: str | None
    session_id: int
    since: datetime
    priority: float = 0.0


@dataclass(frozen=True, slots=True)
class Holding:
    """Slots held on a limit, as :class:`Explanation` lists them (no lease or session id)."""

    holder: str | None
    slots: int
    since: datetime
    expires: datetime | None


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a queued request waits, on one of the limits it waits on (``pggcl.explain``).

    - ``blocking``: this limit keeps it waiting now (active, and a request queued ahead of it
      here, or no room for ``occupy``); False on an inactive limit, or where it would fit
      and nobody is ahead.
    - ``position``: its place in this limit's queue, 1 = served next (as :class:`Waiter`).
    - ``held_slots``, ``active_slots``, ``limit``, ``active``: the limit's, as
      :class:`ConcurrencyLimit` has them.
    - ``leases``: how many leases hold slots here; ``holders``: who, oldest first (all of
      them, or the first ``max_holders``).
    - ``seconds_until_room``: in rate mode, seconds until this limit has room for it after
      those ahead (0: room now); None when unknown (held slots must be released first) and
      always in concurrency mode.
    - ``since``: when it was queued.
    """

    waiter_id: int
    name: str
    blocking: bool
    position: int
    occupy: int
    mode: str
    limit: int
    active: bool
    held_slots: int
    active_slots: float
    leases: int
    holders: tuple[Holding, ...]
    seconds_until_room: float | None
    since: datetime
