"""The alembic chain: reversible, repeatable, and equal to a fresh install."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from pggcl import schema
from tests.catalog import snapshot


def _has_schema(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT to_regnamespace('pggcl') IS NOT NULL").fetchone()
    return bool(row and row[0])


def test_upgrade_downgrade_upgrade(empty_dsn: str) -> None:
    assert schema.current(empty_dsn) is None
    schema.upgrade(empty_dsn)
    assert _has_schema(empty_dsn)
    assert schema.current(empty_dsn) is not None

    schema.downgrade(empty_dsn, "base")
    assert not _has_schema(empty_dsn)
    assert schema.current(empty_dsn) is None

    schema.upgrade(empty_dsn)
    assert _has_schema(empty_dsn)


def test_upgrade_twice_is_a_no_op(empty_dsn: str) -> None:
    schema.upgrade(empty_dsn)
    before = snapshot(empty_dsn)
    schema.upgrade(empty_dsn)
    assert snapshot(empty_dsn) == before


def test_fresh_install_equals_migration_chain(
    empty_dsn: str, pggcl_dsn: str, psql: Callable[..., str]
) -> None:
    # pggcl_dsn was built by the alembic chain (the template); empty_dsn gets the script.
    psql(schema.install_sql(), empty_dsn, "--single-transaction")
    fresh, migrated = snapshot(empty_dsn), snapshot(pggcl_dsn)
    assert fresh["schema"] and fresh["relations"], "the snapshot saw nothing: check the queries"
    assert fresh == migrated
    # The script records the revision: alembic sees the same state, and upgrading is a no-op.
    assert schema.current(empty_dsn) == schema.current(pggcl_dsn) is not None
    schema.upgrade(empty_dsn)
    assert snapshot(empty_dsn) == migrated


def test_schema_sql_is_every_file_in_order() -> None:
    text = schema.schema_sql()
    names = [p.name for p in schema.sql_files()]
    assert names == sorted(names)
    positions = [text.index(f"-- sql/{name}") for name in names]
    assert positions == sorted(positions)
