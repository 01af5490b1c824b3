"""Fixtures of the security suite (issue #13): the roles an attack is about, each a login role
of the test's database, and plain autocommit connections as each of them.

- ``tenant`` and ``other``: login roles that are members of ``pggcl_user`` only;
- ``outsider``: a login role with no pggcl rights at all (it may still connect: PUBLIC has
  CONNECT on databases, and ``pg_notify`` is executable by PUBLIC);
- ``manager``: a member of ``pggcl_admin``;
- ``admin``: the superuser DSN of the test database (the installer, who owns the schema).

The test cluster uses trust authentication on 127.0.0.1 (pggcl.testing.TempPostgres), so a DSN
is the superuser's with the user name swapped. Roles are cluster-wide: they get random names
and are dropped after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pggcl.testing import drop_role, with_user
from tests.security.helpers import Connect


@dataclass(frozen=True)
class Role:
    name: str
    dsn: str


@dataclass(frozen=True)
class Cast:
    """Everyone a test needs, by the part they play."""

    admin: Role
    tenant: Role
    other: Role
    outsider: Role
    manager: Role


def _create_role(admin_dsn: str, prefix: str, member_of: str | None) -> Role:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        stmt = sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name))
        if member_of is not None:
            stmt += sql.SQL(" IN ROLE {}").format(sql.Identifier(member_of))
        conn.execute(stmt)
    return Role(name, with_user(admin_dsn, name))


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Open autocommit connections (to any DSN); all are closed after the test."""
    opened: list[psycopg.Connection[Any]] = []

    def open_one(dsn: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(dsn, autocommit=True)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        conn.close()


@pytest.fixture
def cast(pggcl_dsn: str, connect: Connect) -> Iterator[Cast]:
    made = [
        _create_role(pggcl_dsn, "tenant", "pggcl_user"),
        _create_role(pggcl_dsn, "other", "pggcl_user"),
        _create_role(pggcl_dsn, "outsider", None),
        _create_role(pggcl_dsn, "manager", "pggcl_admin"),
    ]
    with psycopg.connect(pggcl_dsn) as conn:
        admin_name = conn.info.user
    yield Cast(Role(admin_name, pggcl_dsn), *made)
    with psycopg.connect(pggcl_dsn, autocommit=True) as conn:
        # Whatever an attack made of a role (SUPERUSER included) goes with it.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
            ([r.name for r in made],),
        )
    for role in made:
        drop_role(pggcl_dsn, role.name)
