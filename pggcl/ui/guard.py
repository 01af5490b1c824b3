"""The UI's front door, as plain ASGI middleware (it must not buffer the event streams).

- Host check: with no token the UI trusts only the loopback names in the Host header, so a
  web page whose name was rebound to 127.0.0.1 (DNS rebinding) cannot read or drive it.
- Token: when one is set, every request carries it, as ``Authorization: Bearer TOKEN`` (for
  /metrics scrapers and scripts), or as the cookie set by opening ``/?token=TOKEN`` once.
- Cross-site requests: a change must come from a page of this UI. Unsafe methods from another
  origin (``Origin``, ``Sec-Fetch-Site``) are refused here; each form also carries a token
  derived from a per-browser cookie (see :func:`csrf_token`), checked when it is read.
- Headers that keep the pages from being framed or loading anything from elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import Headers, MutableHeaders, QueryParams
from starlette.requests import Request, cookie_parser
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_COOKIE = "pggcl_token"
CSRF_COOKIE = "pggcl_csrf"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # Not no-referrer: with it Chromium sends `Origin: null` on the UI's own form posts.
    "referrer-policy": "same-origin",
}


def host_name(host_header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else ""
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _cookie_value(token: str) -> str:
    # The cookie holds a digest of the token, not the token itself.
    return hashlib.sha256(f"pggcl-ui:{token}".encode()).hexdigest()


def csrf_token(secret: bytes, csrf_id: str) -> str:
    """The form token of the browser whose CSRF cookie is ``csrf_id``: a page of another site
    can neither read the cookie nor compute this from it."""
    return hmac.new(secret, csrf_id.encode(), hashlib.sha256).hexdigest()


def csrf_ok(request: Request, secret: bytes, submitted: str) -> bool:
    csrf_id = request.cookies.get(CSRF_COOKIE, "")
    return bool(csrf_id) and hmac.compare_digest(csrf_token(secret, csrf_id), submitted)


class Guard:
    """See the module docstring. ``hosts`` None accepts any Host header (a token guards)."""

    def __init__(
        self, app: ASGIApp, *, token: str | None, hosts: Iterable[str] | None, secret: bytes
    ) -> None:
        self.app = app
        self._token_cookie = _cookie_value(token) if token else None
        self._token = token
        self._hosts = None if hosts is None else frozenset(h.strip("[]") for h in hosts)
        self._secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await self._respond(refusal, scope, receive, send)
            return
        cookies = cookie_parser(headers.get("cookie", ""))
        csrf_id = cookies.get(CSRF_COOKIE, "")
        fresh = len(csrf_id) != 32
        if fresh:
            csrf_id = secrets.token_hex(16)
        scope.setdefault("state", {})["csrf_id"] = csrf_id

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    out.setdefault(name, value)
                if fresh:
                    out.append("set-cookie", _cookie(CSRF_COOKIE, csrf_id))
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope, headers: Headers) -> Response | None:
        host = headers.get("host", "")
        if self._hosts is not None and host_name(host) not in self._hosts:
            return PlainTextResponse(
                f"pggcl ui: unexpected Host header {host!r}. Without --token the UI answers"
                " only to loopback names (127.0.0.1, localhost, [::1]).",
                status_code=421,
            )
        if self._token is not None:
            refusal = self._check_token(scope, headers)
            if refusal is not None:
                return refusal
        if scope["method"] not in _SAFE_METHODS and not _same_origin(headers, host):
            return PlainTextResponse(
                "pggcl ui: refused a change sent from another site.", status_code=403
            )
        return None

    def _check_token(self, scope: Scope, headers: Headers) -> Response | None:
        assert self._token is not None and self._token_cookie is not None
        query = QueryParams(scope.get("query_string", b""))
        given = query.get("token")
        if given is not None and hmac.compare_digest(given.encode(), self._token.encode()):
            # Trade the token in the address for a cookie, and drop it from the address bar.
            rest = urlencode([(k, v) for k, v in query.multi_items() if k != "token"])
            target = scope["path"] + (f"?{rest}" if rest else "")
            redirect = RedirectResponse(target, status_code=303)
            redirect.headers.append("set-cookie", _cookie(TOKEN_COOKIE, self._token_cookie))
            return redirect
        bearer = headers.get("authorization", "")
        if bearer.startswith("Bearer ") and hmac.compare_digest(
            bearer[7:].strip().encode(), self._token.encode()
        ):
            return None
        cookie = cookie_parser(headers.get("cookie", "")).get(TOKEN_COOKIE, "")
        if cookie and hmac.compare_digest(cookie, self._token_cookie):
            return None
        return PlainTextResponse(
            "pggcl ui: this UI needs its token. Open the address `pggcl ui` printed"
            " (it ends in ?token=...), or send `Authorization: Bearer TOKEN`.",
            status_code=401,
            headers={"www-authenticate": "Bearer"},
        )

    async def _respond(
        self, response: Response, scope: Scope, receive: Receive, send: Send
    ) -> None:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        await response(scope, receive, send)


def _same_origin(headers: Headers, host: str) -> bool:
    """False when the browser says the request comes from another origin (browsers send
    Sec-Fetch-Site; Origin is the fallback; a client that sends neither is not a browser, and
    the form token still guards it)."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = headers.get("origin")
    return origin is None or urlsplit(origin).netloc == host


def _cookie(name: str, value: str) -> str:
    return f"{name}={value}; Path=/; HttpOnly; SameSite=Strict"
