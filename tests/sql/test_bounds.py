"""Bounded inputs: every number a caller gives is bounded (GC003 naming the bound), and no value
the engine accepts makes another caller's call, a manager's call or reclaim() fail (issue #13,
point 3). The poison values come from a tenant: a login role that is only a member of
pggcl_user."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.sql.helpers import one, value

INT_MAX = 2**31 - 1
MAX_SLOTS = 1_000_000_000
MAX_SECONDS = 315_360_000  # 10 years


@pytest.fixture
def tenant(pggcl_role_dsn: Callable[[str], str]) -> psycopg.Connection[Any]:
    return psycopg.connect(pggcl_role_dsn("pggcl_user"), autocommit=True)


def _gc003(conn: psycopg.Connection[Any], query: str, *args: Any) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(query, args)
    assert raised.value.sqlstate == "GC003", raised.value
    return raised.value


def _everyone_else_works(db: psycopg.Connection[Any], name: str) -> None:
    """The manager reads, updates, reclaims and deletes; another caller acquires and releases."""
    other = value(db, "SELECT s.session_id FROM pggcl.open_session() s")
    got = one(db, "SELECT * FROM pggcl.try_acquire(%s, session_id => %s)", [name], other)
    if got["granted"]:
        assert value(db, "SELECT pggcl.release(%s)", got["lease_id"]) is True
    db.execute("SELECT * FROM pggcl.limits").fetchall()
    db.execute("SELECT * FROM pggcl.holders").fetchall()
    db.execute("SELECT * FROM pggcl.queue").fetchall()
    db.execute("SELECT pggcl.reclaim()")
    db.execute("SELECT pggcl.update_limit(%s, 3)", (name,))
    db.execute("SELECT pggcl.update_limit(%s, 1)", (name,))
    assert value(db, "SELECT pggcl.delete_limit(%s)", name) is True


@pytest.mark.parametrize(
    ("query", "args", "column", "bound"),
    [
        (
            "SELECT * FROM pggcl.acquire('{p}', ttl_seconds => %s)",
            (1e13,),
            "ttl_seconds",
            "315360000",
        ),
        (
            "SELECT * FROM pggcl.try_acquire('{p}', ttl_seconds => %s)",
            (MAX_SECONDS + 1.0,),
            "ttl_seconds",
            "10 years",
        ),
        ("SELECT pggcl.renew(gen_random_uuid(), %s)", (1e300,), "ttl_seconds", "315360000"),
        ("SELECT * FROM pggcl.open_session(%s)", (1e300,), "grace_seconds", "315360000"),
        ("SELECT * FROM pggcl.open_session(%s)", (MAX_SECONDS + 0.5,), "grace_seconds", "10 years"),
        ("SELECT * FROM pggcl.acquire('{p}', %s)", (MAX_SLOTS + 1,), "occupy", "1000000000"),
        ("SELECT * FROM pggcl.try_acquire('{p}', %s)", (INT_MAX,), "occupy", "1000000000"),
    ],
)
def test_a_tenant_out_of_bounds_is_refused_naming_the_bound(
    db: psycopg.Connection[Any],
    tenant: psycopg.Connection[Any],
    query: str,
    args: tuple[Any, ...],
    column: str,
    bound: str,
) -> None:
    db.execute("SELECT pggcl.create_limit('p', 1)")
    holder = one(db, "SELECT * FROM pggcl.try_acquire('{p}', ttl_seconds => 60)")
    error = _gc003(tenant, query, *args)
    assert error.diag.column_name == column
    assert bound in (error.diag.message_primary or "")
    assert value(db, "SELECT pggcl.release(%s)", holder["lease_id"]) is True
    _everyone_else_works(db, "p")


@pytest.mark.parametrize(
    ("call", "column"),
    [
        ("pggcl.create_limit('x', %s)", "limit"),
        ("pggcl.update_limit('p', %s)", "limit"),
    ],
)
def test_a_limit_above_the_bound_is_refused(
    db: psycopg.Connection[Any], call: str, column: str
) -> None:
    db.execute("SELECT pggcl.create_limit('p', 1)")
    error = _gc003(db, f"SELECT {call}", MAX_SLOTS + 1)
    assert error.diag.column_name == column
    assert "at most 1000000000 slots" in (error.diag.message_primary or "")
    db.execute(f"SELECT {call}", (MAX_SLOTS,))


@pytest.mark.parametrize("decay", [1e-300, 5e-324, 1e-10, 1e9 * 1.0001, 1e308])
def test_a_decay_out_of_bounds_is_refused(db: psycopg.Connection[Any], decay: float) -> None:
    error = _gc003(db, "SELECT pggcl.create_limit('r', 5, %s)", decay)
    assert error.diag.column_name == "slot_decay_per_second"
    assert "0 or from 1e-09 to 1e+09" in (error.diag.message_primary or "")


def test_the_longest_queued_ttl_wedges_nobody(
    db: psycopg.Connection[Any], tenant: psycopg.Connection[Any]
) -> None:
    db.execute("SELECT pggcl.create_limit('p', 1)")
    holder = one(db, "SELECT * FROM pggcl.try_acquire('{p}', ttl_seconds => 60)")
    queued = one(tenant, "SELECT * FROM pggcl.acquire('{p}', ttl_seconds => %s)", MAX_SECONDS)
    assert queued["waiter_id"] is not None
    # The holder's release grants the tenant's request: its expiry is 10 years from now.
    assert value(db, "SELECT pggcl.release(%s)", holder["lease_id"]) is True
    assert value(db, "SELECT count(*) FROM pggcl.holders WHERE expires IS NOT NULL") == 1
    assert value(tenant, "SELECT pggcl.renew(%s, %s)", queued["lease_id"], MAX_SECONDS) is True
    _everyone_else_works(db, "p")


def test_the_longest_grace_of_a_dead_holder_wedges_nobody(
    db: psycopg.Connection[Any], tenant: psycopg.Connection[Any]
) -> None:
    db.execute("SELECT pggcl.create_limit('p', 2)")
    tenant.execute("SELECT * FROM pggcl.open_session(%s)", (MAX_SECONDS,))
    assert one(tenant, "SELECT * FROM pggcl.acquire('{p}')")["granted"] is True
    tenant.close()  # dies holding a slot, which it keeps for its (long) grace
    time.sleep(0.1)
    db.execute("SELECT pggcl.reclaim()")
    got = one(db, "SELECT * FROM pggcl.try_acquire('{p}', ttl_seconds => 5)")
    assert got["granted"] is True
    refused = one(db, "SELECT * FROM pggcl.try_acquire('{p}', ttl_seconds => 5)")
    assert refused["granted"] is False
    assert refused["retry_after"] == pytest.approx(5, abs=1)  # the TTL above, not the grace
    _everyone_else_works(db, "p")


def test_holding_near_the_bound_leaves_sums_in_range(
    db: psycopg.Connection[Any], tenant: psycopg.Connection[Any]
) -> None:
    db.execute("SELECT pggcl.create_limit('p', %s)", (MAX_SLOTS,))
    tenant.execute("SELECT * FROM pggcl.open_session()")
    assert one(tenant, "SELECT * FROM pggcl.acquire('{p}', %s)", MAX_SLOTS - 1)["granted"]
    other = value(db, "SELECT s.session_id FROM pggcl.open_session() s")
    for occupy in (2, MAX_SLOTS):
        got = one(
            db,
            "SELECT * FROM pggcl.acquire('{p}', %s, session_id => %s, wait => false)",
            occupy,
            other,
        )
        assert got["granted"] is False
        assert (
            value(db, "SELECT pggcl.take('p', %s, %s, 'x', gen_random_uuid())", occupy, other)
            is False
        )
    _everyone_else_works(db, "p")


def test_many_large_requests_queued_ahead_are_summed_in_range(
    db: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    """Three queued requests of 10^9 slots add up past 2^31 - 1: the next request's retry_after
    (which counts the slots queued ahead) must still be computed."""
    db.execute("SELECT pggcl.create_limit('r', %s, 1.0)", (MAX_SLOTS,))
    assert one(db, "SELECT * FROM pggcl.try_acquire('{r}', %s, 'rate_limit')", MAX_SLOTS)["granted"]
    for _ in range(4):
        queued = one(connect(), "SELECT * FROM pggcl.acquire('{r}', %s, 'rate_limit')", MAX_SLOTS)
        assert queued["waiter_id"] is not None
        assert queued["retry_after"] > 0
    late = one(db, "SELECT * FROM pggcl.try_acquire('{r}', 1, 'rate_limit')")
    assert late["granted"] is False
    assert late["retry_after"] == pytest.approx(4 * MAX_SLOTS + 1, rel=1e-6)


MAX_HOLDER = 1000  # characters (revision 0008)


def test_holder_text_is_bounded(
    db: psycopg.Connection[Any], tenant: psycopg.Connection[Any]
) -> None:
    db.execute("SELECT pggcl.create_limit('h', 5)")
    tenant.execute("SELECT pggcl.open_session()")
    for function in ("acquire", "try_acquire"):
        error = _gc003(
            tenant, f"SELECT * FROM pggcl.{function}('{{h}}', holder => %s)", "é" * (MAX_HOLDER + 1)
        )
        assert error.diag.column_name == "holder"
        assert f"at most {MAX_HOLDER}" in str(error)
    # take, the cheap try, says false (and acquire then says why).
    sid = value(tenant, "SELECT session_id FROM pggcl.open_session()")
    assert (
        value(tenant, "SELECT pggcl.take('h', 1, %s, %s, gen_random_uuid())", sid, "x" * 1001)
        is False
    )
    # The bound itself is accepted, everywhere.
    got = one(tenant, "SELECT * FROM pggcl.acquire('{h}', holder => %s)", "é" * MAX_HOLDER)
    assert got["granted"]
    assert value(tenant, "SELECT pggcl.take('h', 1, %s, %s, gen_random_uuid())", sid, "x" * 1000)
    assert value(db, "SELECT max(length(holder)) FROM pggcl.holders") == MAX_HOLDER
    assert value(db, "SELECT count(*) FROM pggcl.leases") == 2
