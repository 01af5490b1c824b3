"""Templates (issue #15, revision 0013): a limit name with `*` is a template; a request naming
a missing limit that matches it creates that limit active with the template's values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.sql.helpers import acquire, limit, one, open_session, release, try_acquire, value

Conn = psycopg.Connection[Any]


def create(db: Conn, name: str, slots: int, **kwargs: Any) -> dict[str, Any]:
    named = "".join(f", {k} => %({k})s" for k in kwargs)
    return one(
        db,
        f"SELECT * FROM pggcl.create_limit(%(name)s, %(limit)s{named})",
        {"name": name, "limit": slots, **kwargs},
    )


def template(db: Conn, name: str) -> dict[str, Any]:
    return one(db, "SELECT * FROM pggcl.templates WHERE name = %s", name)


def test_a_request_creates_an_active_instance_with_the_templates_values(db: Conn) -> None:
    made = create(db, "tenant:*", 2, slot_decay_per_second=0.5)
    assert (made["name"], made["limit"], made["template"]) == ("tenant:*", 2, None)
    assert value(db, "SELECT count(*) FROM pggcl.limits") == 0  # a template is no limit

    first = try_acquire(db, ["tenant:acme"], ttl_seconds=60)
    assert first["granted"]
    row = limit(db, "tenant:acme")
    assert (row["limit"], row["active"], row["slot_decay_per_second"]) == (2, True, 0.5)
    assert (row["template"], row["customized"], row["held_slots"]) == ("tenant:*", False, 1)
    assert try_acquire(db, ["tenant:acme"], ttl_seconds=60)["granted"]
    assert not try_acquire(db, ["tenant:acme"], ttl_seconds=60)["granted"]  # 2 of 2
    assert template(db, "tenant:*")["instances"] == 1


def test_created_limits_names_only_what_was_created_inactive(db: Conn) -> None:
    create(db, "tenant:*", 1)
    answer = try_acquire(db, ["tenant:a", "unmatched"], ttl_seconds=60)
    assert answer["granted"]
    assert one(db, "SELECT created_limits FROM pggcl.acquire(%s, wait => false)", ["x"]) == {
        "created_limits": ["x"]
    }
    assert limit(db, "unmatched")["active"] is False
    assert limit(db, "tenant:a")["active"] is True


def test_strict_raises_only_when_no_limit_and_no_template_matches(db: Conn) -> None:
    create(db, "tenant:*", 1)
    assert try_acquire(db, ["tenant:a"], strict=True, ttl_seconds=60)["granted"]
    with pytest.raises(psycopg.Error) as raised:
        try_acquire(db, ["tenant:b", "nothing"], strict=True, ttl_seconds=60)
    assert raised.value.sqlstate == "GC006"
    assert "'nothing'" in str(raised.value) and "tenant:b" not in str(raised.value)
    # Refused whole: the instance that matched was not created either.
    assert value(db, "SELECT count(*) FROM pggcl.limits WHERE name = 'tenant:b'") == 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tenant:acme", "tenant:*"),
        ("tenant:eu:acme", "tenant:eu:*"),  # more literal characters win
        ("tenant:eu:", "tenant:*"),  # `*` is one or more characters
        ("t_x", "t_*"),  # `_` is a character, not LIKE's wildcard
        ("tax", None),
        ("a*b", None),  # a name with `*` is a pattern, refused below
    ],
)
def test_the_most_specific_template_wins(db: Conn, name: str, expected: str | None) -> None:
    for pattern in ("tenant:*", "tenant:eu:*", "*:acme", "t_*"):
        create(db, pattern, 3)
    if "*" in name:
        with pytest.raises(psycopg.Error) as raised:
            try_acquire(db, [name], ttl_seconds=60)
        assert raised.value.sqlstate == "GC003"
        assert raised.value.diag.column_name == "names"
        return
    try_acquire(db, [name], ttl_seconds=60)
    assert limit(db, name)["template"] == expected


def test_a_tie_goes_to_the_pattern_that_sorts_first(db: Conn) -> None:
    create(db, "b:*", 1)
    create(db, "*:x", 1)  # as many literal characters (2)
    try_acquire(db, ["b:x"], ttl_seconds=60)
    assert limit(db, "b:x")["template"] == "*:x"  # '*:x' < 'b:*'


def test_changing_a_template_changes_its_instances_and_lets_waiters_in(
    db: Conn, connect: Callable[[], Conn]
) -> None:
    create(db, "tenant:*", 1)
    holder = connect()
    open_session(holder)
    held = acquire(holder, ["tenant:a"])
    assert held["granted"]
    waiter = connect()
    open_session(waiter)
    queued = acquire(waiter, ["tenant:a"])
    assert not queued["granted"]
    try_acquire(db, ["tenant:b"], ttl_seconds=60)
    value(db, "SELECT name FROM pggcl.update_limit('tenant:b', 5)")  # changed individually

    changed = one(db, "SELECT * FROM pggcl.update_limit('tenant:*', 2)")
    assert (changed["name"], changed["limit"]) == ("tenant:*", 2)
    assert limit(db, "tenant:a")["limit"] == 2
    assert limit(db, "tenant:a")["waiting"] == 0  # the raise let the waiter in
    assert value(db, "SELECT count(*) FROM pggcl.holders WHERE name = 'tenant:a'") == 2
    assert (limit(db, "tenant:b")["limit"], limit(db, "tenant:b")["customized"]) == (5, True)
    assert template(db, "tenant:*")["limit"] == 2
    release(holder, held["lease_id"])


def test_a_templates_own_errors(db: Conn) -> None:
    create(db, "tenant:*", 1)
    cases = [
        ("SELECT * FROM pggcl.create_limit('tenant:*', 1)", "GC002", None),
        ("SELECT * FROM pggcl.create_limit('q*', 1, idle_seconds => 0)", "GC003", "idle_seconds"),
        (
            "SELECT * FROM pggcl.create_limit('q*', 1, idle_seconds => 'NaN')",
            "GC003",
            "idle_seconds",
        ),
        (
            "SELECT * FROM pggcl.create_limit('plain', 1, idle_seconds => 5)",
            "GC003",
            "idle_seconds",
        ),
        ("SELECT * FROM pggcl.update_limit('nope:*', 2)", "GC001", None),
        ("SELECT * FROM pggcl.update_limit('tenant:*', new_name => 'x:*')", "GC003", "new_name"),
        ("SELECT * FROM pggcl.update_limit('tenant:*', -1)", "GC003", "limit"),
    ]
    for query, sqlstate, column in cases:
        with pytest.raises(psycopg.Error) as raised:
            db.execute(query)
        assert raised.value.sqlstate == sqlstate, query
        assert raised.value.diag.column_name == column, query
    assert template(db, "tenant:*")["limit"] == 1
    assert value(db, "SELECT count(*) FROM pggcl.templates") == 1


def test_a_limit_and_a_template_cannot_share_a_name(db: Conn) -> None:
    # A limit with `*` from before revision 0013 stays a plain limit, looked up first.
    db.execute("INSERT INTO pggcl.limit_state (name, \"limit\") VALUES ('old*', 1)")
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT * FROM pggcl.create_limit('old*', 1)")
    assert raised.value.sqlstate == "GC002"
    assert try_acquire(db, ["old*"], ttl_seconds=60)["granted"]


def test_deleting_a_template_keeps_its_instances_as_plain_limits(db: Conn) -> None:
    create(db, "tenant:*", 1)
    lease = try_acquire(db, ["tenant:a"], ttl_seconds=60)["lease_id"]
    assert value(db, "SELECT pggcl.delete_limit('tenant:*')") is True
    assert value(db, "SELECT pggcl.delete_limit('tenant:*')") is False
    row = limit(db, "tenant:a")
    assert (row["template"], row["held_slots"]) == (None, 1)
    assert release(db, lease)
    try_acquire(db, ["tenant:b"], ttl_seconds=60)
    assert limit(db, "tenant:b")["active"] is False  # no template any more


def test_idle_instances_go_away_and_busy_ones_stay(db: Conn) -> None:
    create(db, "tenant:*", 1, idle_seconds=0.05)
    lease = try_acquire(db, ["tenant:busy"], ttl_seconds=60)["lease_id"]
    for name in ("tenant:a", "tenant:b"):
        release(db, try_acquire(db, [name], ttl_seconds=60)["lease_id"])

    def sweep() -> list[str]:
        value(db, "SELECT pggcl.reclaim()")
        return [r[0] for r in db.execute("SELECT name FROM pggcl.limits ORDER BY name")]

    assert sweep() == ["tenant:a", "tenant:b", "tenant:busy"]  # first seen idle now
    db.execute("SELECT pg_sleep(0.06)")  # the idle time itself is what is tested
    # Used again in between: tenant:b's idle time starts afresh.
    release(db, try_acquire(db, ["tenant:b"], ttl_seconds=60)["lease_id"])
    assert sweep() == ["tenant:b", "tenant:busy"]
    db.execute("SELECT pg_sleep(0.06)")
    sweep()
    assert sweep() == ["tenant:busy"]
    assert template(db, "tenant:*")["instances"] == 1
    assert release(db, lease)
    # A name seen again after its instance went is created afresh from the template.
    assert try_acquire(db, ["tenant:a"], ttl_seconds=60)["granted"]
    assert limit(db, "tenant:a")["template"] == "tenant:*"


def test_creating_instances_sweeps_idle_ones_without_reclaim(db: Conn) -> None:
    create(db, "k:*", 1, idle_seconds=0.05)
    for i in range(6):
        release(db, try_acquire(db, [f"k:{i}"], ttl_seconds=60)["lease_id"])
    db.execute("SELECT pg_sleep(0.06)")
    for i in range(6, 30):  # each creation looks at a few old instances in turn
        release(db, try_acquire(db, [f"k:{i}"], ttl_seconds=60)["lease_id"])
    db.execute("SELECT pg_sleep(0.06)")
    for i in range(30, 40):
        release(db, try_acquire(db, [f"k:{i}"], ttl_seconds=60)["lease_id"])
    left = {r[0] for r in db.execute("SELECT name FROM pggcl.limits")}
    assert not {f"k:{i}" for i in range(6)} & left, left


def test_nested_quotas_each_tenant_and_all_together(db: Conn) -> None:
    # concurrency(["openai", f"openai:{tenant}"]): each tenant at most 2, all at most 3.
    create(db, "openai", 3)
    create(db, "openai:*", 2)
    got = [try_acquire(db, ["openai", "openai:a"], ttl_seconds=60)["granted"] for _ in range(3)]
    assert got == [True, True, False]  # a's own 2
    assert try_acquire(db, ["openai", "openai:b"], ttl_seconds=60)["granted"]  # 3 in all
    assert not try_acquire(db, ["openai", "openai:c"], ttl_seconds=60)["granted"]
    assert limit(db, "openai")["held_slots"] == 3
    assert limit(db, "openai:c")["held_slots"] == 0  # refused whole: nothing taken on c


def test_reading_templates_is_for_users_and_managing_them_for_admins(db: Conn) -> None:
    assert value(db, "SELECT has_table_privilege('pggcl_user', 'pggcl.templates', 'SELECT')")
    for table in ("pggcl.limit_templates", "pggcl.limit_instances"):
        assert not value(db, "SELECT has_table_privilege('pggcl_user', %s, 'SELECT')", table)
    signature = "pggcl.create_limit(text, integer, double precision, boolean, double precision)"
    assert value(db, "SELECT has_function_privilege('pggcl_admin', %s, 'EXECUTE')", signature)
    assert not value(db, "SELECT has_function_privilege('pggcl_user', %s, 'EXECUTE')", signature)
