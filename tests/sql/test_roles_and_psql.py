"""The SQL API stands on its own: roles and a psql session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pggcl.testing import PsqlError

Psql = Callable[..., str]


@pytest.fixture
def login_as(pggcl_role_dsn: Callable[[str], str]) -> Callable[[str], str]:
    """Make a login role that is a member of the given pggcl role; return its DSN."""
    return pggcl_role_dsn


def test_user_role_acquires_releases_and_reads_but_manages_nothing(
    pggcl_dsn: str, login_as: Callable[[str], str], psql: Psql
) -> None:
    psql("SELECT pggcl.create_limit('db', 2)", pggcl_dsn)
    user = login_as("pggcl_user")
    lease = psql("SELECT lease_id FROM pggcl.try_acquire('{db}')", user).strip()
    assert psql("SELECT active_slots FROM pggcl.limits", user).strip() == "1"
    assert psql(f"SELECT pggcl.release('{lease}')", user).strip() == "t"
    take = "SELECT pggcl.take('db', 1, s.session_id, 'me', gen_random_uuid())"
    assert psql(f"{take} FROM pggcl.open_session() s", user).strip() == "t"
    for forbidden in (
        "SELECT pggcl.create_limit('x', 1)",
        "SELECT pggcl.update_limit('db', 5)",
        "SELECT pggcl.delete_limit('db')",
        "SELECT * FROM pggcl.limit_state",
        "SELECT pggcl._grant('{1}', now())",
    ):
        with pytest.raises(PsqlError) as raised:
            psql(forbidden, user)
        assert "permission denied" in str(raised.value), forbidden


def test_admin_role_manages_limits(
    pggcl_dsn: str, login_as: Callable[[str], str], psql: Psql
) -> None:
    admin = login_as("pggcl_admin")
    psql("SELECT pggcl.create_limit('db', 2)", admin)
    psql("SELECT pggcl.update_limit('db', 3)", admin)
    assert psql('SELECT "limit" FROM pggcl.limits', admin).strip() == "3"
    assert psql("SELECT granted FROM pggcl.try_acquire('{db}')", admin).strip() == "t"
    assert psql("SELECT pggcl.delete_limit('db')", admin).strip() == "t"


def test_a_psql_session_waits_and_is_told_by_notification(pggcl_dsn: str, psql: Psql) -> None:
    """The documented protocol, in psql alone: the release comes from another psql, and the
    waiting psql sees the grant notification before its next statement."""
    psql("SELECT pggcl.create_limit('db', 1)", pggcl_dsn)
    held = psql(
        "SELECT lease_id FROM pggcl.try_acquire('{db}', ttl_seconds => 60)", pggcl_dsn
    ).strip()
    script = f"""
SELECT session_id AS sid, channel FROM pggcl.open_session() \\gset
LISTEN :"channel";
SELECT waiter_id, lease_id FROM pggcl.acquire('{{db}}') \\gset
\\! psql -X -q -At -d "{pggcl_dsn}" -c "SELECT pggcl.release('{held}')" > /dev/null
SELECT 'granted to ' || lease_id FROM pggcl.holders WHERE lease_id = :'lease_id';
SELECT 'waiter ' || :waiter_id;
"""
    out = psql(script, pggcl_dsn)
    assert 'Asynchronous notification "pggcl_' in out
    waiter = out.strip().splitlines()[-1].removeprefix("waiter ")
    assert f'with payload "g:{waiter}"' in out
    assert "granted to " in out


def test_everything_public_is_security_definer_with_a_pinned_search_path(pggcl_dsn: str) -> None:
    with psycopg.connect(pggcl_dsn) as conn:
        rows: list[Any] = conn.execute(
            """SELECT p.proname, p.prosecdef, p.proconfig
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname = 'pggcl' AND p.proname NOT LIKE '\\_%'"""
        ).fetchall()
    assert len(rows) >= 13
    for name, secdef, config in rows:
        assert secdef, name
        assert "search_path=pg_catalog, pg_temp" in config, name
