"""Every invalid-argument error (GC003) names its parameter in the COLUMN diagnostic field, so a
client can show it next to the right form field without reading the message."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

# (call, arguments, the parameter named in COLUMN, how the message starts)
CASES: list[tuple[str, tuple[Any, ...], str, str]] = [
    ("pggcl.create_limit(%s, %s)", ("", 1), "name", "invalid limit name"),
    ("pggcl.create_limit(%s, %s)", ("a/b", 1), "name", "invalid limit name 'a/b'"),
    ("pggcl.create_limit(%s, %s)", ("x" * 256, 1), "name", "invalid limit name"),
    ("pggcl.create_limit(%s, %s)", ("x", None), "limit", "invalid limit for 'x': it is required"),
    ("pggcl.create_limit(%s, %s)", ("x", -1), "limit", "invalid limit for 'x'"),
    ("pggcl.create_limit(%s, %s, %s)", ("x", 1, -0.5), "slot_decay_per_second", "invalid slot"),
    ("pggcl.create_limit(%s, %s, %s)", ("x", 1, float("nan")), "slot_decay_per_second", "invalid"),
    ("pggcl.create_limit(%s, %s, %s)", ("x", 1, None), "slot_decay_per_second", "invalid"),
    ("pggcl.update_limit(%s)", ("a>b",), "name", "invalid limit name"),
    ("pggcl.update_limit(%s, %s)", ("db", -3), "limit", "invalid limit for 'db'"),
    (
        "pggcl.update_limit(%s, slot_decay_per_second => %s)",
        ("db", float("inf")),
        "slot_decay_per_second",
        "invalid slot_decay_per_second",
    ),
    ("pggcl.update_limit(%s, new_name => %s)", ("db", "a&b"), "new_name", "invalid limit name"),
    ("pggcl.acquire(%s, %s)", (["db"], 0), "occupy", "invalid occupy: 0"),
    ("pggcl.acquire(%s, %s)", (["db"], None), "occupy", "invalid occupy: NULL"),
    ("pggcl.acquire(%s, 1, %s)", (["db"], "exclusive"), "mode", "invalid mode: 'exclusive'"),
    ("pggcl.acquire(%s, ttl_seconds => %s)", (["db"], 0.0), "ttl_seconds", "invalid ttl_seconds"),
    ("pggcl.acquire(%s, ttl_seconds => %s)", (["db"], float("inf")), "ttl_seconds", "invalid"),
    ("pggcl.acquire(%s)", (None,), "names", "invalid names"),
    ("pggcl.acquire(%s)", (["db", "a%b"],), "names", "invalid limit name 'a%b'"),
    ("pggcl.try_acquire(%s)", ([""],), "names", "invalid limit name"),
    ("pggcl.try_acquire(%s, %s)", (["db"], -1), "occupy", "invalid occupy"),
    ("pggcl.renew(gen_random_uuid(), %s)", (None,), "ttl_seconds", "invalid ttl_seconds"),
    ("pggcl.renew(gen_random_uuid(), %s)", (-1.0,), "ttl_seconds", "invalid ttl_seconds"),
    ("pggcl.open_session(%s)", (-1.0,), "grace_seconds", "invalid grace_seconds"),
    ("pggcl.open_session(%s)", (float("nan"),), "grace_seconds", "invalid grace_seconds"),
]


@pytest.mark.parametrize(("call", "args", "column", "message"), CASES)
def test_invalid_argument_names_its_parameter(
    db: psycopg.Connection[Any], call: str, args: tuple[Any, ...], column: str, message: str
) -> None:
    db.execute("SELECT pggcl.create_limit('db', 2)")
    with pytest.raises(psycopg.Error) as raised:
        db.execute(f"SELECT * FROM {call}", args)
    assert raised.value.sqlstate == "GC003"
    assert raised.value.diag.column_name == column
    assert (raised.value.diag.message_primary or "").startswith(message)


def test_other_errors_name_no_parameter(db: psycopg.Connection[Any]) -> None:
    db.execute("SELECT pggcl.create_limit('db', 1)")
    with pytest.raises(psycopg.Error) as raised:
        db.execute("SELECT pggcl.create_limit('db', 1)")
    assert raised.value.sqlstate == "GC002"
    assert raised.value.diag.column_name is None
