"""Records turned into what pages and live events show, formatted once, here.

Numbers and times follow :mod:`pggcl.formatting`, as the CLI's tables do. The templates render
these dicts and the browser's script puts the very same dicts (sent as JSON over the event
stream) into the page, so a value looks the same before and after an update.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final
from urllib.parse import urlencode

from pggcl.formatting import head_start, moment, ordinal, per_second, plural, slots
from pggcl.models import ConcurrencyLimit, Explanation, Holder, Waiter

View = dict[str, Any]

#: How many holders a queued row lists per limit that blocks it, oldest first (the
#: ``max_holders`` of its ``explain_queue`` read); the row says how many more there are.
WHY_HOLDERS: Final = 5

#: A holder's text is anyone's free text (up to 1,000 characters): a queued row shows this much.
_HOLDER_SHOWN: Final = 80


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


def waiter_view(waiter: Waiter, why: Sequence[Explanation] = ()) -> View:
    """A queued request; ``why``: its explanations (``explain_queue``), one per limit it waits
    on, shown on its row (none: not read, e.g. it queued after the read)."""
    return {
        "waiter_id": str(waiter.waiter_id),
        "why": [why_view(e) for e in why],
        "position": waiter.position,
        "priority": head_start(waiter.priority),
        "occupy": waiter.occupy,
        "mode": waiter.mode.replace("_", " "),
        "holder": waiter.holder or "",
        "since": moment(waiter.since),
    }


def _short(text: str | None) -> str:
    shown = text or "-"
    return shown if len(shown) <= _HOLDER_SHOWN else shown[: _HOLDER_SHOWN - 1] + "\u2026"


def why_view(e: Explanation) -> View:
    """Why a queued request waits on one of its limits, as ``pggcl explain`` says it: does
    the limit block it, its place in that queue, how full the limit is, in rate mode when
    there is room, and (when it blocks) who holds the slots, oldest first."""
    ahead = e.position - 1
    usage = f"{slots(e.active_slots)}/{e.limit} in use"
    if e.active_slots > e.held_slots + 0.005:
        usage += f" ({e.held_slots} held, {slots(e.active_slots - e.held_slots)} decaying)"
    if e.leases:
        usage += f", held by {plural(e.leases, 'lease')}"
    if not e.active:
        usage += ", inactive"
    room = ""
    if e.mode == "rate_limit" and e.seconds_until_room is not None:
        room = "room now" if e.seconds_until_room <= 0 else f"room in {e.seconds_until_room:.1f} s"
    shown = e.holders if e.blocking else ()
    more = e.leases - len(shown) if e.blocking else 0
    return {
        "name": e.name,
        "blocking": e.blocking,
        "state": "blocking" if e.blocking else "not blocking",
        "place": f"{ordinal(e.position)} in queue, "
        + (f"{plural(ahead, 'request')} ahead" if ahead else "nobody ahead"),
        "usage": usage,
        "room": room,
        "holders": [
            {
                "holder": _short(h.holder),
                "title": h.holder or "",
                "slots": plural(h.slots, "slot"),
                "since": f"since {moment(h.since)}",
                "expires": f"expires {moment(h.expires, missing='never')}",
            }
            for h in shown
        ],
        "more": f"and {plural(more, 'more lease')}" if more > 0 else "",
    }


def by_waiter(explanations: Iterable[Explanation]) -> dict[int, list[Explanation]]:
    """Explanations grouped by their waiter, in the order read (by limit name)."""
    grouped: dict[int, list[Explanation]] = {}
    for e in explanations:
        grouped.setdefault(e.waiter_id, []).append(e)
    return grouped


def matches(name: str, query: str) -> bool:
    """The name filter: a case-insensitive substring; an empty filter matches every name."""
    return query.casefold() in name.casefold()
