"""The test harness itself: per-test databases with the schema, and psql access."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from pggcl.testing import PsqlError

_seen: list[str] = []


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_its_own_database_with_the_schema(pggcl_dsn: str, run: int) -> None:
    with psycopg.connect(pggcl_dsn) as conn:
        row = conn.execute(
            "SELECT current_database(), to_regnamespace('pggcl') IS NOT NULL"
        ).fetchone()
    assert row is not None
    dbname, has_schema = row
    assert has_schema
    assert dbname not in _seen
    _seen.append(dbname)


def test_database_is_dropped_after_the_test(pggcl_server_dsn: str) -> None:
    if len(_seen) != 2:
        pytest.skip("needs the parametrized test above to run first")
    with psycopg.connect(pggcl_server_dsn) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = ANY(%s)", (_seen,)
        ).fetchone()
    assert left == (0,)


def test_psql_reaches_the_test_database(pggcl_dsn: str, psql: Callable[..., str]) -> None:
    out = psql("SELECT 1 + 1; SELECT nspname FROM pg_namespace WHERE nspname = 'pggcl'", pggcl_dsn)
    assert out.splitlines() == ["2", "pggcl"]


def test_psql_raises_with_the_server_message(pggcl_dsn: str, psql: Callable[..., str]) -> None:
    with pytest.raises(PsqlError, match="division by zero"):
        psql("SELECT 1 / 0", pggcl_dsn)


def test_empty_database_has_no_schema(empty_dsn: str, psql: Callable[..., str]) -> None:
    assert psql("SELECT to_regnamespace('pggcl') IS NULL", empty_dsn).strip() == "t"


async def test_async_tests_run_and_asyncpg_connects(pggcl_dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pggcl_dsn)
    try:
        assert await conn.fetchval("SELECT to_regnamespace('pggcl') IS NOT NULL") is True
    finally:
        await conn.close()
