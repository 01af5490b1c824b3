"""What the forms change: create, edit, activate/deactivate, delete, release a lease.

Every change is a POST of a form of this UI (its CSRF token is checked here) by a UI whose
database role may manage limits; then it redirects (303) to the page that shows the result.
"""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pggcl.errors import LimitNotFoundError, PermissionDeniedError, PggclError
from pggcl.ui.forms import FormRejected, LimitForm, read_form
from pggcl.ui.guard import csrf_ok
from pggcl.ui.present import limit_url
from pggcl.ui.state import ui_state
from pggcl.ui.views import form_page, limit_name


async def change_form(request: Request) -> dict[str, str]:
    """The posted form, once it is known to come from this UI and the role may change."""
    ui = ui_state(request)
    try:
        fields = await read_form(request)
    except FormRejected as exc:
        raise HTTPException(400, str(exc)) from exc
    if not csrf_ok(request, ui.secret, fields.get("csrf", "")):
        raise HTTPException(
            403, "this form is not from this UI, or it has expired: reload the page and retry"
        )
    access = await ui.access()
    if not access.can_manage:
        raise HTTPException(
            403, f"read-only: the database role {access.role!r} may not change limits"
        )
    return fields


def see(url: str, done: str, name: str | None = None) -> RedirectResponse:
    """Redirect to ``url`` with the notice ``done`` (about limit ``name``)."""
    params = {"done": done}
    if name is not None and "name" not in parse_qs(urlsplit(url).query):
        params["name"] = name
    return RedirectResponse(f"{url}{'&' if '?' in url else '?'}{urlencode(params)}", 303)


def local(url: str, default: str = "/") -> str:
    """``url`` if it is a path on this site (never another site's address), else ``default``."""
    return url if url.startswith("/") and not url.startswith(("//", "/\\")) else default


async def create_limit(request: Request) -> Response:
    form = LimitForm.from_fields(await change_form(request))
    values = form.values()
    if values is not None:
        try:
            await ui_state(request).client.create_limit(form.name, *values, active=form.active)
        except PermissionDeniedError:
            raise  # not about the form: the error page, which makes the UI read-only
        except PggclError as exc:
            form.reject(exc)
        else:
            return see(limit_url(form.name), "created")
    return await form_page(request, form, status_code=422)


async def edit_limit(request: Request) -> Response:
    name = limit_name(request)
    form = LimitForm.from_fields(await change_form(request))
    values = form.values()
    if values is not None:
        limit, decay = values
        try:
            await ui_state(request).client.update_limit(
                name,
                limit=limit,
                slot_decay_per_second=decay,
                active=form.active,
                new_name=form.name if form.name != name else None,
            )
        except LimitNotFoundError:
            return see("/", "limit-gone", name)
        except PermissionDeniedError:
            raise
        except PggclError as exc:
            form.reject(exc)
        else:
            return see(limit_url(form.name), "updated")
    return await form_page(request, form, original=name, status_code=422)


async def set_active(request: Request) -> Response:
    fields = await change_form(request)
    name, active = fields.get("name", ""), fields.get("active") == "true"
    back = local(fields.get("back", "/"))
    try:
        await ui_state(request).client.update_limit(name, active=active)
    except LimitNotFoundError:
        return see("/", "limit-gone", name)
    return see(back, "activated" if active else "deactivated", name)


async def delete_limit(request: Request) -> Response:
    name = limit_name(request)
    await change_form(request)
    deleted = await ui_state(request).client.delete_limit(name)
    return see("/", "deleted" if deleted else "limit-gone", name)


async def release_lease(request: Request) -> Response:
    fields = await change_form(request)
    back = limit_url(fields["name"]) if "name" in fields else "/"
    try:
        lease_id = uuid.UUID(fields.get("lease_id", ""))
    except ValueError as exc:
        raise HTTPException(400, f"not a lease id: {fields.get('lease_id', '')!r}") from exc
    released = await ui_state(request).client.release(lease_id)
    return see(back, "released" if released else "lease-gone")
