"""try_acquire, take and release through the SQL API."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest

from tests.sql.helpers import limit, one, release, try_acquire, value

Conn = psycopg.Connection[Any]


def test_grant_until_full_then_refuse(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    first = try_acquire(db, ["db"])
    second = try_acquire(db, ["db"])
    third = try_acquire(db, ["db"])
    assert first["granted"] and second["granted"]
    assert first["lease_id"] != second["lease_id"]
    assert third == {"granted": False, "lease_id": None, "retry_after": None}
    assert limit(db, "db")["active_slots"] == 2
    assert release(db, first["lease_id"]) is True
    assert try_acquire(db, ["db"])["granted"]


def test_release_twice_is_a_no_op_that_says_so(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    lease = try_acquire(db, ["db"])["lease_id"]
    assert release(db, lease) is True
    assert release(db, lease) is False
    assert limit(db, "db")["active_slots"] == 0


def test_all_names_or_none(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('a', 1), pggcl.create_limit('b', 1)")
    try_acquire(db, ["b"])
    assert not try_acquire(db, ["a", "b"])["granted"]
    assert limit(db, "a")["active_slots"] == 0
    granted = try_acquire(db, ["a", "c"], holder="me")
    assert granted["granted"]
    rows = db.execute(
        "SELECT name, slots, holder FROM pggcl.holders WHERE lease_id = %s ORDER BY name",
        (granted["lease_id"],),
    ).fetchall()
    assert rows == [("a", 1, "me"), ("c", 0, "me")]


def test_duplicate_names_count_once(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('a', 1)")
    assert try_acquire(db, ["a", "a"])["granted"]
    assert limit(db, "a")["active_slots"] == 1


def test_empty_name_list_is_granted_and_holds_nothing(db: Conn) -> None:
    assert try_acquire(db, []) == {"granted": True, "lease_id": None, "retry_after": None}


def test_missing_limits_are_created_inactive_and_never_block(db: Conn) -> None:
    for _ in range(3):
        assert try_acquire(db, ["new"], 5)["granted"]
    row = limit(db, "new")
    assert row["active"] is False
    assert row["active_slots"] == 0


def test_acquire_reports_the_limits_it_created(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('old', 1)")
    row = one(db, "SELECT * FROM pggcl.acquire('{old,new1,new2}', wait => false)")
    assert row["created_limits"] == ["new1", "new2"]
    assert one(db, "SELECT * FROM pggcl.acquire('{new1}', wait => false)")["created_limits"] is None


def test_strict_names_the_missing_limits_and_creates_nothing(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('there', 1)")
    with pytest.raises(psycopg.Error) as raised:
        try_acquire(db, ["there", "gone1", "gone2"], strict=True)
    assert raised.value.sqlstate == "GC006"
    assert "'gone1'" in str(raised.value) and "'gone2'" in str(raised.value)
    assert value(db, "SELECT count(*) FROM pggcl.limits") == 1
    assert limit(db, "there")["active_slots"] == 0


def test_inactive_limit_takes_part_without_occupying(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('off', 1, active => false)")
    leases = [try_acquire(db, ["off"])["lease_id"] for _ in range(3)]
    assert all(leases)
    assert limit(db, "off")["active_slots"] == 0
    db.execute("SELECT pggcl.update_limit('off', active => true)")
    assert try_acquire(db, ["off"])["granted"]
    assert not try_acquire(db, ["off"])["granted"]


@pytest.mark.parametrize(
    ("names", "occupy", "mode", "sqlstate", "complaint"),
    [
        (["db"], 0, "concurrency", "GC003", "invalid occupy: 0"),
        (["db"], -2, "concurrency", "GC003", "invalid occupy: -2"),
        (["db"], 1, "exclusive", "GC003", "invalid mode: 'exclusive'"),
        (["db"], 3, "concurrency", "GC004", "cannot occupy 3 slots on limit 'db': its limit is 2"),
        (["db", "brand-new"], 3, "concurrency", "GC004", "limit 'db'"),
        (["db"], 1, "rate_limit", "GC005", "'db': its slot_decay_per_second is 0"),
        (["a/b"], 1, "concurrency", "GC003", "invalid limit name 'a/b'"),
    ],
)
def test_bad_requests_raise_and_change_nothing(
    db: Conn, names: list[str], occupy: int, mode: str, sqlstate: str, complaint: str
) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    with pytest.raises(psycopg.Error) as raised:
        try_acquire(db, names, occupy, mode)
    assert raised.value.sqlstate == sqlstate
    assert complaint in str(raised.value)
    assert value(db, "SELECT count(*) FROM pggcl.limits") == 1
    assert value(db, "SELECT count(*) FROM pggcl.holders") == 0


def test_bad_ttl_is_refused(db: Conn) -> None:
    with pytest.raises(psycopg.Error) as raised:
        try_acquire(db, ["db"], ttl_seconds=0.0)
    assert raised.value.sqlstate == "GC003"
    assert "ttl_seconds" in str(raised.value)


def test_rate_limit_retry_after_is_exact(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('api', 5, 10)")
    # Fill and ask again in one statement, microseconds apart, however loaded the machine is.
    refused = one(
        db,
        """WITH fill AS MATERIALIZED (
               SELECT granted FROM pggcl.try_acquire('{api}', 5, 'rate_limit'))
           SELECT t.* FROM fill f, LATERAL (
               SELECT * FROM pggcl.try_acquire('{api}', 1, 'rate_limit') WHERE f.granted) t""",
    )
    assert not refused["granted"]
    assert refused["lease_id"] is None
    assert 0.09 < refused["retry_after"] <= 0.1
    time.sleep(refused["retry_after"])
    assert try_acquire(db, ["api"], 1, "rate_limit")["granted"]


def test_decay_is_continuous_whatever_happens_in_between(db: Conn) -> None:
    """A full limit of 5 with decay 10/s has room for 1 slot 0.1 s later: refusals, renames
    and updates in between write nothing that resets the bucket. (The in-between runs in one
    server-side block, so that it surely fits in the 0.1 s.)"""
    db.execute(
        """DO $$
        DECLARE
            r record;
        BEGIN
            PERFORM pggcl.create_limit('api', 5, 10);
            r := pggcl.try_acquire('{api}', 5, 'rate_limit');
            ASSERT r.granted;
            FOR i IN 1..5 LOOP
                r := pggcl.try_acquire('{api}', 1, 'rate_limit');
                ASSERT NOT r.granted, 'a refusal';
            END LOOP;
            PERFORM pggcl.update_limit('api', new_name => 'api2');
            PERFORM pggcl.update_limit('api2', "limit" => 5, active => true);
            r := pggcl.try_acquire('{api2}', 1, 'rate_limit');
            ASSERT NOT r.granted AND r.retry_after <= 0.1, 'refused, for what is left of 0.1 s';
        END
        $$"""
    )
    filled_at = time.monotonic()  # after the fill, so waiting until +0.1 s is enough
    time.sleep(0.1)
    assert time.monotonic() - filled_at >= 0.1
    assert try_acquire(db, ["api2"], 1, "rate_limit")["granted"]


def test_slow_decay_still_decays(db: Conn) -> None:
    """The level is a float: at 0.1 slot/s it drains by 0.001 in 10 ms, not rounded to 0."""
    db.execute("SELECT pggcl.create_limit('slow', 1, 0.1)")
    assert try_acquire(db, ["slow"], 1, "rate_limit")["granted"]
    db.execute("SELECT pg_sleep(0.01)")
    level = limit(db, "slow")["decaying_slots"]
    assert 0.9 < level < 1.0
    retry = try_acquire(db, ["slow"], 1, "rate_limit")["retry_after"]
    assert 9.0 < retry < 10.0


def test_decay_rate_change_applies_from_now(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('api', 10, 0.001)")
    assert try_acquire(db, ["api"], 10, "rate_limit")["granted"]
    db.execute("SELECT pggcl.update_limit('api', slot_decay_per_second => 1000)")
    db.execute("SELECT pg_sleep(0.02)")
    assert try_acquire(db, ["api"], 10, "rate_limit")["granted"]


def test_concurrency_and_rate_share_one_limit(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('mixed', 3, 0.001)")
    held = try_acquire(db, ["mixed"], 2)["lease_id"]
    assert try_acquire(db, ["mixed"], 1, "rate_limit")["granted"]
    assert not try_acquire(db, ["mixed"], 1)["granted"]
    release(db, held)
    assert try_acquire(db, ["mixed"], 2)["granted"]


def test_ttl_lease_is_reclaimed_when_it_expires(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    row = one(
        db,
        """WITH held AS MATERIALIZED (SELECT * FROM pggcl.try_acquire('{db}', ttl_seconds => 0.2))
           SELECT h.lease_id AS held, t.* FROM held h,
                  LATERAL (SELECT * FROM pggcl.try_acquire('{db}', ttl_seconds => 60)
                           WHERE h.granted) t""",
    )
    assert not row["granted"]
    assert 0.18 < row["retry_after"] <= 0.2
    assert value(db, "SELECT expires IS NOT NULL AND session_id IS NULL FROM pggcl.holders")
    time.sleep(row["retry_after"])
    assert try_acquire(db, ["db"])["granted"]
    assert release(db, row["held"]) is False


def test_renew_extends_a_ttl_lease(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    held = try_acquire(db, ["db"], ttl_seconds=0.2)["lease_id"]
    assert value(db, "SELECT pggcl.renew(%s, 60)", held) is True
    time.sleep(0.25)
    assert not try_acquire(db, ["db"])["granted"]
    assert release(db, held) is True
    assert value(db, "SELECT pggcl.renew(%s, 60)", held) is False


def test_lease_without_session_or_ttl_belongs_to_the_connection(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    other = connect()
    held = try_acquire(other, ["db"])
    session = value(
        db, "SELECT session_id FROM pggcl.holders WHERE lease_id = %s", held["lease_id"]
    )
    assert session is not None
    # The same connection keeps one session.
    try_acquire(other, ["db2"])
    assert value(db, "SELECT count(DISTINCT session_id) FROM pggcl.holders") == 1


# --- pggcl.take: the uncontended acquire alone -------------------------------------------


def _take(conn: Conn, name: str, session_id: int | None, occupy: int = 1) -> tuple[bool, Any]:
    lease = uuid.uuid4()
    taken = value(conn, "SELECT pggcl.take(%s, %s, %s, 'me', %s)", name, occupy, session_id, lease)
    return taken, lease


def test_take_grants_when_there_is_room_and_no_queue(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    session = value(db, "SELECT session_id FROM pggcl.open_session()")
    taken, lease = _take(db, "db", session, 2)
    assert taken
    holder = one(db, "SELECT lease_id, slots, holder, session_id FROM pggcl.holders")
    assert holder == {"lease_id": lease, "slots": 2, "holder": "me", "session_id": session}
    assert release(db, lease)


@pytest.mark.parametrize(
    "setup",
    [
        "SELECT pggcl.try_acquire('{db}')",  # full
        "SELECT pggcl.update_limit('db', active => false)",  # inactive: acquire decides
        "SELECT pggcl.delete_limit('db')",  # missing: acquire creates it
    ],
)
def test_take_changes_nothing_when_acquire_must_decide(db: Conn, setup: str) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    session = value(db, "SELECT session_id FROM pggcl.open_session()")
    db.execute(setup)
    before = db.execute("SELECT * FROM pggcl.limit_state").fetchall()
    leases = value(db, "SELECT count(*) FROM pggcl.leases")
    assert _take(db, "db", session)[0] is False
    assert db.execute("SELECT * FROM pggcl.limit_state").fetchall() == before
    assert value(db, "SELECT count(*) FROM pggcl.leases") == leases


def test_take_never_jumps_the_queue(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    held = try_acquire(db, ["db"])["lease_id"]
    waiter = connect()
    waiter.execute("SELECT pggcl.open_session()")
    assert not one(waiter, "SELECT granted FROM pggcl.acquire('{db}', 2)")["granted"]
    session = value(db, "SELECT session_id FROM pggcl.open_session()")
    assert _take(db, "db", session)[0] is False  # one slot is free, but a request waits
    release(db, held)


@pytest.mark.parametrize(("occupy", "session"), [(0, True), (-1, True), (None, True), (1, False)])
def test_take_leaves_bad_input_to_acquire(db: Conn, occupy: Any, session: bool) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    session_id = value(db, "SELECT session_id FROM pggcl.open_session()") if session else None
    assert _take(db, "db", session_id, occupy)[0] is False
    assert limit(db, "db")["held_slots"] == 0


def test_take_for_a_reclaimed_session_raises_and_changes_nothing(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    other = connect()
    gone = value(other, "SELECT session_id FROM pggcl.open_session()")
    assert value(other, "SELECT pggcl.close_session()") is True
    with pytest.raises(psycopg.Error) as failure:
        _take(db, "db", gone)
    assert failure.value.sqlstate == "GC007"
    assert limit(db, "db")["held_slots"] == 0
