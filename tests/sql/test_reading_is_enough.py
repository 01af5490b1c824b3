"""Reading is enough (issue #12, point 4): the views leave out a holder dead past its grace
although no client acts, counting the grace from when the server first saw it dead (a reader
may be the first), without taking a lock that anyone else waits for, and without failing in a
read-only transaction (revision 0008)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg

from tests.sql.conftest import Connect
from tests.sql.helpers import acquire, one, open_session, value

Conn = psycopg.Connection[Any]


def _dies_holding(connect: Connect, db: Conn, name: str, grace: float) -> tuple[int, uuid.UUID]:
    """A session that takes a slot on `name` and whose connection then ends."""
    conn = connect()
    session = open_session(conn, grace)
    got = acquire(conn, [name])
    assert got["granted"], got
    conn.close()
    # The server ends the backend at once; its lock drops then: wait for it by taking it.
    db.execute("SELECT pg_advisory_lock(1885824867, %s)", (session["session_id"],))
    db.execute("SELECT pg_advisory_unlock(1885824867, %s)", (session["session_id"],))
    return session["session_id"], got["lease_id"]


def _shown(db: Conn, lease_id: uuid.UUID) -> bool:
    return bool(value(db, "SELECT count(*) FROM pggcl.holders WHERE lease_id = %s", lease_id))


def test_a_dead_holder_leaves_the_views_after_its_grace_with_nobody_acting(
    db: Conn, connect: Connect
) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    dead, lease = _dies_holding(connect, db, "db", grace=0.5)
    # Within its grace it is shown (its client may be reconnecting); reading starts the grace.
    assert _shown(db, lease)
    assert one(db, "SELECT held_slots, active_slots FROM pggcl.limits") == {
        "held_slots": 1,
        "active_slots": 1,
    }
    seen = value(db, "SELECT min(seen_at) FROM pggcl.sightings WHERE session_id = %s", dead)
    assert seen is not None
    deadline = time.monotonic() + 10
    while _shown(db, lease) and time.monotonic() < deadline:
        time.sleep(0.05)  # time itself is what this waits for: no event marks a grace's end
    assert not _shown(db, lease), "the dead holder was still shown 10 s after its 0.5 s grace"
    assert one(db, "SELECT held_slots, active_slots FROM pggcl.limits") == {
        "held_slots": 0,
        "active_slots": 0,
    }
    # Nobody reclaimed it: the views alone left it out.
    assert value(db, "SELECT count(*) FROM pggcl.leases WHERE id = %s", lease) == 1
    assert value(db, "SELECT dead_since FROM pggcl.sessions WHERE id = %s", dead) is None
    hidden_at = value(db, "SELECT clock_timestamp()")
    assert (hidden_at - seen).total_seconds() >= 0.5


def test_a_reclaim_counts_the_grace_from_a_readers_first_sighting(
    db: Conn, connect: Connect
) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    dead, lease = _dies_holding(connect, db, "db", grace=3600)
    assert _shown(db, lease)
    seen = value(db, "SELECT seen_at FROM pggcl.sightings WHERE session_id = %s", dead)
    db.execute("SELECT pggcl.reclaim()")
    assert value(db, "SELECT dead_since FROM pggcl.sessions WHERE id = %s", dead) == seen
    assert _shown(db, lease)  # an hour's grace: still held, still shown


def test_a_live_holder_is_never_seen_dead(db: Conn, connect: Connect) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    holder = connect()
    open_session(holder, 0)
    lease = acquire(holder, ["db"])["lease_id"]
    for _ in range(3):
        assert _shown(db, lease)
        db.execute("SELECT * FROM pggcl.limits")
    assert value(db, "SELECT count(*) FROM pggcl.sightings") == 0


def test_reading_in_a_read_only_transaction_records_nothing_and_does_not_fail(
    db: Conn, connect: Connect
) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    _, lease = _dies_holding(connect, db, "db", grace=60)
    reader = connect()
    with reader.transaction():
        reader.execute("SET TRANSACTION READ ONLY")
        for view in ("limits", "holders", "queue"):
            reader.execute(f"SELECT * FROM pggcl.{view}").fetchall()
        assert _shown(reader, lease)  # the grace has not started: not yet known
    assert value(db, "SELECT count(*) FROM pggcl.sightings") == 0


def test_a_reader_holds_up_nobody(db: Conn, connect: Connect) -> None:
    """A reader that first saw a session dead, in a transaction left open, holds up neither a
    reclaim on that session's limit, nor an acquire there, nor the session's own resume."""
    db.execute("SELECT pggcl.create_limit('db', 2)")
    holder = connect()
    session = open_session(holder, 60)
    lease = acquire(holder, ["db"])["lease_id"]
    holder.close()
    db.execute("SELECT pg_advisory_lock(1885824867, %s)", (session["session_id"],))
    db.execute("SELECT pg_advisory_unlock(1885824867, %s)", (session["session_id"],))

    reader = connect()
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM pggcl.limits").fetchall()
    assert _shown(reader, lease)
    assert value(reader, "SELECT count(*) FROM pggcl.sightings") == 1  # its own, uncommitted

    writer = connect()
    writer.execute("SET lock_timeout = '5s'")  # a wait on the reader would raise here
    writer.execute("SELECT pggcl.reclaim()")
    assert acquire(writer, ["db"])["granted"]
    back = connect()
    back.execute("SET lock_timeout = '5s'")
    assert value(
        back, "SELECT pggcl.resume_session(%s, %s)", session["session_id"], session["token"]
    )
    reader.execute("COMMIT")
    # Resumed: the sighting of its old backend no longer counts, and it is alive again.
    assert _shown(db, lease)
    assert (
        value(db, "SELECT dead_since FROM pggcl.sessions WHERE id = %s", session["session_id"])
        is None
    )
