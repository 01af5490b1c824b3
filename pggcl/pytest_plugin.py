"""pytest fixtures giving each test a fresh database with pggcl installed.

Registered through the `pytest11` entry point, so installing pggcl is enough:

    def test_my_code(pggcl_dsn: str) -> None:
        client = pggcl.Client(pggcl_dsn)

The server is found in this order: the env var PGGCL_TEST_DSN (a superuser DSN of a
running server; databases are created there and dropped afterwards); local server
binaries (one TempPostgres per test run); testcontainers, when installed and a Docker
engine answers. The schema is installed once into a template database; each test gets
`CREATE DATABASE ... TEMPLATE` of it, dropped `WITH (FORCE)` after the test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from pggcl import schema
from pggcl.testing import (
    PostgresNotFound,
    TempPostgres,
    create_database,
    create_login_role,
    drop_database,
    drop_role,
    psql,
    random_database_name,
    temporary_database,
    with_user,
)

ENV_DSN = "PGGCL_TEST_DSN"


def _docker_answers() -> bool:
    try:
        import docker  # comes with testcontainers

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def _testcontainers_dsn() -> Iterator[str] | None:
    try:
        from testcontainers.postgres import PostgresContainer
    except ImportError:
        return None
    if not _docker_answers():
        return None

    def run() -> Iterator[str]:
        with PostgresContainer("postgres:16", driver=None) as pg:
            yield pg.get_connection_url()

    return run()


@pytest.fixture(scope="session")
def pggcl_server_dsn() -> Iterator[str]:
    """Superuser DSN of a PostgreSQL server for this test run (see module docstring)."""
    if env := os.environ.get(ENV_DSN):
        yield env
        return
    try:
        server = TempPostgres()
    except PostgresNotFound as local_error:
        containers = _testcontainers_dsn()
        if containers is None:
            pytest.fail(f"no PostgreSQL for the tests: {local_error}", pytrace=False)
        yield from containers
        return
    with server:
        yield server.dsn


@pytest.fixture(scope="session")
def pggcl_template(pggcl_server_dsn: str) -> Iterator[str]:
    """Name of a template database with pggcl installed by the alembic chain."""
    name = random_database_name("pggcl_template_")
    dsn = create_database(pggcl_server_dsn, name)
    try:
        schema.upgrade(dsn)
        psql(f'ALTER DATABASE "{name}" IS_TEMPLATE true', pggcl_server_dsn)
        yield name
    finally:
        drop_database(pggcl_server_dsn, name)


@pytest.fixture
def pggcl_dsn(pggcl_server_dsn: str, pggcl_template: str) -> Iterator[str]:
    """DSN of a fresh database, copied from the template, for this test only."""
    with temporary_database(pggcl_server_dsn, "t_", template=pggcl_template) as dsn:
        yield dsn


@pytest.fixture
def empty_dsn(pggcl_server_dsn: str) -> Iterator[str]:
    """DSN of a fresh database without pggcl, for this test only."""
    with temporary_database(pggcl_server_dsn, "t_") as dsn:
        yield dsn


@pytest.fixture(name="psql", scope="session")
def psql_fixture() -> Callable[..., str]:
    """`psql(sql, dsn, *args, check=True) -> stdout`: see pggcl.testing.psql."""
    return psql


@pytest.fixture
def pggcl_role_dsn(pggcl_dsn: str) -> Iterator[Callable[[str], str]]:
    """`make(member_of) -> dsn`: a DSN of `pggcl_dsn`'s database that logs in as a new role,
    a member of `member_of` (`pggcl_user` or `pggcl_admin`); the roles go after the test."""
    made: list[str] = []

    def make(member_of: str) -> str:
        made.append(create_login_role(pggcl_dsn, member_of))
        return with_user(pggcl_dsn, made[-1])

    yield make
    for name in made:
        drop_role(pggcl_dsn, name)
