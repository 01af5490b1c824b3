"""Managing limits through the SQL API: create, update, delete and the limits view."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.sql.helpers import limit, one, try_acquire, value

Conn = psycopg.Connection[Any]


def test_create_returns_the_row(db: Conn) -> None:
    row = one(db, "SELECT * FROM pggcl.create_limit('database', 5, 1.5, false)")
    assert row["name"] == "database"
    assert row["limit"] == 5
    assert row["slot_decay_per_second"] == 1.5
    assert row["active"] is False
    assert row["active_slots"] == 0
    assert row["waiting"] == 0
    assert {"created", "updated"} <= row.keys()


def test_create_defaults_to_active_without_decay(db: Conn) -> None:
    row = one(db, "SELECT * FROM pggcl.create_limit('db', 2)")
    assert row["active"] is True
    assert row["slot_decay_per_second"] == 0


def test_duplicate_name_says_it_exists(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT pggcl.create_limit('db', 3)")
    assert raised.value.sqlstate == "GC002"
    assert "'db' already exists" in str(raised.value)
    assert limit(db, "db")["limit"] == 2


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("", "must not be empty"),
        ("x" * 256, "at most 255"),
        ("a/b", "must not contain"),
        ("50%", "must not contain"),
        ("a&b", "must not contain"),
        ("a>b", "must not contain"),
        ("a<b", "must not contain"),
    ],
)
def test_bad_names_are_refused_and_nothing_is_created(db: Conn, name: str, complaint: str) -> None:
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT pggcl.create_limit(%s, 1)", (name,))
    assert raised.value.sqlstate == "GC003"
    assert complaint in str(raised.value)
    assert value(db, "SELECT count(*) FROM pggcl.limits") == 0


@pytest.mark.parametrize("name", ["x" * 255, "données-ü-日本", "with space", "a.b:c-d_e"])
def test_other_names_are_fine(db: Conn, name: str) -> None:
    assert one(db, "SELECT * FROM pggcl.create_limit(%s, 1)", name)["name"] == name


@pytest.mark.parametrize(
    ("limit_value", "decay", "complaint"),
    [
        (-1, 0.0, "invalid limit"),
        (1, -0.5, "invalid slot_decay_per_second"),
        (1, float("inf"), "invalid slot_decay_per_second"),
        (1, float("nan"), "invalid slot_decay_per_second"),
        (None, 0.0, "invalid limit"),
    ],
)
def test_bad_values_are_refused(
    db: Conn, limit_value: int | None, decay: float, complaint: str
) -> None:
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT pggcl.create_limit('db', %s, %s)", (limit_value, decay))
    assert raised.value.sqlstate == "GC003"
    assert complaint in str(raised.value)
    assert "'db'" in str(raised.value)
    assert value(db, "SELECT count(*) FROM pggcl.limits") == 0


def test_update_changes_only_what_is_given(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2, 0.5, true)")
    row = one(db, "SELECT * FROM pggcl.update_limit('db', \"limit\" => 7)")
    assert (row["limit"], row["slot_decay_per_second"], row["active"]) == (7, 0.5, True)
    row = one(db, "SELECT * FROM pggcl.update_limit('db', active => false)")
    assert (row["limit"], row["slot_decay_per_second"], row["active"]) == (7, 0.5, False)
    row = one(db, "SELECT * FROM pggcl.update_limit('db', slot_decay_per_second => 2)")
    assert (row["limit"], row["slot_decay_per_second"], row["active"]) == (7, 2.0, False)
    assert row["updated"] > row["created"]


def test_update_of_a_missing_limit_says_so(db: Conn) -> None:
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT pggcl.update_limit('nope', 3)")
    assert raised.value.sqlstate == "GC001"
    assert "'nope' does not exist" in str(raised.value)


def test_update_refuses_bad_values_and_changes_nothing(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT pggcl.update_limit('db', -3)")
    assert raised.value.sqlstate == "GC003"
    assert limit(db, "db")["limit"] == 2


def test_rename(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('old', 2)")
    db.execute("SELECT pggcl.create_limit('taken', 2)")
    assert one(db, "SELECT * FROM pggcl.update_limit('old', new_name => 'new')")["name"] == "new"
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT pggcl.update_limit('new', new_name => 'taken')")
    assert raised.value.sqlstate == "GC002"
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT pggcl.update_limit('new', new_name => 'a/b')")
    assert raised.value.sqlstate == "GC003"


def test_delete(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    lease = try_acquire(db, ["db"])["lease_id"]
    assert value(db, "SELECT pggcl.delete_limit('db')") is True
    assert value(db, "SELECT pggcl.delete_limit('db')") is False
    assert value(db, "SELECT count(*) FROM pggcl.holders") == 0
    assert value(db, "SELECT pggcl.release(%s)", lease) is False


def test_active_slots_is_occupancy_now(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('db', 10, 1000)")
    try_acquire(db, ["db"], 2)
    try_acquire(db, ["db"], 3, "rate_limit")
    row = limit(db, "db")
    assert row["held_slots"] == 2
    assert 0 <= row["decaying_slots"] < 3
    assert row["active_slots"] == pytest.approx(row["held_slots"] + row["decaying_slots"])
    # The bucket drains at 1000 slots/s: one more statement later it is empty, with no write.
    db.execute("SELECT pg_sleep(0.01)")
    assert limit(db, "db")["active_slots"] == 2


def test_list_is_not_capped(db: Conn) -> None:
    db.execute("SELECT pggcl.create_limit('l' || i, 1) FROM generate_series(1, 250) i")
    assert value(db, "SELECT count(*) FROM pggcl.limits") == 250
