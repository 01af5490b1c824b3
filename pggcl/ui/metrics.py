"""``/metrics``: every limit in the Prometheus text format, gauges, counters and histograms
(:mod:`pggcl.prometheus` renders them; ``pggcl metrics`` serves the same text without the UI).

Read fresh from the database at each scrape, from the views pggcl.limits (the plain limits and
each template's busiest instances, chosen in the database) and pggcl.template_totals (one row
per template), which take no lock an acquire waits for (not from the sampler, which runs only
while a page is open).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from pggcl.errors import PggclError
from pggcl.prometheus import BUSIEST, CONTENT_TYPE, exposition, label, number, unavailable
from pggcl.ui.state import ui_state

__all__ = ["CONTENT_TYPE", "exposition", "label", "metrics", "number"]


async def metrics(request: Request) -> Response:
    client = ui_state(request).client
    try:
        limits = await client.busiest_limits(BUSIEST)
        templates = await client.template_totals()
    except PggclError as exc:
        return PlainTextResponse(unavailable(exc), status_code=503, media_type=CONTENT_TYPE)
    return PlainTextResponse(exposition(limits, templates), media_type=CONTENT_TYPE)
