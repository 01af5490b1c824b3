"""The pages: the limits, one limit, the create/edit forms and the delete question."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from pggcl.errors import LimitNotFoundError
from pggcl.ui import per_template
from pggcl.ui.forms import LABELS, LimitForm
from pggcl.ui.guard import csrf_token
from pggcl.ui.per_template import BLANK_TEMPLATE, SHOWN, overview
from pggcl.ui.present import (
    WHY_HOLDERS,
    by_waiter,
    holder_view,
    limit_url,
    limit_view,
    waiter_view,
)
from pggcl.ui.state import ui_state

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

NOTICES = {
    "created": "Created limit {name}.",
    "updated": "Saved limit {name}.",
    "deleted": "Deleted limit {name}.",
    "activated": "Activated limit {name}: it limits again.",
    "deactivated": "Deactivated limit {name}: it blocks nobody now.",
    "released": "Released the lease.",
    "lease-gone": "That lease was no longer held.",
    "limit-gone": "There was no limit {name} any more.",
}

_BLANK_BAR = {"held_pct": 0, "decaying_pct": 0, "text": "", "title": "", "over": False}
BLANK_LIMIT: dict[str, Any] = {
    "name": "", "url": "", "edit_url": "", "delete_url": "", "limit": "", "active": True,
    "active_text": "", "decay": "", "waiting": "", "bar": _BLANK_BAR,
}  # fmt: skip
BLANK_HOLDER = dict.fromkeys(("lease_id", "slots", "holder", "since", "expires"), "")
BLANK_WAITER: dict[str, Any] = {
    **dict.fromkeys(("waiter_id", "position", "priority", "occupy", "mode", "holder", "since"), ""),
    "why": [],
}
BLANK_WHY: dict[str, Any] = {
    **dict.fromkeys(("name", "state", "place", "usage", "room", "more"), ""),
    "blocking": False,
    "holders": [],
}
BLANK_WHY_HOLDER = dict.fromkeys(("holder", "title", "slots", "since", "expires"), "")


def notice(request: Request) -> str | None:
    """The message of the action that led here (``?done=...``), if any."""
    text = NOTICES.get(request.query_params.get("done", ""))
    return text.format(name=repr(request.query_params.get("name", ""))) if text else None


def here(request: Request) -> str:
    """This page's path and query, without the notice: where a form comes back to."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "done"]
    return request.url.path + (f"?{urlencode(query)}" if query else "")


async def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    ui = ui_state(request)
    base = {
        "access": await ui.access(),
        "csrf": csrf_token(ui.secret, request.state.csrf_id),
        "notice": notice(request),
        "labels": LABELS,
    }
    return templates.TemplateResponse(
        request, template, {**base, **context}, status_code=status_code
    )


def limit_name(request: Request) -> str:
    name = request.query_params.get("name")
    if name is None:
        raise LimitNotFoundError("no limit name given (?name=...)")
    return name


async def limits_page(request: Request) -> Response:
    query = request.query_params.get("q", "").strip()
    client = ui_state(request).client
    # Bounded however many instances templates have: each template's busiest few only.
    limits, totals = await asyncio.gather(client.busiest_limits(SHOWN), client.template_totals())
    shown, templates = overview(limits, totals, query)
    return await render(
        request,
        "limits.html",
        {
            "limits": shown,
            "templates": templates,
            "q": query,
            "blank": BLANK_LIMIT,
            "blank_template": BLANK_TEMPLATE,
            "back": here(request),
            "events": "/events?" + urlencode({"q": query}),
        },
    )


async def template_page(request: Request) -> Response:
    """A template with its totals, and its instances in name order, a page
    (:data:`per_template.PAGE`) at a time: ``?after=NAME`` is the page after that name."""
    name = request.query_params.get("name")
    if name is None:
        raise LimitNotFoundError("no template name given (?name=...)")
    after = request.query_params.get("after") or None
    client = ui_state(request).client
    totals = next((t for t in await client.template_totals() if t.name == name), None)
    if totals is None:
        raise LimitNotFoundError(f"template {name!r} does not exist")
    rows = await client.list_instances(name, after=after, max_rows=per_template.PAGE + 1)
    page, more = rows[: per_template.PAGE], len(rows) > per_template.PAGE
    return await render(
        request,
        "template.html",
        {
            "t": per_template.template_view(totals),
            "instances": [limit_view(lim) for lim in page],
            "after": after,
            "first_url": per_template.template_url(name) if after is not None else None,
            "next_url": per_template.template_url(name, page[-1].name) if more else None,
            "back": here(request),
            "page_size": per_template.PAGE,
        },
    )


async def limit_page(request: Request) -> Response:
    name = limit_name(request)
    client = ui_state(request).client
    limit = await client.read_limit(name)
    if limit.waiting:  # why its requests wait: one more read, only when some do
        holders, queue, why = await asyncio.gather(
            client.holders(name), client.queue(name), client.explain_queue(name, WHY_HOLDERS)
        )
    else:
        holders, queue = await asyncio.gather(client.holders(name), client.queue(name))
        why = []
    explained = by_waiter(why)
    return await render(
        request,
        "limit.html",
        {
            "l": limit_view(limit),
            "limit_name": name,
            "holders": [holder_view(h) for h in holders],
            "queue": [waiter_view(w, explained.get(w.waiter_id, ())) for w in queue],
            "blank_holder": BLANK_HOLDER,
            "blank_waiter": BLANK_WAITER,
            "blank_why": BLANK_WHY,
            "blank_why_holder": BLANK_WHY_HOLDER,
            "back": here(request),
            "events": "/events?" + urlencode({"limit": name}),
        },
    )


async def form_page(
    request: Request, form: LimitForm, original: str | None = None, status_code: int = 200
) -> Response:
    """The create form (``original`` None) or the edit form of limit ``original``."""
    if original is None:
        context = {
            "heading": "New limit",
            "action": "/limits/new",
            "submit": "Create",
            "cancel": "/",
        }
    else:
        context = {
            "heading": f"Edit {original}",
            "action": limit_url(original, "edit"),
            "submit": "Save",
            "cancel": limit_url(original),
        }
    return await render(
        request, "limit_form.html", {**context, "form": form, "original": original}, status_code
    )


async def new_limit_page(request: Request) -> Response:
    return await form_page(request, LimitForm())


async def edit_limit_page(request: Request) -> Response:
    name = limit_name(request)
    limit = await ui_state(request).client.read_limit(name)
    return await form_page(request, LimitForm.of(limit), original=name)


async def delete_limit_page(request: Request) -> Response:
    name = limit_name(request)
    limit = await ui_state(request).client.read_limit(name)
    return await render(
        request,
        "confirm_delete.html",
        {"l": limit_view(limit), "action": limit_url(name, "delete")},
    )
