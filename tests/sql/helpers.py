"""Small helpers for calling the engine from tests."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row


def one(conn: psycopg.Connection[Any], query: str, *args: Any) -> dict[str, Any]:
    """Run `query` and return its single row as a dict. A single dict argument fills named
    placeholders."""
    params = args[0] if len(args) == 1 and isinstance(args[0], dict) else args
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        row = cur.fetchone()
    assert row is not None, query
    return row


def value(conn: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None, query
    return row[0]


def _call_acquire(
    function: str,
    conn: psycopg.Connection[Any],
    names: list[str],
    occupy: int,
    mode: str,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    named = "".join(f", {k} => %({k})s" for k in kwargs)
    return one(
        conn,
        f"SELECT * FROM pggcl.{function}(%(names)s, %(occupy)s, %(mode)s{named})",
        {"names": names, "occupy": occupy, "mode": mode, **kwargs},
    )


def try_acquire(
    conn: psycopg.Connection[Any],
    names: list[str],
    occupy: int = 1,
    mode: str = "concurrency",
    **kwargs: Any,
) -> dict[str, Any]:
    return _call_acquire("try_acquire", conn, names, occupy, mode, kwargs)


def acquire(
    conn: psycopg.Connection[Any],
    names: list[str],
    occupy: int = 1,
    mode: str = "concurrency",
    **kwargs: Any,
) -> dict[str, Any]:
    """pggcl.acquire (queues when refused) on this connection's own session."""
    return _call_acquire("acquire", conn, names, occupy, mode, kwargs)


def release(conn: psycopg.Connection[Any], lease_id: uuid.UUID) -> bool:
    return bool(value(conn, "SELECT pggcl.release(%s)", lease_id))


def limit(conn: psycopg.Connection[Any], name: str) -> dict[str, Any]:
    return one(conn, "SELECT * FROM pggcl.limits WHERE name = %s", name)


def open_session(conn: psycopg.Connection[Any], grace_seconds: float = 5.0) -> dict[str, Any]:
    """Register `conn` as a session and LISTEN on its channel."""
    session = one(conn, "SELECT * FROM pggcl.open_session(%s)", grace_seconds)
    conn.execute(f'LISTEN "{session["channel"]}"')
    return session


def notifications(conn: psycopg.Connection[Any], count: int, timeout: float = 10.0) -> list[str]:
    """Wait for `count` notifications on `conn` and return their payloads."""
    payloads: list[str] = []
    for note in conn.notifies(timeout=timeout, stop_after=count):
        payloads.append(note.payload)
    assert len(payloads) == count, f"expected {count} notifications, got {payloads}"
    return payloads
