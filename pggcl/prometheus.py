"""Every limit in the Prometheus text format (version 0.0.4): what ``/metrics`` answers, in the
web UI (:mod:`pggcl.ui.metrics`) and in ``pggcl metrics`` (:mod:`pggcl.cli.metrics`). Pure.

Per limit, labelled ``name`` (and ``template`` for an instance of a template):

- gauges, the limit as it stands: ``pggcl_limit``, ``pggcl_active_slots``, ``pggcl_waiting``
  and ``pggcl_active`` (1 or 0);
- counters, kept by the engine with each change they count (see
  :class:`pggcl.models.ConcurrencyLimit`): ``pggcl_grants_total``, ``pggcl_queued_total``,
  ``pggcl_denied_total``, ``pggcl_gave_up_total``, ``pggcl_rejected_total`` and
  ``pggcl_reclaimed_slots_total``;
- histograms, in seconds, buckets of :data:`pggcl.models.HISTOGRAM_BOUNDS`:
  ``pggcl_wait_seconds`` (every grant; 0 for a grant at once) and ``pggcl_hold_seconds``
  (every lease that ended), each as ``_bucket{le=...}``, ``_sum`` and ``_count``.

Template instances are not one series each (a million keys would make a million series):
every plain limit is, and of each template only its :data:`BUSIEST` busiest instances now
(:meth:`pggcl.Client.busiest_limits`, chosen in the database). Each template instead has the
same families with ``pggcl_template_`` in place of ``pggcl_``, labelled ``template``, over
all its instances taken together (:class:`pggcl.models.TemplateTotals`): ``pggcl_template_limit``
(each instance's), ``pggcl_template_active_slots`` and ``pggcl_template_waiting`` (summed),
``pggcl_template_active``, ``pggcl_template_instances`` (how many exist now), the counters
(``pggcl_template_grants_total`` ...) and histograms (``pggcl_template_wait_seconds`` ...),
which include what removed instances had counted, so they never go down, and
``pggcl_template_removed_instances_total``. Names of their own, not the limits' names with a
``template`` label: ``sum(pggcl_grants_total)`` then never counts a busy instance twice (in
its template's total and in its own series), and ``by (name)`` never meets a series without
a name.

Prefect's ``avg_slot_occupancy_seconds`` is
``rate(pggcl_hold_seconds_sum[5m]) / rate(pggcl_hold_seconds_count[5m])``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

from pggcl.models import HISTOGRAM_BOUNDS, ConcurrencyLimit, TemplateTotals

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: How many instances of each template ``/metrics`` shows as limits of their own: the busiest
#: now (most slots in use plus waiting, then by name).
BUSIEST: Final = 10

# A limit or a template's totals: both have the attributes the families read.
_Value = Callable[[Any], float]

_GAUGES: Final[list[tuple[str, str, _Value]]] = [
    ("pggcl_limit", "Maximum number of slots of the limit.", lambda lim: lim.limit),
    (
        "pggcl_active_slots",
        "Slots occupied now: held slots plus the decaying rate-limit level.",
        lambda lim: lim.active_slots,
    ),
    ("pggcl_waiting", "Requests queued on the limit.", lambda lim: lim.waiting),
    (
        "pggcl_active",
        "1 when the limit is active, 0 when it blocks nobody.",
        lambda lim: lim.active,
    ),
]

_COUNTERS: Final[list[tuple[str, str, _Value]]] = [
    (
        "pggcl_grants_total",
        "Requests granted, at once or after queuing.",
        lambda lim: lim.grants,
    ),
    ("pggcl_queued_total", "Requests that had to queue.", lambda lim: lim.enqueued),
    (
        "pggcl_denied_total",
        "Requests refused without waiting (try_acquire, a timeout of 0) while the limit was "
        "full or had a queue.",
        lambda lim: lim.denied,
    ),
    (
        "pggcl_gave_up_total",
        "Queued requests that left without a grant: cancelled, timed out, or their session "
        "closed or died.",
        lambda lim: lim.gave_up,
    ),
    (
        "pggcl_rejected_total",
        "Queued requests that can never be granted (the limit was lowered below them).",
        lambda lim: lim.rejected,
    ),
    (
        "pggcl_reclaimed_slots_total",
        "Slots taken back from dead holders and expired TTL leases.",
        lambda lim: lim.reclaimed_slots,
    ),
]

_HISTOGRAMS: Final[list[tuple[str, str, Callable[[Any], tuple[int, float, Sequence[int]]]]]] = [
    (
        "pggcl_wait_seconds",
        "Seconds from request to grant, of every grant (0 for a grant at once).",
        lambda lim: (lim.wait_seconds_count, lim.wait_seconds_sum, lim.wait_seconds_buckets),
    ),
    (
        "pggcl_hold_seconds",
        "Seconds from grant to release (or reclaim), of every lease that ended.",
        lambda lim: (lim.hold_seconds_count, lim.hold_seconds_sum, lim.hold_seconds_buckets),
    ),
]


#: The gauges of a template, over its instances taken together.
_TEMPLATE_GAUGES: Final[list[tuple[str, str, _Value]]] = [
    (
        "pggcl_template_limit",
        "Maximum number of slots of each instance of the template (an instance changed "
        "individually keeps its own).",
        lambda t: t.limit,
    ),
    (
        "pggcl_template_active_slots",
        "Slots occupied now, summed over the template's instances.",
        lambda t: t.active_slots,
    ),
    (
        "pggcl_template_waiting",
        "Requests queued now, summed over the template's instances.",
        lambda t: t.waiting,
    ),
    (
        "pggcl_template_active",
        "1 when the template makes active instances, 0 when inactive ones.",
        lambda t: t.active,
    ),
    (
        "pggcl_template_instances",
        "Instances of the template that exist now.",
        lambda t: t.instances,
    ),
]
_TEMPLATE_COUNTERS: Final[list[tuple[str, str, _Value]]] = [
    (
        "pggcl_template_removed_instances_total",
        "Instances of the template removed as idle.",
        lambda t: t.retired_instances,
    ),
]


def _of_template(name: str, help_text: str) -> tuple[str, str]:
    """A limit's counter or histogram family, for a template's totals."""
    summed = ", summed over the template's instances, including those removed as idle."
    return name.replace("pggcl_", "pggcl_template_", 1), help_text.rstrip(".") + summed


def label(value: str) -> str:
    """A label value, escaped as the text format asks (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def number(value: float) -> str:
    """A sample value: integers as integers, floats as Python writes them (``+Inf`` too)."""
    if isinstance(value, float):
        return "+Inf" if value == math.inf else repr(value)
    return str(int(value))


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(float(bound))


def _labels_of_limit(lim: ConcurrencyLimit) -> str:
    if lim.template is None:
        return f'name="{label(lim.name)}"'
    return f'name="{label(lim.name)}",template="{label(lim.template)}"'


def _labels_of_template(totals: TemplateTotals) -> str:
    return f'template="{label(totals.name)}"'


def _families(
    rows: Sequence[Any],
    labels: Callable[[Any], str],
    families: Sequence[tuple[str, list[tuple[str, str, _Value]]]],
    histograms: Sequence[tuple[str, str, Callable[[Any], tuple[int, float, Sequence[int]]]]],
) -> list[str]:
    lines: list[str] = []
    for kind, members in families:
        for name, help_text, value in members:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [f"{name}{{{labels(row)}}} {number(value(row))}" for row in rows]
    for name, help_text, parts in histograms:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for row in rows:
            count, total, buckets = parts(row)
            of = labels(row)
            # The engine gives one cumulative count per bound (the last, +Inf, is the count);
            # a record built without them still says +Inf = count, as the format requires.
            pairs = zip(HISTOGRAM_BOUNDS, buckets, strict=True) if buckets else []
            lines += [f'{name}_bucket{{{of},le="{_le(b)}"}} {n}' for b, n in pairs if b != math.inf]
            lines.append(f'{name}_bucket{{{of},le="+Inf"}} {count}')
            lines += [f"{name}_sum{{{of}}} {number(float(total))}", f"{name}_count{{{of}}} {count}"]
    return lines


def _for_templates(
    members: list[tuple[str, str, _Value]],
) -> list[tuple[str, str, _Value]]:
    return [(*_of_template(name, help_text), value) for name, help_text, value in members]


def exposition(limits: Sequence[ConcurrencyLimit], templates: Sequence[TemplateTotals] = ()) -> str:
    """The text of a scrape: every family's HELP and TYPE, then one sample per limit (the
    plain limits and the busiest instances: :meth:`pggcl.Client.busiest_limits`), then the
    template families, one sample per template (:meth:`pggcl.Client.template_totals`), when
    there are templates."""
    lines = _families(
        limits, _labels_of_limit, [("gauge", _GAUGES), ("counter", _COUNTERS)], _HISTOGRAMS
    )
    if not templates:
        return "\n".join(lines) + "\n"
    lines += _families(
        templates,
        _labels_of_template,
        [
            ("gauge", _TEMPLATE_GAUGES),
            ("counter", _for_templates(_COUNTERS) + _TEMPLATE_COUNTERS),
        ],
        [(*_of_template(name, help_text), parts) for name, help_text, parts in _HISTOGRAMS],
    )
    return "\n".join(lines) + "\n"


def unavailable(reason: BaseException) -> str:
    """What a scrape answers (with status 503) when the database cannot be read."""
    return f"# pggcl: {str(reason).strip() or type(reason).__name__}\n"
