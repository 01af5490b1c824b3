"""Fixtures and helpers of the client tests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import psycopg
import pytest

import pggcl
import pggcl.sync


@pytest.fixture(autouse=True)
def _close_module_clients() -> Iterator[None]:
    """Each test has its own database: do not keep module-level clients of dropped ones."""
    yield
    pggcl.sync._close_all()


@pytest.fixture
def client(pggcl_dsn: str) -> Iterator[pggcl.Client]:
    with pggcl.Client(pggcl_dsn) as c:
        yield c


@pytest.fixture
async def aclient(pggcl_dsn: str) -> AsyncIterator[pggcl.AsyncClient]:
    async with pggcl.AsyncClient(pggcl_dsn) as c:
        yield c


@pytest.fixture
def env_dsn(pggcl_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """PGGCL_DSN set for the module-level functions."""
    monkeypatch.setenv("PGGCL_DSN", pggcl_dsn)
    return pggcl_dsn


def max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end before a start at the same instant)."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll the database state until ``predicate`` holds (test setup only)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.005)


def sql(dsn: str, query: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


def terminate_session_connection(dsn: str, session_id: int) -> None:
    """Kill the backend of a session's connection, as a network failure would."""
    rows = sql(
        dsn,
        "SELECT pg_terminate_backend(backend_pid) FROM pggcl.sessions WHERE id = %s",
        session_id,
    )
    assert rows == [(True,)]
