"""Liveness cannot be faked (beyond issue #13's list). A session's liveness is its advisory lock
(1885824867, session_id); advisory locks are open to every role, pggcl rights or not, and
session ids are small sequential integers. A role with no pggcl rights must neither stop others
from opening sessions nor keep a dead session's slots held forever."""

from __future__ import annotations

import time

from tests.security.conftest import Cast
from tests.security.helpers import Connect, RawSession, attempt, describe, holders, rows

LOCK_SPACE = 1885824867


def test_an_outsiders_advisory_locks_stop_nobody_from_opening_a_session(
    cast: Cast, connect: Connect
) -> None:
    outsider = connect(cast.outsider.dsn)
    taken = outsider.execute(
        "SELECT count(*) FILTER (WHERE pg_try_advisory_lock(%s, n)) FROM generate_series(1, 200) n",
        (LOCK_SPACE,),
    ).fetchone()
    assert taken == (200,)
    tenant = connect(cast.tenant.dsn)
    errors = []
    for _ in range(3):  # a client retries GC008 a few times
        _, error = attempt(tenant, "SELECT session_id FROM pggcl.open_session()")
        if error is None:
            return
        assert error.sqlstate == "GC008", describe(error)
        errors.append(describe(error))
    raise AssertionError(f"open_session kept failing: {errors}")


def test_an_outsider_cannot_keep_a_dead_session_alive(cast: Cast, connect: Connect) -> None:
    admin = connect(cast.admin.dsn)
    admin.execute("SELECT pggcl.create_limit('x', 1)")
    victim = RawSession(connect(cast.other.dsn), grace_seconds=0.1)
    victim.hold("x")
    outsider = connect(cast.outsider.dsn)
    victim.conn.close()
    grabbed = False
    deadline = time.monotonic() + 5
    while not grabbed and time.monotonic() < deadline:
        grabbed, _ = attempt(
            outsider, "SELECT pg_try_advisory_lock(%s, %s)", LOCK_SPACE, victim.session_id
        )
        time.sleep(0.005)
    assert grabbed
    time.sleep(0.2)
    admin.execute("SELECT pggcl.reclaim()")  # notices the death, starts the grace
    time.sleep(0.3)
    admin.execute("SELECT pggcl.reclaim()")  # past the grace: reclaims
    assert holders(admin, "x") == [], rows(admin, "SELECT * FROM pggcl.sessions")


def test_a_waiters_heartbeat_reclaims_a_squatted_dead_holder(cast: Cast, connect: Connect) -> None:
    """No reclaim() needed: the heartbeat of the one waiter there (1 in `queued` heartbeats looks
    for squatted locks: here every one) finds the lock held by another backend than the
    holder's, and the holder is reclaimed after its grace."""
    admin = connect(cast.admin.dsn)
    admin.execute("SELECT pggcl.create_limit('x', 1)")
    victim = RawSession(connect(cast.other.dsn), grace_seconds=0.1)
    victim.hold("x")
    waiter = RawSession(connect(cast.tenant.dsn))
    waiter_id, _ = waiter.wait_for("x")
    outsider = connect(cast.outsider.dsn)
    victim.conn.close()
    grabbed = False
    deadline = time.monotonic() + 5
    while not grabbed and time.monotonic() < deadline:
        grabbed, _ = attempt(
            outsider, "SELECT pg_try_advisory_lock(%s, %s)", LOCK_SPACE, victim.session_id
        )
        time.sleep(0.005)
    assert grabbed
    granted = False
    deadline = time.monotonic() + 10
    while not granted and time.monotonic() < deadline:
        waiter.conn.execute("SELECT pggcl.heartbeat(%s)", (waiter.session_id,))
        granted = f"g:{waiter_id}" in waiter.payloads(timeout=0.2)
    assert granted, rows(admin, "SELECT * FROM pggcl.sessions")
