"""Dead sessions (issue #12, point 4): a dead session's waiters are never served nor shown, its
slots vanish from the views once its grace has passed; and the setting pggcl.session_id alone
makes no connection another session's."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.sql.helpers import value

Conn = psycopg.Connection[Any]


def _gone(db: Conn, session_id: int) -> None:
    """Wait until the backend of `session_id` has ended (its advisory lock is free)."""
    db.execute("SELECT pg_advisory_lock(1885824867, %s)", (session_id,))
    db.execute("SELECT pg_advisory_unlock(1885824867, %s)", (session_id,))


def _session(conn: Conn, grace: float = 5) -> int:
    return int(value(conn, "SELECT session_id FROM pggcl.open_session(%s)", grace))


@pytest.mark.parametrize("grace", [0, 60])
def test_a_dead_waiter_is_not_shown_nor_served(db: Conn, connect: Any, grace: float) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    holder = connect()
    _session(holder)
    lease = value(holder, "SELECT lease_id FROM pggcl.try_acquire('{db}')")
    dead = connect()
    dead_id = _session(dead, grace)
    assert value(dead, "SELECT waiter_id FROM pggcl.acquire('{db}')") is not None
    assert value(db, "SELECT waiting FROM pggcl.limits WHERE name = 'db'") == 1
    dead.close()
    _gone(db, dead_id)
    # Nothing else ran: reading is enough.
    assert value(db, "SELECT count(*) FROM pggcl.queue") == 0
    assert value(db, "SELECT waiting FROM pggcl.limits WHERE name = 'db'") == 0
    live = connect()
    live_id = _session(live)
    waiter = value(live, "SELECT waiter_id FROM pggcl.acquire('{db}')")
    assert value(db, "SELECT position FROM pggcl.queue WHERE waiter_id = %s", waiter) == 1
    assert value(holder, "SELECT pggcl.release(%s)", lease) is True
    # The slot went to the live waiter. Past its grace the dead one was dequeued; within it,
    # it was passed over and keeps its place, for a client that may be reconnecting.
    assert value(db, "SELECT session_id FROM pggcl.holders WHERE name = 'db'") == live_id
    kept = 0 if grace == 0 else 1
    assert value(db, "SELECT count(*) FROM pggcl.waiters WHERE session_id = %s", dead_id) == kept
    assert value(db, "SELECT queued FROM pggcl.limit_state WHERE name = 'db'") == kept
    if kept:  # the queue's lower bound stays below it: it is found again
        assert value(db, "SELECT queue_from FROM pggcl.limit_state WHERE name = 'db'") < value(
            db, "SELECT id FROM pggcl.waiters WHERE session_id = %s", dead_id
        )


def test_a_dead_waiter_on_several_limits_is_dropped_not_served(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('a', 1)")
    db.execute("SELECT pggcl.create_limit('b', 1)")
    holder = connect()
    _session(holder)
    lease = value(holder, "SELECT lease_id FROM pggcl.try_acquire('{a,b}')")
    dead = connect()
    dead_id = _session(dead, 0)  # past its grace at once: dropped
    dead.execute("SELECT pggcl.acquire('{a,b}')")
    dead.close()
    _gone(db, dead_id)
    assert value(holder, "SELECT pggcl.release(%s)", lease) is True
    assert value(db, "SELECT count(*) FROM pggcl.leases") == 0
    assert value(db, "SELECT count(*) FROM pggcl.waiters") == 0
    assert value(db, "SELECT sum(queued) FROM pggcl.limit_state") == 0


def test_a_dead_holders_slots_leave_the_views_once_its_grace_has_passed(
    db: Conn, connect: Any
) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    dead = connect()
    dead_id = _session(dead, 0)
    dead.execute("SELECT pggcl.try_acquire('{db}')")
    kept = connect()
    kept_id = _session(kept, 600)
    kept.execute("SELECT pggcl.try_acquire('{db}')")
    assert value(db, "SELECT held_slots FROM pggcl.limits WHERE name = 'db'") == 2
    dead.close()
    kept.close()
    _gone(db, dead_id)
    _gone(db, kept_id)
    # Grace 0: gone from the views at once; grace 600: still held (it may be resumed).
    assert value(db, "SELECT held_slots FROM pggcl.limits WHERE name = 'db'") == 1
    assert value(db, "SELECT active_slots FROM pggcl.limits WHERE name = 'db'") == 1
    assert value(db, "SELECT array_agg(session_id) FROM pggcl.holders") == [kept_id]


def test_setting_pggcl_session_id_makes_no_session_yours(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    victim = connect()
    victim_id = _session(victim)
    victim.execute("SELECT pggcl.try_acquire('{db}')")
    other = connect()
    other.execute("SELECT set_config('pggcl.session_id', %s, false)", (str(victim_id),))
    assert value(other, "SELECT pggcl.close_session()") is False
    assert value(other, "SELECT count(*) FROM pggcl.leases WHERE session_id = %s", victim_id) == 1
    opened = value(other, "SELECT session_id FROM pggcl.open_session()")
    assert opened != victim_id
    other.execute("SELECT set_config('pggcl.session_id', 'junk', false)")
    assert value(other, "SELECT session_id FROM pggcl.open_session()") not in (None, victim_id)
    # The victim's own connection still has its session.
    assert value(victim, "SELECT session_id FROM pggcl.open_session()") == victim_id
