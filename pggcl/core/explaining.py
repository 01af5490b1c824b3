"""Why a queued request waits (``pggcl.explain``, revision 0012), decided once for both
clients. Pure: the rows as models, and the one line a timeout says.

The timeout's line is read by one call at the moment of the timeout, before the request is
withdrawn (:func:`pggcl.core.acquiring.acquire_flow`): never while the request is granted at
once, nor while it waits. It names, per limit that blocks the request, how full the limit is,
by how many leases and the oldest holder, and how many requests are ahead::

    timed out after 10 s waiting for 1 slot on 'database': 5 of 5 slots held by 3 leases
    (oldest: web1:4242 since 2026-12-02T12:01:07Z), 4 requests ahead

(one line). A request on several limits names each limit before its part, ``; `` between.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from pggcl.core.ops import Row
from pggcl.formatting import moment, plural, printable, slots
from pggcl.models import Explanation, Holding

#: A holder's text is someone's free text (up to 1,000 characters): a message shows this much.
_HOLDER_SHOWN: Final = 80


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _moment(text: str) -> datetime:
    # A timestamptz inside jsonb: ISO 8601 with the database session's offset.
    return _utc(datetime.fromisoformat(text))


def _holding(item: dict[str, Any]) -> Holding:
    expires = item.get("expires")
    return Holding(
        item.get("holder"),
        int(item["slots"]),
        _moment(item["since"]),
        None if expires is None else _moment(expires),
    )


def explanation(row: Row) -> Explanation:
    """A row of :data:`pggcl.core.queries.EXPLAIN` (or ``EXPLAIN_QUEUE``) as a model."""
    waiter_id, name, blocking, position, occupy, mode, limit, active, held = row[:9]
    active_slots, leases, holders, until_room, since = row[9:]
    return Explanation(
        waiter_id, name, blocking, position, occupy, mode, limit, active, held,
        float(active_slots), leases, tuple(_holding(h) for h in json.loads(holders)),
        None if until_room is None else float(until_room), _utc(since),
    )  # fmt: skip


def _holder(text: str | None) -> str:
    shown = printable(text or "?")
    return shown if len(shown) <= _HOLDER_SHOWN else shown[: _HOLDER_SHOWN - 3] + "..."


def _on_limit(e: Explanation) -> str:
    """One limit's part of the line."""
    if e.active_slots > e.held_slots + 0.005:  # a rate-limit level decays on it
        part = f"{slots(e.active_slots)} of {e.limit} slots in use"
        if e.leases:
            part += f", {e.held_slots} held"
    else:
        part = f"{e.held_slots} of {e.limit} slots held"
    if e.leases:
        part += f" by {plural(e.leases, 'lease')}"
        if e.holders:
            oldest = e.holders[0]
            part += f" (oldest: {_holder(oldest.holder)} since {moment(oldest.since)})"
    if not e.active:
        part += " (inactive)"
    if e.mode == "rate_limit" and e.seconds_until_room is not None:
        part += f", room in {e.seconds_until_room:.1f} s"
    ahead = e.position - 1
    part += f", {plural(ahead, 'request')} ahead" if ahead else ", nobody ahead"
    return part


def why_waiting(explanations: Sequence[Explanation], names: Sequence[str]) -> str | None:
    """Why a request on ``names`` waits, in one line: the limits that block it (all of them
    when none does, e.g. it fits again but is not served yet); None when it is not queued."""
    shown = [e for e in explanations if e.blocking] or list(explanations)
    if not shown:
        return None
    if len(names) == 1:
        return _on_limit(shown[0])
    return "; ".join(f"'{printable(e.name)}' {_on_limit(e)}" for e in shown)
