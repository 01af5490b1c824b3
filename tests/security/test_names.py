"""Names (issue #13, point 3): printable characters only, enforced in the engine (a tenant
names limits too: a request naming a missing limit creates it), kept exactly as given (leading
and trailing spaces included) by the engine, the Python client and the CLI; whole numbers of
slots only."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pggcl
from tests.security.conftest import Cast
from tests.security.helpers import Connect, RawSession, attempt, describe, rows


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"issue #13: {reason}")


UNPRINTABLE = {
    "newline": ["a\nb", "trailing\n", "a\rb"],
    "control": ["a\tb", "\x1b[2J\x1b[31mred", "a\x07b", "a\x7fb", "a\x85b"],
    "bidi": ["a\u202eb", "\u2066x\u2069", "a\u200fb"],
}


def test_unprintable_names_are_refused(cast: Cast, connect: Connect) -> None:
    manager = connect(cast.manager.dsn)
    tenant = connect(cast.tenant.dsn)
    RawSession(tenant)
    accepted = []
    for name in [n for names in UNPRINTABLE.values() for n in names]:
        for who, conn, query in (
            ("manager", manager, "SELECT pggcl.create_limit(%s, 1)"),
            (
                "tenant",
                tenant,
                "SELECT granted FROM pggcl.try_acquire(ARRAY[%s], ttl_seconds => 1)",
            ),
            ("tenant", tenant, "SELECT pggcl.take(%s, 1, 1, 'h', gen_random_uuid())"),
        ):
            result, error = attempt(conn, query, name)
            # take() answers false, changing nothing, for anything it does not handle.
            if error is None:
                if result is not False:
                    accepted.append((who, name))
            else:
                assert error.sqlstate == "GC003", (name, describe(error))
    assert rows(connect(cast.admin.dsn), "SELECT name FROM pggcl.limit_state") == []
    assert accepted == []


def refused_as_validation_error(call: Callable[[], object]) -> None:
    try:
        call()
    except pggcl.PggclError as error:
        assert isinstance(error, pggcl.ValidationError), repr(error)
    else:
        raise AssertionError("accepted")


def test_a_nul_in_a_name_is_a_validation_error_in_the_client(cast: Cast) -> None:
    """NUL cannot reach the engine (PostgreSQL text has none); the client must say so as a
    ValidationError, like any other bad name, before it sends anything."""
    with pggcl.Client(cast.manager.dsn) as client:
        refused_as_validation_error(lambda: client.create_limit("a\x00b", 1))

        def hold() -> None:
            with client.concurrency("a\x00b", strict=True):
                pass

        refused_as_validation_error(hold)


def test_spaces_are_kept_exactly_by_the_engine(cast: Cast, connect: Connect) -> None:
    manager = connect(cast.manager.dsn)
    tenant = connect(cast.tenant.dsn)
    names = [" lead", "trail ", "  both  ", "\u00a0nbsp"]
    for name in names:
        manager.execute("SELECT pggcl.create_limit(%s, 1)", (name,))
        got = tenant.execute(
            "SELECT granted FROM pggcl.try_acquire(ARRAY[%s], strict => true, ttl_seconds => 5)",
            (name,),
        ).fetchone()
        assert got == (True,), name
        assert rows(tenant, "SELECT * FROM pggcl.limits WHERE name = %s", name.strip()) == []
    shown = [r["name"] for r in rows(tenant, "SELECT name FROM pggcl.limits ORDER BY name")]
    assert shown == sorted(names)


def test_spaces_are_kept_exactly_by_the_client(cast: Cast) -> None:
    with pggcl.Client(cast.manager.dsn) as client:
        client.create_limit(" lead ", 1)
        assert client.read_limit(" lead ").name == " lead "
        with client.concurrency(" lead ", strict=True):
            assert [h.name for h in client.holders()] == [" lead "]


def _pggcl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "pggcl"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_spaces_are_kept_exactly_by_pggcl_run(cast: Cast, connect: Connect) -> None:
    connect(cast.admin.dsn).execute("SELECT pggcl.create_limit(' lead', 1)")
    done = _pggcl("--dsn", cast.tenant.dsn, "run", " lead", "--strict", "--", "true")
    assert done.returncode == 0, done.stderr


def test_a_fractional_limit_is_refused_by_the_client(cast: Cast, connect: Connect) -> None:
    fractional: Any = 1.5
    with pggcl.Client(cast.manager.dsn) as client:
        refused_as_validation_error(lambda: client.create_limit("x", limit=fractional))
        client.create_limit("y", limit=1)
        refused_as_validation_error(lambda: client.update_limit("y", limit=fractional))
    assert rows(connect(cast.admin.dsn), 'SELECT name, "limit" FROM pggcl.limit_state') == [
        {"name": "y", "limit": 1}
    ]


FRACTIONAL = (
    "SELECT pggcl.create_limit('x', 1.5)",
    "SELECT pggcl.create_limit('x', 1.5::float8)",
    "SELECT pggcl.create_limit('x', '1.5')",
    "SELECT pggcl.update_limit('x', 1.5)",
)


def test_a_fractional_limit_is_never_rounded_in_sql(cast: Cast, connect: Connect) -> None:
    """The SQL parameter is an integer: PostgreSQL finds no function (42883) or refuses the
    text (22P02); what must not happen is a limit of 2."""
    manager = connect(cast.manager.dsn)
    for query in FRACTIONAL:
        _, error = attempt(manager, query)
        assert error is not None, query
    admin = connect(cast.admin.dsn)
    assert rows(admin, 'SELECT "limit" FROM pggcl.limit_state WHERE "limit" = 2') == []


def test_a_two_dimensional_names_array_reports_the_right_thing(
    cast: Cast, connect: Connect
) -> None:
    connect(cast.admin.dsn).execute("SELECT pggcl.create_limit('base', 2)")
    tenant = connect(cast.tenant.dsn)
    RawSession(tenant)
    for query in (
        "SELECT granted FROM pggcl.acquire('{{base}}', strict => true, wait => false)",
        "SELECT granted FROM pggcl.try_acquire('{{base}}', strict => true)",
    ):
        result, error = attempt(tenant, query)
        if error is not None:
            # Refusing a multi-dimensional array is fine; saying 'base' is missing is not.
            assert error.sqlstate == "GC003", describe(error)
        else:
            assert result is True
    _, error = attempt(tenant, "SELECT * FROM pggcl.acquire('{{nobase}}', strict => true)")
    assert error is not None and error.sqlstate in ("GC003", "GC006"), error
    if error.sqlstate == "GC006":
        assert "nobase" in str(error)


def test_a_name_too_long_is_refused_with_gc003_by_a_tenant(cast: Cast, connect: Connect) -> None:
    tenant = connect(cast.tenant.dsn)
    RawSession(tenant)
    _, error = attempt(tenant, "SELECT * FROM pggcl.acquire(ARRAY[repeat('x', 256)])")
    assert error is not None and error.sqlstate == "GC003"


HOSTILE_HOLDER = "job\x1b]52;c;cHduZWQ=\x07\x1b[2J\nlease-id  x  99  root  (a fake row)"


def test_what_a_tenant_writes_reaches_no_terminal_raw(cast: Cast, connect: Connect) -> None:
    """The holder is free text from any pggcl_user; the CLI prints it to whoever runs
    `pggcl holders`. Either the engine refuses control characters there too, or the CLI shows
    them escaped."""
    connect(cast.admin.dsn).execute("SELECT pggcl.create_limit('x', 2)")
    tenant = RawSession(connect(cast.tenant.dsn))
    _, error = attempt(
        tenant.conn,
        "SELECT granted FROM pggcl.acquire('{x}', session_id => %s, holder => %s)",
        tenant.session_id,
        HOSTILE_HOLDER,
    )
    if error is not None:
        assert error.sqlstate == "GC003", describe(error)
    for args in (["holders"], ["inspect", "x"], ["holders", "--output", "json"]):
        done = _pggcl("--dsn", cast.admin.dsn, *args)
        assert done.returncode == 0, done.stderr
        assert "\x1b" not in done.stdout and "\x07" not in done.stdout, (args, done.stdout)
        fake_rows = [
            line for line in done.stdout.splitlines() if line.lstrip().startswith("lease-id")
        ]
        assert fake_rows == [], (args, done.stdout)
