"""The app factory: routes, error pages, the front door and the lifespan of one UI server."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from http import HTTPStatus
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pggcl.asyncio import AsyncClient
from pggcl.errors import (
    DatabaseUnavailableError,
    LimitNotFoundError,
    PermissionDeniedError,
    PggclError,
    SchemaNotInstalledError,
)
from pggcl.ui import actions, views
from pggcl.ui.events import events
from pggcl.ui.guard import LOOPBACK_HOSTS, Guard
from pggcl.ui.live import Hub
from pggcl.ui.metrics import metrics
from pggcl.ui.state import UiState

log = logging.getLogger("pggcl.ui")

ROUTES = [
    Route("/", views.limits_page),
    Route("/limits/new", views.new_limit_page),
    Route("/limits/new", actions.create_limit, methods=["POST"]),
    Route("/limit", views.limit_page),
    Route("/limit/edit", views.edit_limit_page),
    Route("/limit/edit", actions.edit_limit, methods=["POST"]),
    Route("/limit/delete", views.delete_limit_page),
    Route("/limit/delete", actions.delete_limit, methods=["POST"]),
    Route("/limit/active", actions.set_active, methods=["POST"]),
    Route("/template", views.template_page),
    Route("/lease/release", actions.release_lease, methods=["POST"]),
    Route("/events", events),
    Route("/metrics", metrics),
    Mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static"),
]


def create_app(
    dsn: str,
    *,
    token: str | None = None,
    hosts: Iterable[str] | None = LOOPBACK_HOSTS,
    interval: float = 1.0,
    window: float = 300.0,
    linger: float = 5.0,
) -> Starlette:
    """The UI for the database at ``dsn``.

    ``token``: when set, every request must carry it (see :mod:`pggcl.ui.guard`).
    ``hosts``: the Host names answered (default: loopback only); None answers any, which is
    safe only with a token. ``interval`` seconds between live samples, ``window`` seconds of
    chart history, ``linger`` seconds the sampler outlives the last open page.
    """
    client = AsyncClient(dsn)
    ui = UiState(dsn, client, Hub(client, interval=interval, window=window, linger=linger), token)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await ui.hub.close()
            await ui.client.close()

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(Guard, token=token, hosts=hosts, secret=ui.secret)],
        exception_handlers={PggclError: error_page, HTTPException: error_page},
        lifespan=lifespan,
    )
    app.state.ui = ui
    return app


async def error_page(request: Request, exc: Exception) -> Response:
    """An error as a page, chosen by its type: a missing limit (404), no database or no pggcl
    in it (503), a refusal (403), the rest (500)."""
    if isinstance(exc, HTTPException):
        status, message = exc.status_code, exc.detail
        heading = "Refused" if status == 403 else HTTPStatus(status).phrase
    elif isinstance(exc, LimitNotFoundError):
        name = request.query_params.get("name")
        status, heading = 404, "No such limit"
        message = f"There is no limit {name!r}." if name is not None else str(exc)
    elif isinstance(exc, DatabaseUnavailableError):
        status, heading, message = 503, "Database unavailable", str(exc)
    elif isinstance(exc, SchemaNotInstalledError):
        status, heading, message = 503, "pggcl is not installed", str(exc)
    elif isinstance(exc, PermissionDeniedError):
        # The role lost a grant since the UI last asked: the next page asks again, and shows
        # the UI read-only if that is what the role now is.
        request.app.state.ui.forget_access()
        status, heading, message = 403, "Refused", f"read-only: {exc}"
    else:
        status, heading, message = 500, "Error", str(exc)
        log.error("pggcl ui: %s", exc)
    return views.templates.TemplateResponse(
        request,
        "error.html",
        {"heading": heading, "message": message, "access": None, "labels": {}},
        status_code=status,
    )
