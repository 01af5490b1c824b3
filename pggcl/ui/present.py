"""Records turned into what pages and live events show, formatted once, here.

Numbers and times follow :mod:`pggcl.formatting`, as the CLI's tables do. The templates render
these dicts and the browser's script puts the very same dicts (sent as JSON over the event
stream) into the page, so a value looks the same before and after an update.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from pggcl.formatting import moment, per_second, slots
from pggcl.models import ConcurrencyLimit, Holder, Waiter

View = dict[str, Any]


def limit_url(name: str, action: str = "") -> str:
    """The page of a limit (or its `edit`/`delete` page). Names travel in the query string:
    a name may be `.` or `..`, which browsers would fold away as a path segment."""
    return f"/limit{'/' + action if action else ''}?{urlencode({'name': name})}"


def bar(limit: ConcurrencyLimit) -> View:
    """The occupancy bar: held and decaying slots as percentages of the limit (capped at 100)."""
    cap = limit.limit
    held, decaying = float(limit.held_slots), max(0.0, limit.decaying_slots)
    if cap > 0:
        held_pct = min(100.0, 100.0 * held / cap)
        decaying_pct = min(100.0 - held_pct, 100.0 * decaying / cap)
    else:  # a limit of 0: any occupancy fills the bar
        held_pct = 100.0 if held > 0 else 0.0
        decaying_pct = 100.0 - held_pct if decaying >= 0.005 else 0.0
    return {
        "held_pct": round(held_pct, 1),
        "decaying_pct": round(decaying_pct, 1),
        "text": f"{slots(held + decaying)} / {cap}",
        "title": f"held {slots(held)}, decaying {slots(decaying)}, limit {cap}",
        "over": held + decaying > cap + 0.005,
    }


def limit_view(limit: ConcurrencyLimit) -> View:
    return {
        "name": limit.name,
        "url": limit_url(limit.name),
        "edit_url": limit_url(limit.name, "edit"),
        "delete_url": limit_url(limit.name, "delete"),
        "limit": limit.limit,
        "active": limit.active,
        "active_text": "yes" if limit.active else "no",
        "decay": per_second(limit.slot_decay_per_second),
        "waiting": limit.waiting,
        "held": limit.held_slots,
        "decaying": slots(limit.decaying_slots),
        "bar": bar(limit),
        "updated": moment(limit.updated),
    }


def holder_view(holder: Holder) -> View:
    return {
        "lease_id": str(holder.lease_id),
        "slots": holder.slots,
        "holder": holder.holder or "",
        "since": moment(holder.since),
        "expires": moment(holder.expires, missing="never"),
    }


def waiter_view(waiter: Waiter) -> View:
    return {
        "position": waiter.position,
        "occupy": waiter.occupy,
        "mode": waiter.mode.replace("_", " "),
        "holder": waiter.holder or "",
        "since": moment(waiter.since),
    }


def matches(name: str, query: str) -> bool:
    """The name filter: a case-insensitive substring; an empty filter matches every name."""
    return query.casefold() in name.casefold()
