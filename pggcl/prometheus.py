"""Every limit in the Prometheus text format (version 0.0.4): what ``/metrics`` answers, in the
web UI (:mod:`pggcl.ui.metrics`) and in ``pggcl metrics`` (:mod:`pggcl.cli.metrics`). Pure.

Per limit, labelled ``name``:

- gauges, the limit as it stands: ``pggcl_limit``, ``pggcl_active_slots``, ``pggcl_waiting``
  and ``pggcl_active`` (1 or 0);
- counters, kept by the engine with each change they count (see
  :class:`pggcl.models.ConcurrencyLimit`): ``pggcl_grants_total``, ``pggcl_queued_total``,
  ``pggcl_denied_total``, ``pggcl_gave_up_total``, ``pggcl_rejected_total`` and
  ``pggcl_reclaimed_slots_total``;
- histograms, in seconds, buckets of :data:`pggcl.models.HISTOGRAM_BOUNDS`:
  ``pggcl_wait_seconds`` (every grant; 0 for a grant at once) and ``pggcl_hold_seconds``
  (every lease that ended), each as ``_bucket{le=...}``, ``_sum`` and ``_count``.

Prefect's ``avg_slot_occupancy_seconds`` is
``rate(pggcl_hold_seconds_sum[5m]) / rate(pggcl_hold_seconds_count[5m])``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Final

from pggcl.models import HISTOGRAM_BOUNDS, ConcurrencyLimit

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_Value = Callable[[ConcurrencyLimit], float]

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

_HISTOGRAMS: Final[
    list[tuple[str, str, Callable[[ConcurrencyLimit], tuple[int, float, Sequence[int]]]]]
] = [
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


def exposition(limits: Sequence[ConcurrencyLimit]) -> str:
    """The text of a scrape: every family's HELP and TYPE, then one sample per limit."""
    lines: list[str] = []
    for kind, families in (("gauge", _GAUGES), ("counter", _COUNTERS)):
        for name, help_text, value in families:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [f'{name}{{name="{label(lim.name)}"}} {number(value(lim))}' for lim in limits]
    for name, help_text, parts in _HISTOGRAMS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for lim in limits:
            count, total, buckets = parts(lim)
            of = f'name="{label(lim.name)}"'
            # The engine gives one cumulative count per bound (the last, +Inf, is the count);
            # a record built without them still says +Inf = count, as the format requires.
            pairs = zip(HISTOGRAM_BOUNDS, buckets, strict=True) if buckets else []
            lines += [f'{name}_bucket{{{of},le="{_le(b)}"}} {n}' for b, n in pairs if b != math.inf]
            lines.append(f'{name}_bucket{{{of},le="+Inf"}} {count}')
            lines += [f"{name}_sum{{{of}}} {number(float(total))}", f"{name}_count{{{of}}} {count}"]
    return "\n".join(lines) + "\n"


def unavailable(reason: BaseException) -> str:
    """What a scrape answers (with status 503) when the database cannot be read."""
    return f"# pggcl: {str(reason).strip() or type(reason).__name__}\n"
