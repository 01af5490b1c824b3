"""Managing limits and reading who holds and waits, decided once for both clients. Pure.

Every operation is a generator (a *flow*) that yields ops (:mod:`pggcl.core.ops`) and receives
their results; a runner (``pggcl.client.runner_*``) carries the ops out and throws errors into
the flow at the yield that failed. Reads are retried while the database is unreachable, up to
the client's ``retry_seconds``; writes are not (a write whose answer was lost may have run).
Acquiring and releasing are :mod:`pggcl.core.acquiring`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from pggcl.core import queries as q
from pggcl.core import values
from pggcl.core.acquiring import as_uuid
from pggcl.core.explaining import explanation
from pggcl.core.ops import Call, Flow, Row
from pggcl.core.retrying import retrying
from pggcl.errors import LimitNotFoundError, ValidationError
from pggcl.models import (
    ConcurrencyLimit,
    Explanation,
    Holder,
    LimitTemplate,
    TemplateTotals,
    Waiter,
)

Clock = Callable[[], float]


# --- Management ---------------------------------------------------------------------------


def _limit(row: Row) -> ConcurrencyLimit:
    name, limit, active, active_slots, decay, waiting, created, updated, held, decaying = row[:10]
    grants, enqueued, denied, gave_up, rejected, reclaimed = row[10:16]
    wait_count, wait_sum, wait_buckets, hold_count, hold_sum, hold_buckets = row[16:22]
    template, customized = row[22:]
    return ConcurrencyLimit(
        name, limit, active, float(active_slots), float(decay), waiting, _utc(created),
        _utc(updated), held, float(decaying), grants, enqueued, denied, gave_up, rejected,
        reclaimed, wait_count, float(wait_sum), tuple(wait_buckets), hold_count,
        float(hold_sum), tuple(hold_buckets), template, customized,
    )  # fmt: skip


def _template(row: Row) -> LimitTemplate:
    name, limit, decay, active, idle_seconds, instances, created, updated = row
    return LimitTemplate(
        name, limit, float(decay), active, float(idle_seconds), instances, _utc(created),
        _utc(updated),
    )  # fmt: skip


def _utc(moment: datetime) -> datetime:
    # psycopg gives timestamps in the database session's TimeZone, asyncpg in UTC: one rule.
    return moment.astimezone(UTC)


def create_limit_flow(
    name: str, limit: int, slot_decay_per_second: float, active: bool, idle_seconds: float | None
) -> Flow[ConcurrencyLimit]:
    """Create a limit of ``limit`` slots; ``slot_decay_per_second`` in slots per second. A
    name with ``*`` creates a template (``idle_seconds``: its instances' idle time)."""
    values.text("name", name)
    values.whole("limit", limit, 0)
    rows = yield Call(q.CREATE_LIMIT, (name, limit, slot_decay_per_second, active, idle_seconds))
    return _limit(rows[0])


def read_limit_flow(name: str, until: float, clock: Clock) -> Flow[ConcurrencyLimit]:
    values.text("name", name)
    rows = yield from retrying(Call(q.READ_LIMIT, (name,)), until, clock)
    if not rows:
        raise LimitNotFoundError(f"limit {name!r} does not exist")
    return _limit(rows[0])


def list_limits_flow(until: float, clock: Clock) -> Flow[list[ConcurrencyLimit]]:
    rows = yield from retrying(Call(q.LIST_LIMITS, ()), until, clock)
    return [_limit(r) for r in rows]


def list_templates_flow(until: float, clock: Clock) -> Flow[list[LimitTemplate]]:
    rows = yield from retrying(Call(q.LIST_TEMPLATES, ()), until, clock)
    return [_template(r) for r in rows]


def busiest_limits_flow(
    per_template: int, also: Sequence[str], until: float, clock: Clock
) -> Flow[list[ConcurrencyLimit]]:
    _count("per_template", per_template)
    names = [values.text("also", name) for name in also]
    rows = yield from retrying(Call(q.BUSIEST_LIMITS, (per_template, names)), until, clock)
    return [_limit(r) for r in rows]


def list_instances_flow(
    template: str, after: str | None, max_rows: int, until: float, clock: Clock
) -> Flow[list[ConcurrencyLimit]]:
    values.text("template", template)
    if after is not None:
        values.text("after", after)
    _count("max_rows", max_rows)
    rows = yield from retrying(Call(q.LIST_INSTANCES, (template, after, max_rows)), until, clock)
    return [_limit(r) for r in rows]


def _count(field: str, value: object) -> None:
    """A number of rows to read: a whole number from 0 to 2**31 - 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31 - 1:
        raise ValidationError(
            f"invalid {field}: {value!r}; it must be a whole number from 0 to 2147483647",
            field=field,
        )


def template_totals_flow(until: float, clock: Clock) -> Flow[list[TemplateTotals]]:
    rows = yield from retrying(Call(q.TEMPLATE_TOTALS, ()), until, clock)
    return [_totals(r) for r in rows]


def _totals(row: Row) -> TemplateTotals:
    name, limit, decay, active, instances, active_slots, waiting, held, decaying = row[:9]
    grants, enqueued, denied, gave_up, rejected, reclaimed = row[9:15]
    wait_count, wait_sum, wait_buckets, hold_count, hold_sum, hold_buckets, retired = row[15:]
    return TemplateTotals(
        name, limit, float(decay), active, instances, float(active_slots), waiting, held,
        float(decaying), grants, enqueued, denied, gave_up, rejected, reclaimed, wait_count,
        float(wait_sum), tuple(wait_buckets), hold_count, float(hold_sum), tuple(hold_buckets),
        retired,
    )  # fmt: skip


def update_limit_flow(
    name: str,
    limit: int | None,
    slot_decay_per_second: float | None,
    active: bool | None,
    new_name: str | None,
    idle_seconds: float | None,
) -> Flow[ConcurrencyLimit]:
    values.text("name", name)
    if limit is not None:
        values.whole("limit", limit, 0)
    if new_name is not None:
        values.text("new_name", new_name)
    args = (name, limit, slot_decay_per_second, active, new_name, idle_seconds)
    rows = yield Call(q.UPDATE_LIMIT, args)
    return _limit(rows[0])


def delete_limit_flow(name: str) -> Flow[bool]:
    values.text("name", name)
    rows = yield Call(q.DELETE_LIMIT, (name,))
    return bool(rows[0][0])


def holders_flow(name: str | None, until: float, clock: Clock) -> Flow[list[Holder]]:
    rows = yield from retrying(Call(q.HOLDERS, (name,)), until, clock)
    return [
        Holder(
            as_uuid(lease) or uuid.UUID(int=0), name, slots, holder, session_id, _utc(since),
            None if expires is None else _utc(expires),
        )
        for lease, name, slots, holder, session_id, since, expires in rows
    ]  # fmt: skip


def queue_flow(name: str | None, until: float, clock: Clock) -> Flow[list[Waiter]]:
    rows = yield from retrying(Call(q.QUEUE, (name,)), until, clock)
    return [
        Waiter(waiter_id, name, position, occupy, mode, holder, session_id, _utc(since), priority)
        for waiter_id, name, position, occupy, mode, holder, session_id, since, priority in rows
    ]


# --- Why am I waiting? ----------------------------------------------------------------------


def _checked_max_holders(max_holders: int | None) -> int | None:
    if max_holders is not None:
        values.whole("max_holders", max_holders, 0)
    return max_holders


def explain_flow(
    waiter_id: int, max_holders: int | None, until: float, clock: Clock
) -> Flow[list[Explanation]]:
    """Why the queued request ``waiter_id`` waits: one per limit it waits on, by name; [] when
    it is not queued (granted, cancelled, unknown)."""
    values.big("waiter_id", waiter_id)
    call = Call(q.EXPLAIN, (waiter_id, _checked_max_holders(max_holders)))
    rows = yield from retrying(call, until, clock)
    return [explanation(r) for r in rows]


def explain_many_flow(
    waiter_ids: list[int], max_holders: int | None, until: float, clock: Clock
) -> Flow[list[Explanation]]:
    """:func:`explain_flow` for each of ``waiter_ids``, in one call (none when there are
    none), in the order they queued."""
    max_holders = _checked_max_holders(max_holders)
    if not waiter_ids:
        return []
    rows = yield from retrying(Call(q.EXPLAIN_MANY, (waiter_ids, max_holders)), until, clock)
    return [explanation(r) for r in rows]


def explain_queue_flow(
    name: str | None, max_holders: int | None, until: float, clock: Clock
) -> Flow[list[Explanation]]:
    """:func:`explain_flow` for every queued request (on ``name`` only, if given), in the
    order they queued, each on every limit it waits on."""
    if name is not None:
        values.text("name", name)
    call = Call(q.EXPLAIN_QUEUE, (name, _checked_max_holders(max_holders)))
    rows = yield from retrying(call, until, clock)
    return [explanation(r) for r in rows]
