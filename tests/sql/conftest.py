"""Fixtures for the engine tests: plain psycopg connections, no pggcl Python client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

Connect = Callable[[], psycopg.Connection[Any]]


@pytest.fixture
def connect(pggcl_dsn: str) -> Iterator[Connect]:
    """Open autocommit connections to the test database; all are closed after the test."""
    opened: list[psycopg.Connection[Any]] = []

    def open_one() -> psycopg.Connection[Any]:
        conn = psycopg.connect(pggcl_dsn, autocommit=True)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        conn.close()


@pytest.fixture
def db(connect: Connect) -> psycopg.Connection[Any]:
    return connect()


BOOKKEEPING = """
SELECT l.name, l.held, l.queued,
       (SELECT coalesce(sum(x.occupy), 0) FROM pggcl.leases x WHERE x.limit_id = l.id) AS leased,
       (SELECT count(*) FROM pggcl.waiters w WHERE w.limit_id = l.id) AS waiting
FROM pggcl.limit_state l
"""


def assert_bookkeeping(dsn: str) -> None:
    """Every limit's counters agree with the rows they count: `held` with its lease rows,
    `queued` with its waiter rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, held, queued, leased, waiting in conn.execute(BOOKKEEPING):
            assert (held, queued) == (leased, waiting), f"limit {name!r}: counters drifted"


@pytest.fixture(autouse=True)
def bookkeeping_holds(pggcl_dsn: str) -> Iterator[None]:
    yield
    assert_bookkeeping(pggcl_dsn)
