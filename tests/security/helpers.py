"""Helpers of the security suite: refusals, snapshots of the private tables, the protocol."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

Connect = Callable[[str], psycopg.Connection[Any]]

#: What a refusal may look like: pggcl's own class, or "permission denied".
REFUSED_CLASS = "GC"
PERMISSION_DENIED = "42501"


def is_refusal(error: psycopg.Error) -> bool:
    state = error.sqlstate or ""
    return state.startswith(REFUSED_CLASS) or state == PERMISSION_DENIED


def describe(error: psycopg.Error) -> str:
    return f"{error.sqlstate}: {str(error).splitlines()[0] if str(error) else ''}"


def rows(conn: psycopg.Connection[Any], query: str, *args: Any) -> list[dict[str, Any]]:
    params = args[0] if len(args) == 1 and isinstance(args[0], dict) else args
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def one(conn: psycopg.Connection[Any], query: str, *args: Any) -> dict[str, Any]:
    found = rows(conn, query, *args)
    assert len(found) == 1, (query, found)
    return found[0]


def value(conn: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    params = args[0] if len(args) == 1 and isinstance(args[0], dict) else args
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row[0]


def attempt(
    conn: psycopg.Connection[Any], query: str, *args: Any
) -> tuple[Any, psycopg.Error | None]:
    """Run `query`; (first column of its first row, None), or (None, the error)."""
    params = args[0] if len(args) == 1 and isinstance(args[0], dict) else args
    try:
        cur = conn.execute(query, params)
        row = cur.fetchone() if cur.description is not None else None
    except psycopg.Error as error:
        return None, error
    return (row[0] if row else None), None


def refused_or_harmless(conn: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    """Run an attack. A refusal must be clear (class GC or 42501); any other error fails the
    test. Returns the result, or None when refused. The caller checks that it was harmless."""
    result, error = attempt(conn, query, *args)
    if error is not None:
        assert is_refusal(error), f"{query}: unclear error {describe(error)}"
    return result


# --- State --------------------------------------------------------------------------------

#: Every private table, in a form that compares across calls (sequences excluded: nextval is
#: never rolled back, so a refused call may move them).
_SNAPSHOT = {
    "limit_state": "SELECT to_jsonb(x) FROM pggcl.limit_state x ORDER BY id",
    "sessions": "SELECT to_jsonb(x) FROM pggcl.sessions x ORDER BY id",
    "leases": "SELECT to_jsonb(x) FROM pggcl.leases x ORDER BY id, limit_id",
    "waiters": "SELECT to_jsonb(x) FROM pggcl.waiters x ORDER BY limit_id, id",
}


def snapshot(admin: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """The private tables as the superuser sees them."""
    return {
        table: [json.dumps(r[0], sort_keys=True) for r in admin.execute(query)]
        for table, query in _SNAPSHOT.items()
    }


_BOOKKEEPING = """
SELECT l.name, l.held, l.queued,
       (SELECT coalesce(sum(x.occupy), 0) FROM pggcl.leases x WHERE x.limit_id = l.id) AS leased,
       (SELECT count(DISTINCT w.id) FROM pggcl.waiters w WHERE w.limit_id = l.id) AS waiting
FROM pggcl.limit_state l
"""


def assert_bookkeeping(admin: psycopg.Connection[Any]) -> None:
    """Every limit's counters agree with the rows they count."""
    for name, held, queued, leased, waiting in admin.execute(_BOOKKEEPING):
        assert (held, queued) == (leased, waiting), f"limit {name!r}: counters drifted"


def holders(admin: psycopg.Connection[Any], name: str) -> list[dict[str, Any]]:
    return rows(admin, "SELECT * FROM pggcl.holders WHERE name = %s ORDER BY since", name)


def queue(admin: psycopg.Connection[Any], name: str) -> list[dict[str, Any]]:
    return rows(admin, "SELECT * FROM pggcl.queue WHERE name = %s ORDER BY position", name)


# --- The documented protocol, by hand -----------------------------------------------------


class RawSession:
    """A client following the README's protocol on one connection: open_session, LISTEN on
    the returned channel, acquire, and wait for notifications."""

    def __init__(self, conn: psycopg.Connection[Any], grace_seconds: float = 5.0) -> None:
        self.conn = conn
        s = one(conn, "SELECT * FROM pggcl.open_session(%s)", grace_seconds)
        self.session_id: int = s["session_id"]
        self.token: uuid.UUID = s["token"]
        self.channel: str = s["channel"]
        conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self.channel)))

    def acquire(self, names: list[str], occupy: int = 1, **kwargs: Any) -> dict[str, Any]:
        named = "".join(f", {k} => %({k})s" for k in kwargs)
        return one(
            self.conn,
            f"SELECT * FROM pggcl.acquire(%(names)s, %(occupy)s, session_id => %(sid)s{named})",
            {"names": names, "occupy": occupy, "sid": self.session_id, **kwargs},
        )

    def hold(self, name: str, occupy: int = 1, **kwargs: Any) -> uuid.UUID:
        got = self.acquire([name], occupy, **kwargs)
        assert got["granted"], got
        lease: uuid.UUID = got["lease_id"]
        return lease

    def wait_for(self, name: str, occupy: int = 1) -> tuple[int, uuid.UUID]:
        """Queue a request (the limit must be full): (waiter_id, lease_id)."""
        got = self.acquire([name], occupy)
        assert not got["granted"] and got["waiter_id"] is not None, got
        return got["waiter_id"], got["lease_id"]

    def payloads(self, timeout: float) -> list[str]:
        """The notifications that arrived on this connection within `timeout` seconds."""
        return [n.payload for n in self.conn.notifies(timeout=timeout)]
