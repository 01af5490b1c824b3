"""The async client (asyncpg), and ``concurrency`` / ``rate_limit`` for the DSN in PGGCL_DSN.

from pggcl.asyncio import concurrency, rate_limit

async with concurrency("database", occupy=1, timeout_seconds=10):
    ...
await rate_limit("rate-limited-api")

``concurrency`` and ``rate_limit`` take the parameters of ``prefect.concurrency.asyncio``'s, by
the same names, positions and defaults (see the client method's docstring and
docs/migrating-from-prefect.md for what each does here).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from pggcl.client.client_async import AsyncClient
from pggcl.core.options import env_dsn, env_session_dsn
from pggcl.models import Grant

__all__ = ["AsyncClient", "concurrency", "rate_limit"]


# --- Module-level functions: one client per event loop and DSN -------------------------------

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def _client() -> AsyncClient:
    dsn = env_dsn()
    per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    client = per_loop.get(dsn)
    if client is None:
        client = per_loop[dsn] = AsyncClient(dsn, session_dsn=env_session_dsn())
    return client


def concurrency(
    names: str | Sequence[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    max_retries: int | None = None,
    lease_duration: float | None = 300,
    strict: bool = False,
    holder: str | Any | None = None,
    raise_on_lease_renewal_failure: bool | None = None,
    *,
    priority: float = 0.0,
) -> AbstractAsyncContextManager[Grant]:
    """:meth:`AsyncClient.concurrency` on this loop's client of PGGCL_DSN."""
    return _client().concurrency(
        names,
        occupy,
        timeout_seconds,
        max_retries,
        lease_duration,
        strict,
        holder,
        raise_on_lease_renewal_failure,
        priority=priority,
    )


async def rate_limit(
    names: str | Sequence[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    *,
    priority: float = 0.0,
) -> None:
    """:meth:`AsyncClient.rate_limit` on this loop's client of PGGCL_DSN."""
    await _client().rate_limit(names, occupy, timeout_seconds, strict, priority=priority)
