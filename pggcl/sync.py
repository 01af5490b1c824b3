"""The sync client (psycopg 3), and ``concurrency`` / ``rate_limit`` for the DSN in PGGCL_DSN.

from pggcl.sync import concurrency, rate_limit

with concurrency("database", occupy=1, timeout_seconds=10):
    ...
rate_limit("rate-limited-api")

``concurrency`` and ``rate_limit`` take the parameters of ``prefect.concurrency.sync``'s, by
the same names, positions and defaults (see the client method's docstring and
docs/migrating-from-prefect.md for what each does here).
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from pggcl.client.client_sync import Client
from pggcl.core.options import env_dsn, env_session_dsn
from pggcl.models import Grant

__all__ = ["Client", "concurrency", "rate_limit"]


# --- Module-level functions: one client per process and DSN ----------------------------------

_clients: dict[str, Client] = {}
_clients_lock = threading.Lock()


def _client() -> Client:
    dsn = env_dsn()
    with _clients_lock:
        client = _clients.get(dsn)
        if client is None:
            client = _clients[dsn] = Client(dsn, session_dsn=env_session_dsn())
        return client


def _after_fork_in_child() -> None:
    global _clients_lock
    _clients_lock = threading.Lock()  # another thread may have held it at fork time


def _close_all() -> None:
    """Close the process-wide clients (at exit; tests call it between tests)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all)


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
) -> AbstractContextManager[Grant]:
    """:meth:`Client.concurrency` on the process-wide client of PGGCL_DSN."""
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


def rate_limit(
    names: str | Sequence[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    *,
    priority: float = 0.0,
) -> None:
    """:meth:`Client.rate_limit` on the process-wide client of PGGCL_DSN."""
    _client().rate_limit(names, occupy, timeout_seconds, strict, priority=priority)
