"""Templates in the UI (issues #15 and #16.2): the limits page shows each template apart, with
its instances taken together and its busiest few, and a template's page lists its instances a
page at a time. Nothing here reads a template's every instance into Python: the busiest are
chosen in the database (:meth:`pggcl.AsyncClient.busiest_limits`), the totals are summed there
(:meth:`pggcl.AsyncClient.template_totals`), and a page of instances is at most :data:`PAGE`
rows (:meth:`pggcl.AsyncClient.list_instances`; the page is ``views.template_page``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from urllib.parse import urlencode

from pggcl.formatting import per_second, slots
from pggcl.models import ConcurrencyLimit, TemplateTotals
from pggcl.ui.present import View, limit_url, limit_view, matches

#: How many of each template's instances the limits page shows: the busiest now.
SHOWN: Final = 3
#: Instances per page of a template's page.
PAGE: Final = 50

#: The row the page's script copies for a template that appears live.
BLANK_TEMPLATE: Final[View] = {
    **dict.fromkeys(("name", "url", "limit", "instances", "occupancy", "waiting", "grants"), ""),
    "busiest": [],
}


def template_url(name: str, after: str | None = None) -> str:
    query = {"name": name} if after is None else {"name": name, "after": after}
    return f"/template?{urlencode(query)}"


def instance_view(limit: ConcurrencyLimit) -> View:
    """One of the busiest instances, as the limits page lists it."""
    text = f"{slots(limit.active_slots)}/{limit.limit}"
    if limit.waiting:
        text += f", {limit.waiting} waiting"
    return {"name": limit.name, "url": limit_url(limit.name), "text": text}


def template_view(totals: TemplateTotals, busiest: Sequence[ConcurrencyLimit] = ()) -> View:
    occupancy = f"{slots(totals.active_slots)} in use"
    if totals.decaying_slots >= 0.005:
        occupancy += f" ({totals.held_slots} held, {slots(totals.decaying_slots)} decaying)"
    return {
        "name": totals.name,
        "url": template_url(totals.name),
        "limit": totals.limit,
        "active_text": "yes" if totals.active else "no",
        "decay": per_second(totals.slot_decay_per_second),
        "instances": totals.instances,
        "occupancy": occupancy,
        "waiting": totals.waiting,
        "grants": totals.grants,
        "denied": totals.denied,
        "removed": totals.retired_instances,
        "busiest": [instance_view(limit) for limit in busiest],
    }


def overview(
    limits: Sequence[ConcurrencyLimit], templates: Sequence[TemplateTotals], query: str
) -> tuple[list[View], list[View]]:
    """What the limits page shows of a read of ``busiest_limits(SHOWN)`` and
    ``template_totals()``: the plain limits, and each template with its busiest instances
    (busiest first), both filtered by name."""
    plain = [limit_view(lim) for lim in limits if lim.template is None and matches(lim.name, query)]
    by_template: dict[str, list[ConcurrencyLimit]] = {}
    for lim in limits:
        if lim.template is not None:
            by_template.setdefault(lim.template, []).append(lim)
    shown = []
    for totals in templates:
        if not matches(totals.name, query):
            continue
        busiest = sorted(
            by_template.get(totals.name, ()), key=lambda x: (-(x.active_slots + x.waiting), x.name)
        )[:SHOWN]
        shown.append(template_view(totals, busiest))
    return plain, shown
