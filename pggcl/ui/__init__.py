"""The web UI served by ``pggcl ui``: see and change the limits, live.

Needs the ``ui`` extra (``pip install 'pggcl[ui]'``: Starlette, Jinja2, uvicorn). It calls only
the public async client; the layout is

- ``app``: the app factory (``create_app``), routes and error pages;
- ``views`` and ``actions``: the pages, and the forms' changes; ``forms``: reading a form;
- ``live`` and ``events``: the sampler hub and the server-sent event streams;
- ``guard``: Host check, token, CSRF and security headers; ``access``: the role's rights;
- ``metrics``: ``/metrics`` for Prometheus; ``server``: running it under uvicorn.
"""

from __future__ import annotations

from pggcl.ui.app import create_app

__all__ = ["create_app"]
