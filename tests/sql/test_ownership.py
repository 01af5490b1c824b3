"""Ownership and secret channels (issue #13, points 1 and 2): a session is its role's; its
notifications go to a channel only its owner is told."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.sql.helpers import value

Conn = psycopg.Connection[Any]


@pytest.fixture
def two_tenants(pggcl_role_dsn: Callable[[str], str]) -> Iterator[tuple[Conn, Conn, Conn]]:
    alice = psycopg.connect(pggcl_role_dsn("pggcl_user"), autocommit=True)
    bob = psycopg.connect(pggcl_role_dsn("pggcl_user"), autocommit=True)
    manager = psycopg.connect(pggcl_role_dsn("pggcl_admin"), autocommit=True)
    yield alice, bob, manager
    for conn in (alice, bob, manager):
        conn.close()


def test_the_channel_is_secret_and_short(db: Conn) -> None:
    [(session_id, channel)] = db.execute(
        "SELECT session_id, channel FROM pggcl.open_session()"
    ).fetchall()
    assert re.fullmatch(rf"pggcl_{session_id}_[0-9a-f]{{32}}", channel)
    assert len(channel.encode()) <= 63
    assert re.fullmatch(r"pggcl_[0-9A-Za-z_]{1,57}", channel)


def test_a_grant_goes_to_the_stored_channel_only(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    lease = value(db, "SELECT lease_id FROM pggcl.try_acquire('{db}', ttl_seconds => 60)")
    waiter = connect()
    [(session_id, channel)] = waiter.execute(
        "SELECT session_id, channel FROM pggcl.open_session()"
    ).fetchall()
    waiter.execute(f'LISTEN "{channel}"')
    spy = connect()
    spy.execute(f'LISTEN "pggcl_{session_id}"')
    waiter_id = value(waiter, "SELECT waiter_id FROM pggcl.acquire('{db}')")
    assert value(db, "SELECT pggcl.release(%s)", lease) is True
    heard = [n.payload for n in waiter.notifies(timeout=2, stop_after=1)]
    assert heard == [f"g:{waiter_id}"]
    assert list(spy.notifies(timeout=0.3)) == []


def test_another_roles_session_lease_and_waiter_are_refused(
    two_tenants: tuple[Conn, Conn, Conn], db: Conn
) -> None:
    alice, bob, manager = two_tenants
    db.execute("SELECT pggcl.create_limit('x', 1)")
    db.execute("SELECT pggcl.create_limit('y', 1)")
    db.execute("SELECT pggcl.create_limit('z', 1)")  # with room: take would succeed
    db.execute("SELECT pggcl.try_acquire('{y}', ttl_seconds => 600)")
    sid = value(alice, "SELECT session_id FROM pggcl.open_session()")
    lease = value(alice, "SELECT lease_id FROM pggcl.try_acquire('{x}')")
    waiter = value(alice, "SELECT waiter_id FROM pggcl.acquire('{y}')")
    bob.execute("SELECT pggcl.open_session()")
    for query in (
        "SELECT pggcl.take('z', 1, %s, 'bob', gen_random_uuid())",
        "SELECT pggcl.acquire('{z}', session_id => %s)",
        "SELECT pggcl.acquire('{x}', session_id => %s)",
        "SELECT pggcl.try_acquire('{z}', session_id => %s)",
        "SELECT pggcl.heartbeat(%s)",
    ):
        with pytest.raises(psycopg.Error) as raised:
            bob.execute(query, (sid,))
        assert raised.value.sqlstate == "GC007", query
    assert value(bob, "SELECT pggcl.release(%s)", lease) is False
    assert value(bob, "SELECT pggcl.renew(%s, 1)", lease) is False
    assert value(bob, "SELECT pggcl.cancel(%s)", waiter) == "gone"
    assert value(db, "SELECT count(*) FROM pggcl.waiters WHERE id = %s", waiter) == 1
    assert value(db, "SELECT count(*) FROM pggcl.leases WHERE session_id = %s", sid) == 1
    assert value(db, "SELECT expires_at IS NULL FROM pggcl.leases WHERE id = %s", lease) is True
    # The owner still may; a manager may release any lease.
    assert value(alice, "SELECT pggcl.renew(%s, 60)", lease) is True
    assert value(manager, "SELECT pggcl.release(%s)", lease) is True
    assert value(alice, "SELECT pggcl.cancel(%s)", waiter) == "cancelled"
