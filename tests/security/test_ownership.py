"""Ownership (issue #13, point 2): a pggcl_user acts only on its own sessions' leases, waiters
and sessions; a role without pggcl rights acts on nothing; a manager may release any lease.
Private tables stay private, and what the views show a tenant holds no secret."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.security.conftest import Cast
from tests.security.helpers import (
    Connect,
    RawSession,
    assert_bookkeeping,
    attempt,
    describe,
    refused_or_harmless,
    rows,
    value,
)


@dataclass
class Victim:
    session: RawSession
    lease_id: uuid.UUID  # held on 'x' (limit 1)
    waiter_id: int  # queued on 'y' (limit 1, held by the admin with a TTL)
    waiter_lease_id: uuid.UUID


def victim_state(admin: psycopg.Connection[Any], session_id: int) -> dict[str, list[str]]:
    """Everything of the victim's session in the private tables."""
    return {
        table: [
            json.dumps(r[0], sort_keys=True)
            for r in admin.execute(
                f"SELECT to_jsonb(x) FROM pggcl.{table} x WHERE x.{column} = %s ORDER BY 1::text",
                (session_id,),
            )
        ]
        for table, column in (
            ("sessions", "id"),
            ("leases", "session_id"),
            ("waiters", "session_id"),
        )
    }


@pytest.fixture
def victim(cast: Cast, connect: Connect) -> Victim:
    admin = connect(cast.admin.dsn)
    for name in ("x", "y", "z"):
        admin.execute("SELECT pggcl.create_limit(%s, 1)", (name,))
    admin.execute("SELECT pggcl.try_acquire('{y}', ttl_seconds => 600, holder => 'admin')")
    session = RawSession(connect(cast.other.dsn))
    lease = session.hold("x")
    waiter, waiter_lease = session.wait_for("y")
    return Victim(session, lease, waiter, waiter_lease)


ATTACKS = {
    "release": "SELECT pggcl.release(%(lease)s)",
    "renew": "SELECT pggcl.renew(%(lease)s, 0.001)",
    "cancel": "SELECT pggcl.cancel(%(waiter)s)",
    "cancel-with-lease": "SELECT pggcl.cancel(%(waiter)s, %(lease)s)",
    "take-for-victim": "SELECT pggcl.take('z', 1, %(sid)s, 'attacker', gen_random_uuid())",
    "acquire-for-victim": "SELECT granted FROM pggcl.acquire('{z}', session_id => %(sid)s)",
    "acquire-queued-for-victim": (
        "SELECT waiter_id FROM pggcl.acquire('{x}', session_id => %(sid)s)"
    ),
    "try-acquire-for-victim": "SELECT granted FROM pggcl.try_acquire('{z}', session_id => %(sid)s)",
    "close-session": "SELECT pggcl.close_session(%(sid)s)",
    "close-session-wrong-token": "SELECT pggcl.close_session(%(sid)s, gen_random_uuid())",
    "resume-session-null-token": "SELECT pggcl.resume_session(%(sid)s, NULL)",
    "resume-session-wrong-token": "SELECT pggcl.resume_session(%(sid)s, gen_random_uuid())",
    "heartbeat": "SELECT pggcl.heartbeat(%(sid)s)",
    "recheck": "SELECT status FROM pggcl.recheck(%(waiter)s)",
}

# What each attack did on the engine as it stood when the suite was written (all fixed by
# revision 0006: none is expected to fail any more).
TODAY: dict[str, str] = {}


def _tenant_attacks() -> list[Any]:
    return [
        pytest.param(
            attack,
            marks=[
                pytest.mark.xfail(
                    strict=True, raises=AssertionError, reason=f"issue #13: {TODAY[attack]}"
                )
            ]
            if attack in TODAY
            else [],
            id=attack,
        )
        for attack in ATTACKS
    ]


def _assert_victim_intact(
    admin: psycopg.Connection[Any], victim: Victim, before: dict[str, list[str]], attack: str
) -> None:
    assert victim_state(admin, victim.session.session_id) == before, attack
    # The victim still holds its lease and waits in its place, and no one else got in.
    held = [h["lease_id"] for h in rows(admin, "SELECT * FROM pggcl.holders WHERE name = 'x'")]
    assert held == [victim.lease_id], attack
    queued = [q["waiter_id"] for q in rows(admin, "SELECT * FROM pggcl.queue WHERE name = 'y'")]
    assert queued == [victim.waiter_id], attack
    assert_bookkeeping(admin)


def _params(victim: Victim) -> dict[str, Any]:
    return {"lease": victim.lease_id, "waiter": victim.waiter_id, "sid": victim.session.session_id}


@pytest.mark.parametrize("attack", _tenant_attacks())
def test_a_tenant_acts_on_no_other_sessions_lease_waiter_or_session(
    cast: Cast, connect: Connect, victim: Victim, attack: str
) -> None:
    admin = connect(cast.admin.dsn)
    conn = connect(cast.tenant.dsn)
    RawSession(conn)  # the attacker has a session of its own
    before = victim_state(admin, victim.session.session_id)
    refused_or_harmless(conn, ATTACKS[attack], _params(victim))
    _assert_victim_intact(admin, victim, before, attack)


def test_the_outsider_acts_on_nothing(cast: Cast, connect: Connect, victim: Victim) -> None:
    admin = connect(cast.admin.dsn)
    conn = connect(cast.outsider.dsn)
    before = victim_state(admin, victim.session.session_id)
    for attack, query in ATTACKS.items():
        _, error = attempt(conn, query, _params(victim))
        assert error is not None and error.sqlstate == "42501", attack
        _assert_victim_intact(admin, victim, before, attack)


def test_the_owner_still_renews_cancels_and_releases_its_own(
    cast: Cast, connect: Connect, victim: Victim
) -> None:
    conn = victim.session.conn
    assert value(conn, "SELECT pggcl.renew(%s, 60)", victim.lease_id) is True
    assert value(conn, "SELECT pggcl.cancel(%s, %s)", victim.waiter_id, victim.waiter_lease_id) == (
        "cancelled"
    )
    assert value(conn, "SELECT pggcl.release(%s)", victim.lease_id) is True
    assert value(conn, "SELECT pggcl.close_session()") is True
    admin = connect(cast.admin.dsn)
    assert rows(admin, "SELECT * FROM pggcl.leases WHERE session_id IS NOT NULL") == []
    assert_bookkeeping(admin)


def test_a_manager_may_release_any_lease(cast: Cast, connect: Connect, victim: Victim) -> None:
    manager = connect(cast.manager.dsn)
    assert value(manager, "SELECT pggcl.release(%s)", victim.lease_id) is True
    admin = connect(cast.admin.dsn)
    assert rows(admin, "SELECT * FROM pggcl.holders WHERE name = 'x'") == []
    assert_bookkeeping(admin)


PRIVATE = (
    "SELECT * FROM pggcl.sessions",
    "SELECT token FROM pggcl.sessions",
    "SELECT * FROM pggcl.leases",
    "SELECT * FROM pggcl.waiters",
    "SELECT * FROM pggcl.limit_state",
    "SELECT nextval('pggcl.session_id_seq')",
    "SELECT setval('pggcl.waiter_id_seq', 1)",
    "UPDATE pggcl.limit_state SET held = 0",
    "DELETE FROM pggcl.leases",
)


def test_private_tables_are_refused(cast: Cast, connect: Connect, victim: Victim) -> None:
    readers = {r: connect(getattr(cast, r).dsn) for r in ("tenant", "outsider", "manager")}
    for reader, query in [(r, q) for r in readers for q in PRIVATE]:
        _, error = attempt(readers[reader], query)
        assert error is not None, f"{reader} ran {query}"
        assert error.sqlstate == "42501", (reader, query, describe(error))


def test_the_outsider_reads_no_view(cast: Cast, connect: Connect) -> None:
    outsider = connect(cast.outsider.dsn)
    for view in ("pggcl.limits", "pggcl.holders", "pggcl.queue"):
        _, error = attempt(outsider, f"SELECT * FROM {view}")
        assert error is not None and error.sqlstate == "42501", view


def test_what_the_views_show_a_tenant_holds_no_token(
    cast: Cast, connect: Connect, victim: Victim
) -> None:
    tenant = connect(cast.tenant.dsn)
    shown = json.dumps(
        [
            rows(tenant, f"SELECT to_jsonb(v)::text AS row FROM {view} v")
            for view in ("pggcl.limits", "pggcl.holders", "pggcl.queue")
        ]
    )
    assert str(victim.session.token) not in shown
    assert "token" not in shown


def test_the_outsider_may_call_no_pggcl_function(cast: Cast, connect: Connect) -> None:
    admin = connect(cast.admin.dsn)
    callable_by_outsider = [
        r["f"]
        for r in rows(
            admin,
            """SELECT p.oid::regprocedure::text AS f FROM pg_proc p
               WHERE p.pronamespace = 'pggcl'::regnamespace
                 AND has_function_privilege(%s, p.oid, 'EXECUTE')
                 AND has_schema_privilege(%s, 'pggcl', 'USAGE')""",
            cast.outsider.name,
            cast.outsider.name,
        )
    ]
    assert callable_by_outsider == []
    _, error = attempt(connect(cast.outsider.dsn), "SELECT * FROM pggcl.open_session()")
    assert error is not None and error.sqlstate == "42501"


def test_a_tenant_may_execute_no_internal_function_that_writes(
    cast: Cast, connect: Connect
) -> None:
    """Internal helpers (named _...) run without checks; a tenant may call only pure ones, and
    the two the views need (they run as their reader), each safe to call directly."""
    admin = connect(cast.admin.dsn)
    writable = [
        r["f"]
        for r in rows(
            admin,
            """SELECT p.oid::regprocedure::text AS f FROM pg_proc p
               WHERE p.pronamespace = 'pggcl'::regnamespace AND p.proname LIKE '\\_%%'
                 AND p.provolatile <> 'i' AND has_function_privilege(%s, p.oid, 'EXECUTE')""",
            cast.tenant.name,
        )
    ]
    assert sorted(writable) == sorted(VIEW_HELPERS)


#: The helpers the views call that are not pure, and why a tenant calling them directly gains
#: nothing (revision 0008).
VIEW_HELPERS = {
    # Reads pg_stat_activity, which every role may read.
    "pggcl._same_backend(integer,timestamp with time zone)": "reads only",
    # SECURITY DEFINER, pinned; records a first sighting only of a session that is dead now.
    "pggcl._dead_since(integer)": "checks its session is dead",
}


def test_a_tenant_cannot_start_a_live_sessions_grace(
    cast: Cast, connect: Connect, victim: Victim
) -> None:
    """pggcl._dead_since records when a session was first seen dead (the views call it): called
    directly on a live session it records nothing, so the victim keeps its whole grace."""
    admin = connect(cast.admin.dsn)
    tenant = connect(cast.tenant.dsn)
    before = victim_state(admin, victim.session.session_id)
    seen = refused_or_harmless(tenant, "SELECT pggcl._dead_since(%s)", victim.session.session_id)
    assert seen is None
    assert rows(admin, "SELECT * FROM pggcl.sightings") == []
    _assert_victim_intact(admin, victim, before, "_dead_since")


def test_a_tenant_cannot_become_another_session_by_setting_pggcl_session_id(
    cast: Cast, connect: Connect, victim: Victim
) -> None:
    admin = connect(cast.admin.dsn)
    before = victim_state(admin, victim.session.session_id)
    tenant = connect(cast.tenant.dsn)
    sid = str(victim.session.session_id)
    for how in (
        f"SET pggcl.session_id = '{sid}'",
        f"SELECT set_config('pggcl.session_id', '{sid}', false)",
    ):
        # Refusing the setting is fine; so is ignoring it.
        refused_or_harmless(tenant, how)
        disclosed = rows(tenant, "SELECT session_id, token FROM pggcl.open_session()")
        assert all(r["token"] != victim.session.token for r in disclosed), "token disclosed"
        assert all(r["session_id"] != victim.session.session_id for r in disclosed)
        for attack in (
            "SELECT pggcl.close_session()",
            "SELECT granted FROM pggcl.acquire('{z}')",
            "SELECT granted FROM pggcl.try_acquire('{z}')",
            f"SELECT pggcl.resume_session({sid}, NULL)",
        ):
            refused_or_harmless(tenant, attack)
            _assert_victim_intact(admin, victim, before, attack)
        tenant.execute("RESET pggcl.session_id")


def test_a_tenant_cannot_borrow_another_sessions_lease_id(
    cast: Cast, connect: Connect, victim: Victim
) -> None:
    """request_id is the caller's choice; choosing someone else's lease id must not make their
    lease the caller's (a fix that checks 'a row of this lease is mine' would fall for it)."""
    admin = connect(cast.admin.dsn)
    before = victim_state(admin, victim.session.session_id)
    tenant = RawSession(connect(cast.tenant.dsn))
    for query in (
        "SELECT granted FROM pggcl.acquire('{z}', session_id => %(me)s, request_id => %(lease)s)",
        "SELECT granted FROM pggcl.acquire('{x}', session_id => %(me)s, request_id => %(lease)s)",
        "SELECT pggcl.take('z', 1, %(me)s, 'h', %(lease)s)",
        "SELECT pggcl.release(%(lease)s)",
        "SELECT pggcl.cancel(NULL, %(lease)s)",
    ):
        refused_or_harmless(tenant.conn, query, {"me": tenant.session_id, "lease": victim.lease_id})
        _assert_victim_intact(admin, victim, before, query)


# --- Revision 0008: TTL leases have an owner; recheck and resume_session by role ------------


def test_a_tenant_cannot_release_or_renew_another_roles_ttl_lease(
    cast: Cast, connect: Connect
) -> None:
    admin = connect(cast.admin.dsn)
    admin.execute("SELECT pggcl.create_limit('t', 1)")
    other = connect(cast.other.dsn)
    lease = value(other, "SELECT lease_id FROM pggcl.try_acquire('{t}', ttl_seconds => 60)")
    assert lease is not None
    expires = value(admin, "SELECT expires_at FROM pggcl.leases WHERE id = %s", lease)
    tenant = connect(cast.tenant.dsn)
    assert refused_or_harmless(tenant, "SELECT pggcl.release(%s)", lease) is False
    assert refused_or_harmless(tenant, "SELECT pggcl.renew(%s, 0.001)", lease) is False
    assert value(admin, "SELECT expires_at FROM pggcl.leases WHERE id = %s", lease) == expires
    # Its own role renews it; a manager releases it.
    assert value(other, "SELECT pggcl.renew(%s, 120)", lease) is True
    assert value(connect(cast.manager.dsn), "SELECT pggcl.release(%s)", lease) is True
    assert value(admin, "SELECT count(*) FROM pggcl.leases") == 0


def test_the_role_that_took_a_ttl_lease_releases_it(cast: Cast, connect: Connect) -> None:
    admin = connect(cast.admin.dsn)
    admin.execute("SELECT pggcl.create_limit('t', 1)")
    other = connect(cast.other.dsn)
    lease = value(other, "SELECT lease_id FROM pggcl.try_acquire('{t}', ttl_seconds => 60)")
    # Another connection of the same role (a TTL lease has no session to prove).
    assert value(connect(cast.other.dsn), "SELECT pggcl.release(%s)", lease) is True


def test_a_tenant_cannot_recheck_another_roles_waiter(
    cast: Cast, connect: Connect, victim: Victim
) -> None:
    admin = connect(cast.admin.dsn)
    before = victim_state(admin, victim.session.session_id)
    _, error = attempt(
        connect(cast.tenant.dsn),
        "SELECT status FROM pggcl.recheck(%s, %s)",
        victim.waiter_id,
        victim.waiter_lease_id,
    )
    assert error is not None and error.sqlstate == "GC007", error
    assert "another role" in str(error)
    _assert_victim_intact(admin, victim, before, "recheck")
    # A manager may (it serves the queue and says where the waiter stands).
    status = value(
        connect(cast.manager.dsn), "SELECT status FROM pggcl.recheck(%s)", victim.waiter_id
    )
    assert status == "queued"


def test_a_tenant_cannot_resume_another_roles_session_even_with_its_token(
    cast: Cast, connect: Connect, victim: Victim
) -> None:
    admin = connect(cast.admin.dsn)
    sid, token = victim.session.session_id, victim.session.token
    victim.session.conn.close()
    admin.execute("SELECT pg_advisory_lock(1885824867, %s)", (sid,))  # its backend is gone
    admin.execute("SELECT pg_advisory_unlock(1885824867, %s)", (sid,))
    for role in (cast.tenant, cast.manager):
        _, error = attempt(connect(role.dsn), "SELECT pggcl.resume_session(%s, %s)", sid, token)
        assert error is not None and error.sqlstate == "GC007", (role, error)
        assert "another role" in str(error)
    assert value(connect(cast.other.dsn), "SELECT pggcl.resume_session(%s, %s)", sid, token)


def test_clients_that_share_a_role_are_not_isolated(
    cast: Cast, connect: Connect, victim: Victim
) -> None:
    """What the README says ownership is not: per session. Another connection of the victim's
    own role acts on its session, lease and waiter; only resume and close by id need the
    token."""
    admin = connect(cast.admin.dsn)
    same = connect(cast.other.dsn)
    p = _params(victim)
    for refused in ("close-session-wrong-token", "resume-session-wrong-token"):
        before = victim_state(admin, victim.session.session_id)
        refused_or_harmless(same, ATTACKS[refused], p)
        _assert_victim_intact(admin, victim, before, refused)
    assert value(same, "SELECT pggcl.heartbeat(%s)", victim.session.session_id) is not None
    assert value(same, ATTACKS["take-for-victim"], p) is True
    assert value(same, "SELECT pggcl.renew(%(lease)s, 60)", p) is True
    assert value(same, "SELECT pggcl.cancel(%(waiter)s)", p) == "cancelled"
    assert value(same, ATTACKS["release"], p) is True
    granted = "SELECT granted FROM pggcl.acquire('{x}', session_id => %(sid)s)"
    assert value(same, granted, p) is True
    held = rows(admin, "SELECT name FROM pggcl.holders WHERE session_id = %s", p["sid"])
    assert sorted(h["name"] for h in held) == ["x", "z"]  # both under the victim's session
    assert_bookkeeping(admin)
