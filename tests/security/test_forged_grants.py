"""A grant cannot be forged (issue #13, point 1): anyone who can connect may NOTIFY any channel,
so a notification must not let a waiter into its block. The victim waits on a limit of 1 that
someone else holds; the attackers (a tenant, and a role with no pggcl rights) send the payloads
the engine would send (`g:`, `r:`, `e:`) on the channel named after the victim's session."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

import pggcl
from tests.security.conftest import Cast
from tests.security.helpers import Connect, RawSession, assert_bookkeeping, holders, queue, rows

PAYLOADS = {"g": "g:{w}", "r": "r:{w}", "e": "e:{w}:forged: never granted"}


def forge(conn: psycopg.Connection[Any], session_id: int, waiter_id: int, kind: str) -> None:
    """What an attacker does: guess the channel from the session id (or read both from
    pggcl.queue) and notify it."""
    payload = PAYLOADS[kind].format(w=waiter_id)
    conn.execute("SELECT pg_notify(%s, %s)", (f"pggcl_{session_id}", payload))


def _wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize(
    "kind",
    [
        "g",
        "r",
        "e",
    ],
)
@pytest.mark.parametrize("attacker", ["tenant", "outsider"])
def test_a_forged_notification_does_not_let_a_client_in(
    cast: Cast, connect: Connect, attacker: str, kind: str
) -> None:
    admin = connect(cast.admin.dsn)
    admin.execute("SELECT pggcl.create_limit('solo', 1)")
    holder = RawSession(connect(cast.admin.dsn))
    held = holder.hold("solo")

    entered = threading.Event()
    leave = threading.Event()
    failures: list[BaseException] = []
    seen_in_block: list[list[uuid.UUID]] = []
    watcher = connect(cast.admin.dsn)

    def victim() -> None:
        try:
            with (
                pggcl.Client(cast.other.dsn) as client,
                client.concurrency("solo", timeout_seconds=20),
            ):
                seen_in_block.append([h["lease_id"] for h in holders(watcher, "solo")])
                entered.set()
                leave.wait(10)
        except BaseException as error:  # reported by the main thread
            failures.append(error)
            entered.set()

    thread = threading.Thread(target=victim, daemon=True)
    thread.start()
    try:
        _wait_until(lambda: len(queue(admin, "solo")) == 1)
        waiting = queue(admin, "solo")[0]
        forge(
            connect(getattr(cast, attacker).dsn), waiting["session_id"], waiting["waiter_id"], kind
        )
        time.sleep(0.5)
        assert failures == [], f"the forged {kind!r} made the victim fail: {failures!r}"
        assert not entered.is_set(), f"the forged {kind!r} let the victim in while 'solo' is held"
        assert [q["waiter_id"] for q in queue(admin, "solo")] == [waiting["waiter_id"]]

        # The real grant still works: released, the victim enters, alone.
        assert holder.conn.execute("SELECT pggcl.release(%s)", (held,)).fetchone() == (True,)
        assert entered.wait(10), "the real grant did not let the victim in"
        assert failures == []
        assert len(seen_in_block) == 1 and len(seen_in_block[0]) == 1, seen_in_block
    finally:
        leave.set()
        thread.join(20)
    assert failures == []
    # Nothing left behind.
    assert rows(admin, "SELECT * FROM pggcl.leases") == []
    assert rows(admin, "SELECT * FROM pggcl.waiters") == []
    assert_bookkeeping(admin)


@pytest.mark.parametrize("attacker", ["tenant", "outsider"])
def test_a_forged_notification_does_not_reach_a_raw_protocol_session(
    cast: Cast, connect: Connect, attacker: str
) -> None:
    """A client following the README protocol by hand (psql, another language) LISTENs on the
    channel open_session returns. Nothing sent to the guessable `pggcl_<session_id>` channel
    may arrive there: the channel carries a secret that open_session returns to its caller
    alone, so no other role can reach it (README, "Sessions and waiting")."""
    admin = connect(cast.admin.dsn)
    admin.execute("SELECT pggcl.create_limit('solo', 1)")
    admin.execute("SELECT pggcl.try_acquire('{solo}', ttl_seconds => 600)")
    victim = RawSession(connect(cast.other.dsn))
    waiter_id, _ = victim.wait_for("solo")
    conn = connect(getattr(cast, attacker).dsn)
    for kind in PAYLOADS:
        forge(conn, victim.session_id, waiter_id, kind)
    assert victim.payloads(timeout=0.5) == []
    # ... and the engine's state is as it was: the victim is still queued, nothing granted.
    assert [q["waiter_id"] for q in queue(admin, "solo")] == [waiter_id]
    assert len(holders(admin, "solo")) == 1


def test_nobody_else_hears_a_sessions_notifications(cast: Cast, connect: Connect) -> None:
    """LISTEN needs no privilege: with guessable channel names anyone can watch every
    session's grants (who waits, when, for how long)."""
    admin = connect(cast.admin.dsn)
    admin.execute("SELECT pggcl.create_limit('solo', 1)")
    holder = RawSession(connect(cast.admin.dsn))
    held = holder.hold("solo")
    victim = RawSession(connect(cast.other.dsn))
    victim.wait_for("solo")
    spy = connect(cast.outsider.dsn)
    spy.execute(f'LISTEN "pggcl_{victim.session_id}"')
    holder.conn.execute("SELECT pggcl.release(%s)", (held,))
    told = [n.payload for n in victim.conn.notifies(timeout=5.0, stop_after=1)]
    assert len(told) == 1, "the victim was not told"
    assert [n.payload for n in spy.notifies(timeout=0.3)] == []


def test_no_other_role_learns_a_sessions_channel(cast: Cast, connect: Connect) -> None:
    """The secret channel is the only thing that keeps a forger out (a `g:` on it is trusted),
    so no other role may learn it: not from pg_stat_activity (whose query column shows the
    owner's `LISTEN "<channel>"`), nor from the views. What the README says others may still
    see is checked too: the same role and a superuser do see it in pg_stat_activity."""
    admin = connect(cast.admin.dsn)
    admin.execute("SELECT pggcl.create_limit('solo', 1)")
    admin.execute("SELECT pggcl.try_acquire('{solo}', ttl_seconds => 600)")
    victim = RawSession(connect(cast.other.dsn))
    victim.wait_for("solo")
    victim.conn.execute(
        psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(victim.channel))
    )  # its last statement: what pg_stat_activity shows of its connection
    secret = victim.channel.rsplit("_", 1)[1]
    assert len(secret) == 32, victim.channel

    def shown_to(conn: psycopg.Connection[Any]) -> str:
        found = [
            rows(conn, "SELECT to_jsonb(a)::text AS row FROM pg_stat_activity a"),
            rows(conn, "SELECT pg_listening_channels() AS channel"),
        ]
        if conn.info.user != cast.outsider.name:  # the outsider reads no view
            found += [
                rows(conn, f"SELECT to_jsonb(v)::text AS row FROM {view} v")
                for view in ("pggcl.limits", "pggcl.holders", "pggcl.queue")
            ]
        return str(found)

    for attacker in (cast.tenant, cast.outsider):
        assert secret not in shown_to(connect(attacker.dsn)), f"{attacker.name} sees the channel"
    assert secret in shown_to(connect(cast.other.dsn)), "the same role sees it (README)"
    assert secret in shown_to(admin), "a superuser sees it (README)"
