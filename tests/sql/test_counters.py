"""The counters of pggcl.limits (issue #16, point 1): each moves exactly with the change it
counts, in the same transaction, and reading them takes no lock an acquire waits for."""

from __future__ import annotations

import math
from typing import Any

import psycopg
import pytest

from tests.sql.helpers import acquire, limit, one, open_session, release, try_acquire, value

Conn = psycopg.Connection[Any]

BOUNDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 600]
COUNTERS = ["grants", "enqueued", "denied", "gave_up", "rejected", "reclaimed_slots"]


def counters(db: Conn, name: str) -> dict[str, Any]:
    row = limit(db, name)
    return {k: row[k] for k in COUNTERS}


def expect(db: Conn, name: str, **changed: int) -> None:
    assert counters(db, name) == {k: changed.get(k, 0) for k in COUNTERS}


def cumulative(at_most: list[float], bound_of_each: list[float]) -> list[int]:
    """The cumulative buckets of events of these durations (as bounds they fall under)."""
    return [sum(1 for d in bound_of_each if d <= b) for b in [*at_most, math.inf]]


def test_a_new_limit_counts_nothing(db: Conn) -> None:
    row = one(db, "SELECT * FROM pggcl.create_limit('db', 1)")
    assert {k: row[k] for k in COUNTERS} == dict.fromkeys(COUNTERS, 0)
    assert row["wait_seconds_buckets"] == [0] * 12 and row["hold_seconds_buckets"] == [0] * 12
    assert (row["wait_seconds_count"], row["hold_seconds_count"]) == (0, 0)
    assert (row["wait_seconds_sum"], row["hold_seconds_sum"]) == (0, 0)


def test_bucket_bounds_are_inclusive(db: Conn) -> None:
    for i, bound in enumerate(BOUNDS, start=1):
        assert value(db, "SELECT pggcl._bucket(%s)", bound) == i
        assert value(db, "SELECT pggcl._bucket(%s)", math.nextafter(bound, math.inf)) == i + 1
    assert value(db, "SELECT pggcl._bucket(0)") == 1
    assert value(db, "SELECT pggcl._bucket(1e9)") == 12


def test_grants_at_once_and_holds(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('db', 5)")
    session = open_session(db)
    # Each way in: take, acquire, try_acquire with a TTL.
    assert value(
        db, "SELECT pggcl.take('db', 1, %s, NULL, gen_random_uuid())", session["session_id"]
    )
    acquire(db, ["db"], 2)
    ttl = try_acquire(db, ["db"], ttl_seconds=60)
    expect(db, "db", grants=3)
    row = limit(db, "db")
    # Granted at once: a wait of 0 s each, in every bucket.
    assert row["wait_seconds_count"] == 3 and row["wait_seconds_buckets"] == [3] * 12
    assert row["hold_seconds_count"] == 0
    # A hold of 30 s (its start moved back: no sleeping), released.
    back = "acquired_at = acquired_at - interval '30 s'"
    db.execute(f"UPDATE pggcl.leases SET {back} WHERE id = %s", (ttl["lease_id"],))
    assert release(db, ttl["lease_id"])
    row = limit(db, "db")
    assert row["hold_seconds_count"] == 1
    assert row["hold_seconds_buckets"] == cumulative(BOUNDS, [60])
    assert 30 <= row["hold_seconds_sum"] < 3600
    expect(db, "db", grants=3)


def test_queued_grants_count_their_wait(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    holder = connect()
    open_session(holder)
    lease = acquire(holder, ["db"])["lease_id"]
    waiter = connect()
    open_session(waiter)
    queued = acquire(waiter, ["db"])
    assert queued["waiter_id"] is not None
    expect(db, "db", grants=1, enqueued=1)
    # It waited 7 s (its start moved back), and is granted by the release.
    db.execute("UPDATE pggcl.waiters SET enqueued_at = enqueued_at - interval '7 s'")
    assert release(holder, lease)
    expect(db, "db", grants=2, enqueued=1)
    row = limit(db, "db")
    assert row["wait_seconds_count"] == 2
    assert row["wait_seconds_buckets"] == cumulative(BOUNDS, [0, 10])
    assert 7 <= row["wait_seconds_sum"] < 3600
    assert row["hold_seconds_count"] == 1


def test_refusals_count_on_the_limits_in_the_way(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('full', 1), pggcl.create_limit('roomy', 5)")
    lease = try_acquire(db, ["full"], ttl_seconds=60)["lease_id"]
    assert not try_acquire(db, ["full", "roomy"], ttl_seconds=60)["granted"]
    assert not try_acquire(db, ["full"], ttl_seconds=60)["granted"]
    expect(db, "full", grants=1, denied=2)
    expect(db, "roomy")
    assert release(db, lease)
    assert try_acquire(db, ["full", "roomy"], ttl_seconds=60)["granted"]
    expect(db, "full", grants=2, denied=2)
    expect(db, "roomy", grants=1)


def test_rate_limit_grants_and_refusals(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('api', 2, 0.001)")
    for _ in range(2):
        assert try_acquire(db, ["api"], mode="rate_limit")["granted"]
    refused = try_acquire(db, ["api"], mode="rate_limit")
    assert not refused["granted"] and refused["retry_after"] > 0
    expect(db, "api", grants=2, denied=1)
    assert limit(db, "api")["hold_seconds_count"] == 0  # rate limits hold nothing


def test_waiters_that_give_up(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    holder = connect()
    open_session(holder)
    acquire(holder, ["db"])
    # Cancelled (a timeout, an interrupt), then a waiter whose session is closed.
    waiter = connect()
    open_session(waiter)
    queued = acquire(waiter, ["db"])
    assert value(
        waiter, "SELECT pggcl.cancel(%s, %s)", queued["waiter_id"], queued["lease_id"]
    ) == ("cancelled")
    expect(db, "db", grants=1, enqueued=1, gave_up=1)
    acquire(waiter, ["db"])
    assert value(waiter, "SELECT pggcl.close_session()") is True
    expect(db, "db", grants=1, enqueued=2, gave_up=2)
    assert limit(db, "db")["wait_seconds_count"] == 1  # no wait is counted for them


def test_rejected_waiters(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    holder = connect()
    open_session(holder)
    acquire(holder, ["db"])
    waiter = connect()
    open_session(waiter)
    assert acquire(waiter, ["db"], 2)["waiter_id"] is not None
    db.execute("SELECT pggcl.update_limit('db', 1)")  # it can never fit now: 'e:'
    expect(db, "db", grants=1, enqueued=1, rejected=1)
    assert limit(db, "db")["waiting"] == 0


def test_expired_ttls_are_reclaimed(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('db', 3)")
    lease = try_acquire(db, ["db"], 3, ttl_seconds=60)["lease_id"]
    expired = "expires_at = clock_timestamp(), acquired_at = clock_timestamp() - interval '2 s'"
    db.execute(f"UPDATE pggcl.leases SET {expired} WHERE id = %s", (lease,))
    assert try_acquire(db, ["db"], ttl_seconds=60)["granted"]  # reaps it first
    expect(db, "db", grants=2, reclaimed_slots=3)
    row = limit(db, "db")
    assert row["hold_seconds_buckets"] == cumulative(BOUNDS, [5])  # held until reclaimed
    assert not release(db, lease)


def test_dead_holders_are_reclaimed(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    dead = connect()
    session = open_session(dead, grace_seconds=0)
    acquire(dead, ["db"], 2)
    dead.close()
    # Wait for its backend to end (its advisory lock comes free), then reclaim.
    db.execute("SELECT pg_advisory_lock(1885824867, %s)", (session["session_id"],))
    db.execute("SELECT pg_advisory_unlock(1885824867, %s)", (session["session_id"],))
    db.execute("SELECT pggcl.reclaim()")
    expect(db, "db", grants=1, reclaimed_slots=2)
    assert limit(db, "db")["hold_seconds_count"] == 1


def test_closing_a_session_is_no_reclaim(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    conn = connect()
    open_session(conn)
    acquire(conn, ["db"], 2)
    assert value(conn, "SELECT pggcl.close_session()") is True
    expect(db, "db", grants=1)
    assert limit(db, "db")["hold_seconds_count"] == 1


def test_several_limits_count_on_each(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('a', 1), pggcl.create_limit('b', 1)")
    holder = connect()
    open_session(holder)
    lease = acquire(holder, ["a", "b"])["lease_id"]
    waiter = connect()
    open_session(waiter)
    assert acquire(waiter, ["a", "b"])["waiter_id"] is not None
    assert release(holder, lease)
    for name in ("a", "b"):
        expect(db, name, grants=2, enqueued=1)
        row = limit(db, name)
        assert (row["wait_seconds_count"], row["hold_seconds_count"]) == (2, 1)


@pytest.mark.parametrize("contended", [False, True])
def test_every_queued_request_is_accounted_for(db: Conn, connect: Any, contended: bool) -> None:
    """enqueued = granted after queuing + gave_up + rejected + still queued."""
    db.execute("SELECT pggcl.create_limit('db', 2)")
    holder = connect()
    open_session(holder)
    leases = [acquire(holder, ["db"])["lease_id"] for _ in range(2)]
    waiters = []
    for _ in range(4):
        conn = connect()
        open_session(conn)
        waiters.append((conn, acquire(conn, ["db"])))
    conn, cancelled = waiters[0]
    value(conn, "SELECT pggcl.cancel(%s, %s)", cancelled["waiter_id"], cancelled["lease_id"])
    assert release(holder, leases[0])
    if contended:
        assert release(holder, leases[1])
    row = limit(db, "db")
    granted_after_queuing = row["grants"] - 2  # the holder's two were granted at once
    assert (row["enqueued"], granted_after_queuing) == (4, 2 if contended else 1)
    assert row["enqueued"] == (
        granted_after_queuing + row["gave_up"] + row["rejected"] + row["waiting"]
    )


def test_reading_the_counters_locks_nothing_an_acquire_waits_for(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    reader = connect()
    reader.autocommit = False
    reader.execute("SELECT * FROM pggcl.limits")  # its transaction stays open
    locks = reader.execute(
        "SELECT locktype, mode FROM pg_locks WHERE pid = pg_backend_pid()"
        " AND locktype <> 'virtualxid'"
        " AND (relation IS NULL OR relation::regclass::text LIKE 'pggcl.%')"
    ).fetchall()
    assert {mode for _, mode in locks} <= {"AccessShareLock"}, locks
    writer = connect()
    writer.execute("SET lock_timeout = '10s'")  # an error, not a hang, if this were wrong
    lease = try_acquire(writer, ["db"], ttl_seconds=60)["lease_id"]
    assert release(writer, lease)
    reader.rollback()
    expect(db, "db", grants=1)


def test_a_dead_waiter_dropped_by_the_grant_step_gave_up(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    holder = connect()
    open_session(holder)
    lease = acquire(holder, ["db"])["lease_id"]
    dead = connect()
    session = open_session(dead, grace_seconds=0)
    assert acquire(dead, ["db"])["waiter_id"] is not None
    dead.close()
    db.execute("SELECT pg_advisory_lock(1885824867, %s)", (session["session_id"],))
    db.execute("SELECT pg_advisory_unlock(1885824867, %s)", (session["session_id"],))
    assert release(holder, lease)  # the grant step finds it dead past its grace
    expect(db, "db", grants=1, enqueued=1, gave_up=1)
    assert limit(db, "db")["wait_seconds_count"] == 1
