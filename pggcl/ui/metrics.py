"""``/metrics``: every limit in the Prometheus text format (version 0.0.4).

Read fresh from the database at each scrape (not from the sampler, which runs only while a
page is open). Per limit, labelled ``name``: ``pggcl_limit``, ``pggcl_active_slots``,
``pggcl_waiting`` and ``pggcl_active`` (1 or 0).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from pggcl.errors import PggclError
from pggcl.models import ConcurrencyLimit
from pggcl.ui.state import ui_state

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRICS: list[tuple[str, str, Callable[[ConcurrencyLimit], float]]] = [
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


def label(value: str) -> str:
    """A label value, escaped as the text format asks (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def exposition(limits: list[ConcurrencyLimit]) -> str:
    lines: list[str] = []
    for name, help_text, value in _METRICS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f'{name}{{name="{label(lim.name)}"}} {number(value(lim))}' for lim in limits]
    return "\n".join(lines) + "\n"


async def metrics(request: Request) -> Response:
    try:
        limits = await ui_state(request).client.list_limits()
    except PggclError as exc:
        return PlainTextResponse(f"# pggcl: {exc}\n", status_code=503, media_type=CONTENT_TYPE)
    return PlainTextResponse(exposition(limits), media_type=CONTENT_TYPE)
