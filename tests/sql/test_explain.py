"""pggcl.explain (revision 0012, issue #16 point 3): why a queued request waits, per limit."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.sql.helpers import acquire, open_session, release, try_acquire, value

Conn = psycopg.Connection[Any]


def explain(conn: Conn, waiter_id: int | None, **kwargs: Any) -> list[dict[str, Any]]:
    named = "".join(f", {k} => %({k})s" for k in kwargs)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT * FROM pggcl.explain(%(w)s{named})", {"w": waiter_id, **kwargs})
        return cur.fetchall()


def _queued(conn: Conn, names: list[str], occupy: int = 1, **kwargs: Any) -> int:
    got = acquire(conn, names, occupy, **kwargs)
    assert not got["granted"] and got["waiter_id"] is not None
    return int(got["waiter_id"])


def test_a_queued_request_is_told_who_holds_and_who_is_ahead(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    backup = try_acquire(db, ["db"], holder="backup", ttl_seconds=600)["lease_id"]
    holder = connect()
    open_session(holder)
    report = acquire(holder, ["db"], holder="report")["lease_id"]
    waiters = connect()
    open_session(waiters)
    first = _queued(waiters, ["db"], 2, holder="first")
    second = _queued(waiters, ["db"], holder="second")

    [row] = explain(db, second)
    holders = row.pop("holders")
    since = row.pop("since")
    assert row == {
        "name": "db", "blocking": True, "position": 2, "occupy": 1, "mode": "concurrency",
        "limit": 2, "active": True, "held_slots": 2, "active_slots": 2.0, "leases": 2,
        "seconds_until_room": None,
    }  # fmt: skip
    assert since == value(db, "SELECT since FROM pggcl.queue WHERE waiter_id = %s", second)
    # Oldest first; the holder, its slots, since and expiry: no lease or session id.
    assert [h["holder"] for h in holders] == ["backup", "report"]
    assert all(set(h) == {"holder", "slots", "since", "expires"} for h in holders)
    assert [h["slots"] for h in holders] == [1, 1]
    assert holders[0]["expires"] is not None and holders[1]["expires"] is None
    shown = {r["lease_id"]: r for r in one_per_lease(db)}
    assert datetime.fromisoformat(holders[0]["since"]) == shown[backup]["since"]
    assert datetime.fromisoformat(holders[0]["expires"]) == shown[backup]["expires"]
    assert str(backup) not in str(holders) and str(report) not in str(holders)

    # The query of docs/protocol.md's example.
    example = db.execute(
        """SELECT name, blocking, position, held_slots, "limit", leases,
                  holders->0->>'holder' AS oldest FROM pggcl.explain(%s)""",
        (second,),
    ).fetchall()
    assert example == [("db", True, 2, 2, 2, 2, "backup")]

    [head] = explain(db, first)
    assert (head["position"], head["occupy"], head["blocking"]) == (1, 2, True)
    # max_holders: the first N, oldest first; `leases` still counts them all.
    [short] = explain(db, second, max_holders=1)
    assert [h["holder"] for h in short["holders"]] == ["backup"] and short["leases"] == 2
    [none] = explain(db, second, max_holders=0)
    assert none["holders"] == [] and none["leases"] == 2
    with pytest.raises(psycopg.Error) as refused:
        explain(db, second, max_holders=-1)
    assert refused.value.diag.sqlstate == "GC003"
    assert refused.value.diag.column_name == "max_holders"

    # Once the request is granted it is no longer queued: no rows; the next one moves up.
    assert release(db, backup) and release(holder, report)
    assert explain(db, first) == []
    [row] = explain(db, second)
    assert (row["position"], row["blocking"], row["leases"]) == (1, True, 1)
    assert [h["holder"] for h in row["holders"]] == ["first"]


def one_per_lease(conn: Conn) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT lease_id, since, expires FROM pggcl.holders")
        return cur.fetchall()


def test_each_limit_of_a_request_says_whether_it_blocks(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('a', 1), pggcl.create_limit('b', 3)")
    db.execute("SELECT pggcl.create_limit('off', 1, active => false)")
    try_acquire(db, ["a"], holder="busy", ttl_seconds=600)
    try_acquire(db, ["b"], holder="some", ttl_seconds=600)
    conn = connect()
    open_session(conn)
    waiter = _queued(conn, ["b", "off", "a"])
    rows = explain(db, waiter)
    assert [(r["name"], r["blocking"], r["position"]) for r in rows] == [
        ("a", True, 1),  # full
        ("b", False, 1),  # room, nobody ahead: not what it waits for
        ("off", False, 1),  # inactive: blocks nobody
    ]
    by_name = {r["name"]: r for r in rows}
    assert (by_name["b"]["held_slots"], by_name["b"]["limit"], by_name["b"]["leases"]) == (1, 3, 1)
    assert by_name["off"]["active"] is False
    # A request queued behind it on b is blocked there by it, though b has room.
    behind = _queued(conn, ["b"])
    [row] = explain(db, behind)
    assert (row["name"], row["blocking"], row["position"], row["held_slots"]) == ("b", True, 2, 1)


def test_rate_mode_says_when_there_will_be_room(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('api', 2, 0.01)")  # a slot decays in 100 s
    assert try_acquire(db, ["api"], 2, "rate_limit")["granted"]
    conn = connect()
    open_session(conn)
    waiter = _queued(conn, ["api"], 1, mode="rate_limit")
    [row] = explain(db, waiter)
    assert (row["mode"], row["blocking"], row["held_slots"], row["leases"]) == (
        "rate_limit", True, 0, 0,
    )  # fmt: skip
    # The bucket (2 slots, minus what decayed since) must drain to 1: at most 100 s.
    assert 0 < row["seconds_until_room"] <= 100.0
    assert 1.0 < row["active_slots"] <= 2.0
    # And the engine's own answer agrees: recheck, a moment later, counts no more than that.
    got = db.execute("SELECT status, retry_after FROM pggcl.recheck(%s)", (waiter,)).fetchone()
    assert got is not None
    status, retry_after = got
    assert status == "queued" and 0 < retry_after <= row["seconds_until_room"]


def test_unknown_granted_and_cancelled_waiters_give_no_rows(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    held = try_acquire(db, ["db"], ttl_seconds=600)["lease_id"]
    conn = connect()
    open_session(conn)
    cancelled = _queued(conn, ["db"])
    assert value(conn, "SELECT pggcl.cancel(%s)", cancelled) == "cancelled"
    granted = _queued(conn, ["db"])
    assert len(explain(db, granted)) == 1
    assert release(db, held)
    for waiter_id in (cancelled, granted, 10**15, None):
        assert explain(db, waiter_id) == []


def test_dead_sessions_are_neither_ahead_nor_holding(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    try_acquire(db, ["db"], holder="alive", ttl_seconds=600)
    gone = connect()
    dead = [open_session(gone, grace_seconds=0)["session_id"]]
    assert acquire(gone, ["db"], holder="dead holder")["granted"]
    ahead = connect()
    dead.append(open_session(ahead, grace_seconds=600)["session_id"])
    _queued(ahead, ["db"], holder="dead waiter")
    waiter_conn = connect()
    open_session(waiter_conn)
    waiter = _queued(waiter_conn, ["db"])
    [row] = explain(db, waiter)
    assert (row["position"], row["held_slots"], row["leases"]) == (2, 2, 2)
    gone.close()
    ahead.close()
    for session_id in dead:  # their backends end; their locks drop then: wait by taking them
        db.execute("SELECT pg_advisory_lock(1885824867, %s)", (session_id,))
        db.execute("SELECT pg_advisory_unlock(1885824867, %s)", (session_id,))
    # As pggcl.queue and pggcl.holders see it: the dead waiter is not ahead (it would be
    # passed over), and the holder dead past its grace (0 s) holds nothing any more.
    [row] = explain(db, waiter)
    assert (row["position"], row["held_slots"], row["leases"]) == (1, 1, 1)
    assert [h["holder"] for h in row["holders"]] == ["alive"]
    assert row["blocking"] is False  # room now: the next grant step serves it


def test_it_reads_without_locking_what_acquires_wait_for(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    held = try_acquire(db, ["db"], ttl_seconds=600)["lease_id"]
    conn = connect()
    open_session(conn)
    waiter = _queued(conn, ["db"])
    # Explaining while another transaction holds the limit's row lock does not wait for it...
    locker = connect()
    locker.execute("BEGIN")
    locker.execute("SELECT * FROM pggcl.limit_state WHERE name = 'db' FOR UPDATE")
    reader = connect()
    reader.execute("SET lock_timeout = '5s'")  # a wait would raise here, not hang
    assert len(explain(reader, waiter)) == 1
    locker.execute("ROLLBACK")
    # ...and a transaction that explained holds nothing a release and its grant wait for.
    reader.execute("BEGIN")
    assert len(explain(reader, waiter)) == 1
    db.execute("SET lock_timeout = '5s'")
    assert release(db, held)
    reader.execute("COMMIT")
    assert explain(db, waiter) == []


def test_any_pggcl_user_may_explain_any_waiter_and_no_one_else(
    pggcl_role_dsn: Callable[[str], str], db: Conn, psql: Callable[..., str], pggcl_dsn: str
) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    with (
        psycopg.connect(pggcl_role_dsn("pggcl_user"), autocommit=True) as alice,
        psycopg.connect(pggcl_role_dsn("pggcl_user"), autocommit=True) as bob,
    ):
        open_session(alice)
        lease = acquire(alice, ["db"], holder="alice")["lease_id"]
        open_session(bob)
        bobs = acquire(bob, ["db"], holder="bob", request_id=uuid.uuid4())
        [row] = explain(alice, int(bobs["waiter_id"]))  # another role's waiter: read
        assert [h["holder"] for h in row["holders"]] == ["alice"]
        assert str(lease) not in str(row) and str(bobs["lease_id"]) not in str(row)
    # A role in neither pggcl role may not call it.
    outsider = psycopg.connect(pggcl_role_dsn("pg_monitor"), autocommit=True)
    with outsider, pytest.raises(psycopg.errors.InsufficientPrivilege):
        explain(outsider, int(bobs["waiter_id"]))
    acl = value(
        db,
        "SELECT proacl::text FROM pg_proc"
        " WHERE oid = 'pggcl.explain(bigint, integer)'::regprocedure",
    )
    assert "pggcl_user=X" in acl and not acl.startswith("{=X") and ",=X" not in acl
    assert value(
        db,
        "SELECT has_function_privilege('pggcl_user', 'pggcl.explain(bigint, integer)', 'EXECUTE')",
    )


def test_it_works_in_a_read_only_transaction(db: Conn, connect: Any) -> None:
    """On a standby, say: it reads, and records no sighting of a dead session there."""
    db.execute("SELECT pggcl.create_limit('db', 1)")
    gone = connect()
    dead = open_session(gone, grace_seconds=600)["session_id"]
    assert acquire(gone, ["db"], holder="dead holder")["granted"]
    conn = connect()
    open_session(conn)
    waiter = _queued(conn, ["db"])
    gone.close()
    db.execute("SELECT pg_advisory_lock(1885824867, %s)", (dead,))  # its backend has ended
    db.execute("SELECT pg_advisory_unlock(1885824867, %s)", (dead,))
    reader = connect()
    reader.execute("BEGIN READ ONLY")
    [row] = explain(reader, waiter)  # a dead holder, never seen: within its grace, holding
    assert (row["blocking"], row["position"], row["leases"]) == (True, 1, 1)
    reader.execute("COMMIT")
    assert value(db, "SELECT count(*) FROM pggcl.sightings") == 0
    assert len(explain(db, waiter)) == 1  # a writable reader records the first sighting
    assert value(db, "SELECT count(*) FROM pggcl.sightings") == 1
