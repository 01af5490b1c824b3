"""How commands print: plain aligned tables for people, stable JSON for programs.

Tables format numbers and times as the UI does (:mod:`pggcl.formatting`: slots to at most two
decimals, times in UTC). JSON keeps the field names and order of the records in
`pggcl.models`; timestamps are ISO 8601 in UTC with their offset (``+00:00``), lease ids are
strings, numbers stay numbers, unrounded.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from pggcl.formatting import duration, head_start, moment, per_second, printable, slots
from pggcl.models import ConcurrencyLimit, Explanation, Holder, Holding, LimitTemplate, Waiter

#: `--output json` on the reading commands (the only format besides the default table).
output_option = click.option(
    "--output",
    "-o",
    type=click.Choice(["json"]),
    default=None,
    help="Print JSON (exact numbers) instead of a table. Times are UTC either way.",
)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()  # in UTC whatever the server's TimeZone
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Holding):  # inside an Explanation
        return record(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def record(
    obj: ConcurrencyLimit | LimitTemplate | Holder | Waiter | Explanation | Holding,
) -> dict[str, Any]:
    """A model as a JSON-ready dict, fields in declaration order."""
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; columns listed in `right` are right-aligned.
    Every cell is shown printable: names and holders are other people's text."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in (headers, *rows):
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def holders_table(holders: Sequence[Holder]) -> str:
    rows = [
        [str(h.lease_id), h.name, str(h.slots), h.holder or "-", moment(h.since), moment(h.expires)]
        for h in holders
    ]
    return table(["LEASE", "LIMIT", "SLOTS", "HOLDER", "SINCE", "EXPIRES"], rows, right=[2])


def queue_table(waiters: Sequence[Waiter]) -> str:
    rows = [
        [str(w.position), w.name, str(w.occupy), w.mode, w.holder or "-", moment(w.since)]
        for w in waiters
    ]
    headers = ["POSITION", "LIMIT", "OCCUPY", "MODE", "HOLDER", "SINCE"]
    if any(w.priority for w in waiters):  # a head start in seconds (see concurrency())
        headers.append("PRIORITY")
        for row, w in zip(rows, waiters, strict=True):
            row.append(head_start(w.priority))
    return table(headers, rows, right=[0, 2])


def limits_table(limits: Sequence[ConcurrencyLimit]) -> str:
    rows = [
        [
            lim.name,
            str(lim.limit),
            yes_no(lim.active),
            slots(lim.active_slots),
            per_second(lim.slot_decay_per_second),
            str(lim.waiting),
        ]
        for lim in limits
    ]
    headers = ["NAME", "LIMIT", "ACTIVE", "ACTIVE SLOTS", "SLOT DECAY/S", "WAITING"]
    if any(lim.template for lim in limits):  # made from templates: say which, and if changed
        headers.append("TEMPLATE")
        for row, lim in zip(rows, limits, strict=True):
            made = lim.template or "-"
            row.append(f"{made} (changed)" if lim.template and lim.customized else made)
    return table(headers, rows, right=[1, 3, 4, 5])


def templates_table(templates: Sequence[LimitTemplate]) -> str:
    rows = [
        [
            t.name,
            str(t.limit),
            yes_no(t.active),
            per_second(t.slot_decay_per_second),
            duration(t.idle_seconds),
            str(t.instances),
        ]
        for t in templates
    ]
    headers = ["TEMPLATE", "LIMIT", "ACTIVE", "SLOT DECAY/S", "IDLE TIME", "INSTANCES"]
    return table(headers, rows, right=[1, 3, 4, 5])
