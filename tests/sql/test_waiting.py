"""The waiting protocol: queue, first come first served, hand-off by NOTIFY, cancel."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.sql.helpers import (
    acquire,
    limit,
    notifications,
    one,
    open_session,
    release,
    try_acquire,
    value,
)

Conn = psycopg.Connection[Any]


def test_release_hands_the_slot_to_the_waiter_and_notifies_it(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    held = try_acquire(db, ["db"])["lease_id"]
    waiter_conn = connect()
    open_session(waiter_conn)
    queued = acquire(waiter_conn, ["db"], holder="w")
    assert not queued["granted"]
    assert queued["waiter_id"] is not None and queued["lease_id"] is not None
    assert limit(db, "db")["waiting"] == 1

    assert release(db, held)
    assert notifications(waiter_conn, 1) == [f"g:{queued['waiter_id']}"]
    # The slot was handed over in the release's own transaction: the lease id is the promised one.
    holder = one(db, "SELECT lease_id, holder FROM pggcl.holders")
    assert holder == {"lease_id": queued["lease_id"], "holder": "w"}
    assert limit(db, "db")["waiting"] == 0


def test_a_grant_never_jumps_the_queue(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    held = try_acquire(db, ["db"])["lease_id"]
    waiter_conn = connect()
    open_session(waiter_conn)
    assert not acquire(waiter_conn, ["db"], 2)["granted"]
    # One slot is free, but a request is queued: a newcomer is refused.
    assert not try_acquire(db, ["db"])["granted"]
    release(db, held)
    assert len(notifications(waiter_conn, 1)) == 1


def test_first_come_first_served_large_request_is_not_starved(db: Conn, connect: Any) -> None:
    """A queued occupy=5 on a limit of 5 is served before any later occupy=1."""
    db.execute("SELECT pggcl.create_limit('db', 5)")
    small = [try_acquire(db, ["db"])["lease_id"] for _ in range(2)]
    big_conn = connect()
    open_session(big_conn)
    big = acquire(big_conn, ["db"], 5)
    assert not big["granted"]
    late_conn = connect()
    open_session(late_conn)
    late = [acquire(late_conn, ["db"], 1) for _ in range(10)]
    assert not any(request["granted"] for request in late)
    for _ in range(20):  # newcomers keep coming: none gets in ahead of the big request
        assert not try_acquire(db, ["db"])["granted"]
    release(db, small[0])
    assert limit(db, "db")["held_slots"] == 1  # nobody took the freed slot
    release(db, small[1])
    assert notifications(big_conn, 1) == [f"g:{big['waiter_id']}"]
    assert limit(db, "db")["held_slots"] == 5
    release(db, big["lease_id"])
    payloads = notifications(late_conn, 5)
    assert payloads == [f"g:{request['waiter_id']}" for request in late[:5]]


def test_waiters_on_disjoint_limits_do_not_block_each_other(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('a', 1), pggcl.create_limit('b', 1)")
    held_a = try_acquire(db, ["a"])["lease_id"]
    held_b = try_acquire(db, ["b"])["lease_id"]
    conn = connect()
    open_session(conn)
    on_a = acquire(conn, ["a"])
    on_b = acquire(conn, ["b"])
    release(db, held_b)
    assert notifications(conn, 1) == [f"g:{on_b['waiter_id']}"]
    release(db, held_a)
    assert notifications(conn, 1) == [f"g:{on_a['waiter_id']}"]


def test_multi_limit_waiter_is_asked_to_recheck_and_then_granted(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('a', 1), pggcl.create_limit('b', 1)")
    held = try_acquire(db, ["a"])["lease_id"]
    conn = connect()
    open_session(conn)
    queued = acquire(conn, ["a", "b"])
    assert not queued["granted"]
    release(db, held)  # locks only 'a': the waiter must re-check with both locked
    assert notifications(conn, 1) == [f"r:{queued['waiter_id']}"]
    status = one(
        conn, "SELECT * FROM pggcl.recheck(%s, %s)", queued["waiter_id"], queued["lease_id"]
    )
    assert status["status"] == "granted"
    assert notifications(conn, 1) == [f"g:{queued['waiter_id']}"]
    assert limit(db, "a")["held_slots"] == 1 and limit(db, "b")["held_slots"] == 1


def test_recheck_reports_queued_and_cancel_lets_the_next_in(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    held = try_acquire(db, ["db"])["lease_id"]
    conn = connect()
    open_session(conn)
    big = acquire(conn, ["db"], 2)
    small = acquire(conn, ["db"], 1)
    status = one(conn, "SELECT * FROM pggcl.recheck(%s, %s)", big["waiter_id"], big["lease_id"])
    assert status == {"status": "queued", "retry_after": None}
    # Cancelling the head lets the small request behind it use the free slot at once.
    assert (
        value(conn, "SELECT pggcl.cancel(%s, %s)", big["waiter_id"], big["lease_id"]) == "cancelled"
    )
    assert notifications(conn, 1) == [f"g:{small['waiter_id']}"]
    assert (
        value(conn, "SELECT pggcl.cancel(%s, %s)", small["waiter_id"], small["lease_id"])
        == "granted"
    )
    assert value(conn, "SELECT pggcl.cancel(%s, %s)", big["waiter_id"], big["lease_id"]) == "gone"
    assert value(db, "SELECT count(*) FROM pggcl.queue") == 0
    release(db, held)


@pytest.mark.parametrize(
    "change",
    [
        "SELECT pggcl.update_limit('db', \"limit\" => 2)",
        "SELECT pggcl.update_limit('db', active => false)",
        "SELECT pggcl.delete_limit('db')",
    ],
)
def test_changes_that_add_room_let_waiters_in(db: Conn, connect: Any, change: str) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    try_acquire(db, ["db"])
    conn = connect()
    open_session(conn)
    queued = acquire(conn, ["db"])
    db.execute(change)
    assert notifications(conn, 1) == [f"g:{queued['waiter_id']}"]


def test_deleting_one_limit_of_a_multi_limit_waiter(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('a', 1), pggcl.create_limit('b', 1)")
    try_acquire(db, ["a"])
    conn = connect()
    open_session(conn)
    queued = acquire(conn, ["a", "b"])
    db.execute("SELECT pggcl.delete_limit('a')")
    assert notifications(conn, 1) == [f"r:{queued['waiter_id']}"]
    status = one(
        conn, "SELECT * FROM pggcl.recheck(%s, %s)", queued["waiter_id"], queued["lease_id"]
    )
    assert status["status"] == "granted"
    assert limit(db, "b")["held_slots"] == 1


def test_lowering_the_limit_below_a_request_rejects_it(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 3)")
    try_acquire(db, ["db"])
    conn = connect()
    open_session(conn)
    big = acquire(conn, ["db"], 3)
    small = acquire(conn, ["db"], 1)
    db.execute("SELECT pggcl.update_limit('db', \"limit\" => 2)")
    payloads = notifications(conn, 2)
    assert (
        payloads[0] == f"e:{big['waiter_id']}:cannot occupy 3 slots on limit 'db': its limit is 2"
    )
    assert payloads[1] == f"g:{small['waiter_id']}"
    status = one(conn, "SELECT * FROM pggcl.recheck(%s, %s)", big["waiter_id"], big["lease_id"])
    assert status["status"] == "gone"


def test_rate_limit_waiters_are_served_in_order_as_the_bucket_drains(
    db: Conn, connect: Any
) -> None:
    db.execute("SELECT pggcl.create_limit('api', 2, 5)")
    assert try_acquire(db, ["api"], 2, "rate_limit")["granted"]
    conn = connect()
    open_session(conn)
    first = acquire(conn, ["api"], 2, "rate_limit")
    second = acquire(conn, ["api"], 1, "rate_limit")
    assert not first["granted"] and not second["granted"]
    assert first["lease_id"] is None
    # Exact: the first needs the 2 slots to drain (0.4 s after the fill), the second needs one
    # slot more (0.2 s) on top of that; both figures shrink as time passes.
    assert 0 < first["retry_after"] <= 0.4
    assert 0 < second["retry_after"] <= first["retry_after"] + 0.2 + 1e-6
    # Nobody is told when a bucket drains: the waiter re-checks at retry_after.
    conn.execute("SELECT pg_sleep(%s)", (first["retry_after"],))
    status = one(conn, "SELECT * FROM pggcl.recheck(%s)", first["waiter_id"])
    assert status["status"] == "granted"
    assert notifications(conn, 1) == [f"g:{first['waiter_id']}"]
    status = one(conn, "SELECT * FROM pggcl.recheck(%s)", second["waiter_id"])
    assert status["status"] == "queued"
    assert 0 < status["retry_after"] <= 0.2 + 1e-6


def test_waiting_needs_no_explicit_session(db: Conn) -> None:
    """A plain connection that asks to wait gets this connection's session and channel."""
    db.execute("SELECT pggcl.create_limit('db', 1)")
    try_acquire(db, ["db"])
    acquire(db, ["db"])
    session = one(db, "SELECT * FROM pggcl.open_session()")  # returns the existing one
    assert value(db, "SELECT session_id FROM pggcl.queue") == session["session_id"]


def test_a_request_id_finds_a_request_whose_answer_was_lost(db: Conn, connect: Any) -> None:
    """The caller's own request id becomes the lease id; cancel(NULL, id) undoes the request
    without knowing the waiter id (the answer of acquire may never have arrived)."""
    db.execute("SELECT pggcl.create_limit('db', 1)")
    conn = connect()
    open_session(conn)
    first, second = uuid.uuid4(), uuid.uuid4()
    granted = acquire(conn, ["db"], request_id=first)
    assert granted["granted"] and granted["lease_id"] == first
    queued = acquire(conn, ["db"], request_id=second)
    assert not queued["granted"] and queued["lease_id"] == second
    assert value(conn, "SELECT pggcl.cancel(NULL, %s)", second) == "cancelled"
    assert value(db, "SELECT count(*) FROM pggcl.queue") == 0
    assert value(conn, "SELECT pggcl.cancel(NULL, %s)", first) == "granted"
    assert release(conn, first)


def test_a_handed_off_slot_keeps_the_waiters_ttl_and_holder(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    held = try_acquire(db, ["db"])["lease_id"]
    conn = connect()
    open_session(conn)
    queued = acquire(conn, ["db"], holder="w", ttl_seconds=60)
    release(db, held)
    assert notifications(conn, 1) == [f"g:{queued['waiter_id']}"]
    lease = one(
        db,
        "SELECT holder, session_id, extract(epoch FROM expires - since) AS ttl"
        " FROM pggcl.holders WHERE lease_id = %s",
        queued["lease_id"],
    )
    assert lease["holder"] == "w" and lease["session_id"] is not None
    assert float(lease["ttl"]) == pytest.approx(60)


def test_a_release_hands_a_rate_limit_waiter_its_slots(db: Conn, connect: Any) -> None:
    """Concurrency and rate-limit use share a limit's slots; a release serves either."""
    db.execute("SELECT pggcl.create_limit('db', 1, 0.001)")
    held = try_acquire(db, ["db"])["lease_id"]
    conn = connect()
    open_session(conn)
    queued = acquire(conn, ["db"], 1, "rate_limit")
    release(db, held)
    assert notifications(conn, 1) == [f"g:{queued['waiter_id']}"]
    state = limit(db, "db")
    assert state["held_slots"] == 0 and state["decaying_slots"] == pytest.approx(1, abs=0.01)
    assert state["waiting"] == 0


def recheck(conn: Conn, waiter_id: int) -> str:
    return str(value(conn, "SELECT status FROM pggcl.recheck(%s)", waiter_id))


def test_a_rate_limit_grant_from_the_queue_rechecks_granted_and_gone_means_not(
    db: Conn, connect: Any
) -> None:
    """Revision 0010: a rate grant leaves no lease, so it is recorded; 'gone' never means
    granted (a rate-limit client reading 'gone' as granted could go ahead without a slot)."""
    db.execute("SELECT pggcl.create_limit('db', 1, 0.001)")
    held = try_acquire(db, ["db"])["lease_id"]
    conn = connect()
    open_session(conn)
    granted = acquire(conn, ["db"], 1, "rate_limit")
    release(db, held)
    assert notifications(conn, 1) == [f"g:{granted['waiter_id']}"]
    assert recheck(conn, granted["waiter_id"]) == "granted"
    assert value(conn, "SELECT pggcl.cancel(%s)", granted["waiter_id"]) == "granted"

    # Not granted: the bucket is full, the waiter gives up, and its id then rechecks 'gone'.
    given_up = acquire(conn, ["db"], 1, "rate_limit")
    assert value(conn, "SELECT pggcl.cancel(%s)", given_up["waiter_id"]) == "cancelled"
    assert recheck(conn, given_up["waiter_id"]) == "gone"
    assert value(conn, "SELECT pggcl.cancel(%s)", given_up["waiter_id"]) == "gone"
