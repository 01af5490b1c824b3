"""Priorities (issue #15, revision 0015): a head start in seconds. A request with priority p is
served as if it had come p seconds earlier; a later arrival passes a waiter only by its own
head start, so nobody starves."""

from __future__ import annotations

from collections.abc import Callable
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
)

Conn = psycopg.Connection[Any]


def queued_in_order(db: Conn, name: str) -> list[tuple[int, float]]:
    rows = db.execute(
        "SELECT waiter_id, priority FROM pggcl.queue WHERE name = %s ORDER BY position", (name,)
    ).fetchall()
    return [(int(w), float(p)) for w, p in rows]


def waiter(connect: Callable[[], Conn], names: list[str], **kwargs: Any) -> tuple[Conn, int]:
    """A session of its own that queues for `names`; (its connection, its waiter id)."""
    conn = connect()
    open_session(conn)
    answer = acquire(conn, names, **kwargs)
    assert not answer["granted"], answer
    return conn, int(answer["waiter_id"])


def test_the_queue_is_served_by_arrival_less_head_start(
    db: Conn, connect: Callable[[], Conn]
) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    open_session(db)
    held = acquire(db, ["db"])
    _, plain = waiter(connect, ["db"])
    ahead_conn, ahead = waiter(connect, ["db"], priority=10.0)
    _, behind = waiter(connect, ["db"], priority=-10.0)
    assert queued_in_order(db, "db") == [(ahead, 10.0), (plain, 0.0), (behind, -10.0)]

    release(db, held["lease_id"])  # the head start wins the freed slot
    assert notifications(ahead_conn, 1) == [f"g:{ahead}"]
    assert queued_in_order(db, "db") == [(plain, 0.0), (behind, -10.0)]


def test_a_head_start_is_granted_at_once_only_when_nobody_is_ahead(
    db: Conn, connect: Callable[[], Conn]
) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    assert try_acquire(db, ["db"], ttl_seconds=60)["granted"]  # 1 of 2 held
    _, big = waiter(connect, ["db"], occupy=2)  # blocks the queue: 2 do not fit
    # One slot is free, but the big request is ahead of a plain newcomer: it queues.
    assert not try_acquire(db, ["db"], ttl_seconds=60)["granted"]
    # With a head start of 10 s it is ahead of the big request: granted at once.
    assert try_acquire(db, ["db"], ttl_seconds=60, priority=10.0)["granted"]
    assert limit(db, "db")["held_slots"] == 2
    assert [w for w, _ in queued_in_order(db, "db")] == [big]


def test_a_later_arrival_passes_a_waiter_only_by_its_own_head_start(
    db: Conn, connect: Callable[[], Conn]
) -> None:
    # A waiter with priority -0.5 arrives at t0 and stands at t0 + 0.5: plain requests that
    # come before then are ahead of it, those that come after are behind it, for good.
    db.execute("SELECT pggcl.create_limit('db', 1)")
    assert try_acquire(db, ["db"], ttl_seconds=60)["granted"]
    _, slow = waiter(connect, ["db"], priority=-0.5)
    _, early = waiter(connect, ["db"])
    db.execute("SELECT pg_sleep(0.6)")  # the head start itself is what is tested
    _, late = waiter(connect, ["db"])
    assert [w for w, _ in queued_in_order(db, "db")] == [early, slow, late]


def test_a_steady_stream_does_not_starve_a_waiter_with_a_negative_priority(
    db: Conn, connect: Callable[[], Conn]
) -> None:
    # A plain request arrives every 50 ms and each time the head of the queue is served: a
    # waiter 0.3 s behind everyone still reaches the head, passed only by the few that came
    # within its 0.3 s.
    db.execute("SELECT pggcl.create_limit('db', 1)")
    lease = try_acquire(db, ["db"], ttl_seconds=600)["lease_id"]
    slow_conn, slow = waiter(connect, ["db"], priority=-0.3)
    sessions = {slow: slow_conn}
    for passed in range(40):  # noqa: B007 (read after the loop)
        conn, newcomer = waiter(connect, ["db"])
        sessions[newcomer] = conn
        head = queued_in_order(db, "db")[0][0]
        release(db, lease)
        assert notifications(sessions[head], 1) == [f"g:{head}"]
        if head == slow:
            break
        [(lease,)] = db.execute("SELECT lease_id FROM pggcl.holders WHERE name = 'db'").fetchall()
        db.execute("SELECT pg_sleep(0.05)")
    else:
        pytest.fail("the waiter with priority -0.3 was never served")
    assert 1 <= passed <= 12, passed


def test_priorities_keep_multi_limit_requests_atomic(db: Conn, connect: Callable[[], Conn]) -> None:
    db.execute("SELECT pggcl.create_limit('a', 1), pggcl.create_limit('b', 1)")
    on_a = try_acquire(db, ["a"], ttl_seconds=60)["lease_id"]
    both_conn, both = waiter(connect, ["a", "b"])  # a is full: it waits on both, holding neither
    # b is free; a head start puts this request ahead of the one waiting there: at once.
    on_b = try_acquire(db, ["b"], ttl_seconds=60, priority=5.0)
    assert on_b["granted"]
    assert try_acquire(db, ["b"], ttl_seconds=60)["granted"] is False  # a plain one waits
    release(db, on_a)  # a is free now, but b is not: the request for both takes neither
    assert [w for w, _ in queued_in_order(db, "a")] == [both]
    assert limit(db, "a")["held_slots"] == 0
    release(db, on_b["lease_id"])  # both free: it is told to look again, and is granted
    assert one(both_conn, "SELECT * FROM pggcl.recheck(%s)", both)["status"] == "granted"
    assert queued_in_order(db, "a") == [] and queued_in_order(db, "b") == []
    assert (limit(db, "a")["held_slots"], limit(db, "b")["held_slots"]) == (1, 1)


@pytest.mark.parametrize("priority", [86400.5, -86400.5, float("nan"), float("inf"), None])
def test_a_bad_priority_is_refused_naming_it_and_changes_nothing(db: Conn, priority: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    open_session(db)
    for function in (acquire, try_acquire):
        with pytest.raises(psycopg.Error) as raised:
            function(db, ["db"], priority=priority)
        assert raised.value.sqlstate == "GC003"
        assert raised.value.diag.column_name == "priority"
        assert "priority" in str(raised.value)
    row = limit(db, "db")
    assert (row["held_slots"], row["waiting"], row["grants"], row["denied"]) == (0, 0, 0, 0)
