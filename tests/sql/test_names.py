"""Limit names: printable characters only, kept exactly as given (issue #13, point 3)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.sql.helpers import one, value

UNPRINTABLE = [
    "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9f",
    "\u061c", "\u200e", "\u200f",
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
    "\u2066", "\u2067", "\u2068", "\u2069",
]  # fmt: skip


@pytest.fixture
def tenant(pggcl_role_dsn: Callable[[str], str]) -> psycopg.Connection[Any]:
    return psycopg.connect(pggcl_role_dsn("pggcl_user"), autocommit=True)


@pytest.mark.parametrize("char", UNPRINTABLE, ids=[f"U+{ord(c):04X}" for c in UNPRINTABLE])
def test_control_and_bidi_characters_are_refused(
    db: psycopg.Connection[Any], tenant: psycopg.Connection[Any], char: str
) -> None:
    name = f"ab{char}cd"
    for conn, query, column in (
        (db, "SELECT pggcl.create_limit(%s, 1)", "name"),
        (db, "SELECT pggcl.update_limit('ok', new_name => %s)", "new_name"),
        (tenant, "SELECT * FROM pggcl.try_acquire(ARRAY[%s])", "names"),
        (tenant, "SELECT * FROM pggcl.acquire(ARRAY['ok', %s])", "names"),
    ):
        value(db, "SELECT pggcl.delete_limit('ok')")
        db.execute("SELECT pggcl.create_limit('ok', 1)")
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(query, (name,))
        error = raised.value
        assert error.sqlstate == "GC003", query
        assert error.diag.column_name == column
        message = error.diag.message_primary or ""
        assert message == (
            f"invalid limit name: character 3 is U+{ord(char):04X}, a control or bidirectional"
            " formatting character; names must be printable"
        )
        assert char not in message
    assert value(db, "SELECT count(*) FROM pggcl.limits") == 1


def test_a_nul_never_reaches_the_engine(db: psycopg.Connection[Any]) -> None:
    """PostgreSQL's text cannot hold NUL; the driver refuses it before sending (the Python
    client turns this into a ValidationError)."""
    with pytest.raises(psycopg.DataError, match="NUL"):
        db.execute("SELECT pggcl.create_limit(%s, 1)", ("a\x00b",))
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT pggcl.create_limit(chr(0), 1)")
    assert raised.value.sqlstate == "54000"  # "null character not permitted"


@pytest.mark.parametrize("name", [" lead", "trail ", "  both  ", "in side", "\u00a0nbsp"])
def test_spaces_are_kept_exactly(
    db: psycopg.Connection[Any], tenant: psycopg.Connection[Any], name: str
) -> None:
    db.execute("SELECT pggcl.create_limit(%s, 1)", (name,))
    assert value(db, "SELECT name FROM pggcl.limits") == name
    got = one(tenant, "SELECT * FROM pggcl.acquire(ARRAY[%s], ttl_seconds => 5)", name)
    assert got["granted"] is True and got["created_limits"] is None
    stripped = name.strip()
    if stripped == name:
        return
    got = one(tenant, "SELECT * FROM pggcl.acquire(ARRAY[%s], wait => false)", stripped)
    assert got["created_limits"] == [stripped]  # another limit: names compare as given


def test_no_unicode_normalisation(db: psycopg.Connection[Any]) -> None:
    composed = "caf\u00e9"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    db.execute("SELECT pggcl.create_limit(%s, 1)", (composed,))
    db.execute("SELECT pggcl.create_limit(%s, 2)", (decomposed,))
    names = [r[0] for r in db.execute('SELECT name FROM pggcl.limits ORDER BY "limit"')]
    assert names == [composed, decomposed]


@pytest.mark.parametrize("name", ["émoji 🙂", "日本語", "a-b_c.d:e", "ﬁ ligature", "x" * 255])
def test_printable_names_are_accepted(db: psycopg.Connection[Any], name: str) -> None:
    db.execute("SELECT pggcl.create_limit(%s, 1)", (name,))
    assert one(db, "SELECT * FROM pggcl.try_acquire(ARRAY[%s])", name)["granted"] is True


def test_a_two_dimensional_names_array_names_what_it_holds(db: psycopg.Connection[Any]) -> None:
    db.execute("SELECT pggcl.create_limit('base', 1)")
    got = one(db, "SELECT * FROM pggcl.acquire('{{base}}', strict => true, wait => false)")
    assert got["granted"] is True and got["created_limits"] is None
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT * FROM pggcl.try_acquire('{{nope},{base}}', strict => true)")
    assert raised.value.sqlstate == "GC006"
    assert raised.value.diag.message_primary == "no such limit: 'nope'"
