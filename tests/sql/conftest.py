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
