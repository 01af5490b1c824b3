"""No leak: what a dead connection held is reclaimed; a brief disconnect keeps it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import psycopg

from tests.sql.helpers import acquire, notifications, one, open_session, try_acquire, value

Conn = psycopg.Connection[Any]

# A client process that holds a slot and queues a request, then idles until killed.
HOLDER = textwrap.dedent(
    """
    import sys, time, psycopg
    conn = psycopg.connect(sys.argv[1], autocommit=True)
    conn.execute("SELECT pggcl.open_session(%s)", (float(sys.argv[2]),))
    lease = conn.execute("SELECT lease_id FROM pggcl.try_acquire('{db}')").fetchone()[0]
    waiter = conn.execute("SELECT waiter_id FROM pggcl.acquire('{db}')").fetchone()[0]
    print(lease, waiter, flush=True)
    time.sleep(600)
    """
)


def start_holder(dsn: str, grace_seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, dsn, str(grace_seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the holder has its lease and its queued request
    assert line.strip(), "holder process failed to start"
    return proc


def kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_until_backend_gone(db: Conn, session_id: int) -> None:
    """The server notices the closed socket at once; wait for it via a blocking lock."""
    db.execute("SELECT pg_advisory_lock(1885824867, %s)", (session_id,))
    db.execute("SELECT pg_advisory_unlock(1885824867, %s)", (session_id,))


def test_killed_holder_is_reclaimed_within_grace_with_no_other_action(
    db: Conn, connect: Any, pggcl_dsn: str
) -> None:
    """kill -9 of a holder with the default 5 s grace: a waiter that only runs its heartbeat
    (as every waiting client does) is granted within 10 s."""
    db.execute("SELECT pggcl.create_limit('db', 1)")
    proc = start_holder(pggcl_dsn, 5.0)
    waiter_conn = connect()
    session = open_session(waiter_conn)
    queued = acquire(waiter_conn, ["db"])
    assert not queued["granted"]
    killed_at = time.monotonic()
    kill(proc)
    dead_session = value(db, "SELECT session_id FROM pggcl.holders")
    wait_until_backend_gone(db, dead_session)

    granted = False
    while not granted and time.monotonic() - killed_at < 10:
        next_check = value(waiter_conn, "SELECT pggcl.heartbeat(%s)", session["session_id"])
        granted = any(
            n.payload == f"g:{queued['waiter_id']}"
            for n in waiter_conn.notifies(timeout=min(next_check or 1.0, 1.0), stop_after=1)
        )
    assert granted, "the dead holder's slot was not reclaimed within 10 s"
    # Its lease and its queued request are gone, and so is the session.
    assert value(db, "SELECT count(*) FROM pggcl.holders WHERE session_id = %s", dead_session) == 0
    assert value(db, "SELECT count(*) FROM pggcl.queue WHERE session_id = %s", dead_session) == 0
    assert value(db, "SELECT count(*) FROM pggcl.sessions WHERE id = %s", dead_session) == 0


def test_refusal_says_when_the_dead_holder_will_be_reclaimed(db: Conn, pggcl_dsn: str) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    proc = start_holder(pggcl_dsn, 0.3)
    kill(proc)
    wait_until_backend_gone(db, value(db, "SELECT session_id FROM pggcl.holders"))
    refused = try_acquire(db, ["db"], ttl_seconds=60)
    assert not refused["granted"]
    assert 0 < refused["retry_after"] <= 0.3
    time.sleep(refused["retry_after"])
    assert try_acquire(db, ["db"], ttl_seconds=60)["granted"]


def test_live_holder_is_never_reclaimed(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    holder = connect()
    holder.execute("SELECT pggcl.open_session(0)")
    try_acquire(holder, ["db"])
    for _ in range(3):
        assert not try_acquire(db, ["db"], ttl_seconds=60)["granted"]
    assert value(db, "SELECT count(*) FROM pggcl.holders") == 1


def test_brief_disconnect_within_grace_keeps_the_slots(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    first = connect()
    session = one(first, "SELECT * FROM pggcl.open_session(30)")
    lease = try_acquire(first, ["db"])["lease_id"]
    pid = value(first, "SELECT pg_backend_pid()")
    db.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    # Someone probes in the meantime: the session is seen dead, but within its grace.
    assert not try_acquire(db, ["db"], ttl_seconds=60)["granted"]
    second = connect()
    resumed = value(
        second, "SELECT pggcl.resume_session(%s, %s)", session["session_id"], session["token"]
    )
    assert resumed is True
    assert value(db, "SELECT lease_id FROM pggcl.holders") == lease
    assert not try_acquire(db, ["db"], ttl_seconds=60)["granted"]
    assert (
        value(db, "SELECT dead_since FROM pggcl.sessions WHERE id = %s", session["session_id"])
        is None
    )
    assert value(second, "SELECT pggcl.release(%s)", lease) is True


def test_resume_is_refused_while_the_old_connection_lives(db: Conn, connect: Any) -> None:
    first = connect()
    session = one(first, "SELECT * FROM pggcl.open_session()")
    second = connect()
    try:
        second.execute(
            "SELECT pggcl.resume_session(%s, %s)", (session["session_id"], session["token"])
        )
        raise AssertionError("resume succeeded while the session was held")
    except psycopg.Error as error:
        assert error.sqlstate == "GC008"
    try:
        second.execute(
            "SELECT pggcl.resume_session(%s, gen_random_uuid())", (session["session_id"],)
        )
        raise AssertionError("resume succeeded with a wrong token")
    except psycopg.Error as error:
        assert error.sqlstate == "GC007"


def test_resume_after_reclaim_says_false(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    first = connect()
    session = one(first, "SELECT * FROM pggcl.open_session(0)")
    try_acquire(first, ["db"])
    db.execute("SELECT pg_terminate_backend(%s, 5000)", (value(first, "SELECT pg_backend_pid()"),))
    assert try_acquire(db, ["db"], ttl_seconds=60)["granted"]  # grace 0: reclaimed at once
    second = connect()
    assert (
        value(
            second, "SELECT pggcl.resume_session(%s, %s)", session["session_id"], session["token"]
        )
        is False
    )


def test_close_session_releases_everything_and_serves_the_queue(db: Conn, connect: Any) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    owner = connect()
    open_session(owner)
    try_acquire(owner, ["db"])
    acquire(owner, ["db"])
    other = connect()
    open_session(other)
    queued = acquire(other, ["db"])
    assert value(owner, "SELECT pggcl.close_session()") is True
    assert notifications(other, 1) == [f"g:{queued['waiter_id']}"]
    assert value(db, "SELECT count(*) FROM pggcl.queue") == 0
    assert value(owner, "SELECT pggcl.close_session()") is False
    # The connection can register again afterwards.
    assert one(owner, "SELECT * FROM pggcl.open_session()")["session_id"] is not None


def test_sessions_that_died_holding_nothing_are_forgotten(db: Conn, connect: Any) -> None:
    gone = connect()
    dead = value(gone, "SELECT session_id FROM pggcl.open_session()")
    db.execute("SELECT pg_terminate_backend(%s, 5000)", (value(gone, "SELECT pg_backend_pid()"),))
    alive = connect()
    alive_id = value(alive, "SELECT session_id FROM pggcl.open_session()")
    connect().execute("SELECT pggcl.open_session()")  # any new session sweeps a few
    ids = {row[0] for row in db.execute("SELECT id FROM pggcl.sessions")}
    assert dead not in ids
    assert alive_id in ids


def test_reclaim_frees_a_dead_holders_slots_with_nobody_waiting(db: Conn, pggcl_dsn: str) -> None:
    """pggcl.reclaim() (for pg_cron, say) does on every limit what a heartbeat does."""
    db.execute("SELECT pggcl.create_limit('db', 1)")
    proc = start_holder(pggcl_dsn, 0.3)
    kill(proc)
    dead_session = value(db, "SELECT session_id FROM pggcl.holders")
    wait_until_backend_gone(db, dead_session)
    db.execute("SELECT pggcl.cancel(waiter_id) FROM pggcl.queue")  # nobody waits
    next_check = value(db, "SELECT pggcl.reclaim()")
    assert 0 < next_check <= 0.3  # seen dead: its grace ends then
    assert value(db, "SELECT held_slots FROM pggcl.limits") == 1
    time.sleep(next_check)
    assert value(db, "SELECT pggcl.reclaim()") is None
    assert value(db, "SELECT held_slots FROM pggcl.limits") == 0
    assert value(db, "SELECT count(*) FROM pggcl.sessions WHERE id = %s", dead_session) == 0


def test_a_heartbeat_with_everyone_alive_locks_no_limit(db: Conn, connect: Any) -> None:
    """The usual heartbeat finds nothing dead: it must not wait for, or hold, a limit's lock
    (it would hold up the releases that keep the queue moving)."""
    db.execute("SELECT pggcl.create_limit('db', 1)")
    try_acquire(db, ["db"])
    conn = connect()
    session = open_session(conn)
    acquire(conn, ["db"])
    locker = connect()
    locker.autocommit = False
    locker.execute("SELECT FROM pggcl.limit_state WHERE name = 'db' FOR NO KEY UPDATE")
    try:
        conn.execute("SET lock_timeout = '1s'")
        assert value(conn, "SELECT pggcl.heartbeat(%s)", session["session_id"]) is None
    finally:
        locker.rollback()
