"""Helpers of the behaviour suite that are the same in both worlds (plain blocking code).

They live outside ``test_behaviour_async.py`` so that the generated twin imports them rather
than copies them, and so that their SQL and the holder script keep their layout.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.sql

from tests.client.conftest import sql

LOCK_WAITS = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock'
"""

# A holder in a process of its own, so that it can die the way processes die: it holds one
# slot of "db" (which must exist), says so, and waits. Its session has no grace period.
HOLDER = """
import sys
import pggcl

client = pggcl.Client(sys.argv[1], grace_seconds=0.0)
held = client.concurrency("db")
held.__enter__()
print("held", flush=True)
sys.stdin.read()
"""


@contextmanager
def row_locked(dsn: str, name: str) -> Iterator[None]:
    """Hold the row lock of limit ``name`` on a connection of our own: a client call that
    changes the limit then blocks, keeping its pool connection busy until the block ends."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT FROM pggcl.limit_state WHERE name = %s FOR UPDATE", (name,))
        yield
        conn.rollback()


def lock_waits(dsn: str) -> int:
    """How many statements of this database wait for a lock now."""
    ((n,),) = sql(dsn, LOCK_WAITS)
    assert isinstance(n, int)
    return n


def start_holder(dsn: str) -> subprocess.Popen[str]:
    """A process holding one slot of "db"; returns once it holds."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, dsn],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != "held\n":
        kill(proc)
        raise AssertionError(f"the holder process did not hold: {line!r}")
    return proc


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL: the process gets no chance to clean up."""
    proc.kill()
    proc.wait()


def terminate_pool_connections(dsn: str) -> int:
    """Kill the backends of this database that are no session's (the clients' pools), as a
    network failure or a server-side idle timeout would; how many."""
    rows = sql(dsn, POOL_BACKENDS_TERMINATED)
    assert all(ok for (ok,) in rows)
    return len(rows)


POOL_BACKENDS_TERMINATED = """
    SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend'
      AND pid <> pg_backend_pid() AND pid NOT IN (SELECT backend_pid FROM pggcl.sessions)
"""


def set_database_time_zone(dsn: str, zone: str) -> None:
    """The TimeZone of every new session of this database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        assert row is not None
        conn.execute(
            psycopg.sql.SQL("ALTER DATABASE {} SET TimeZone = {}").format(
                psycopg.sql.Identifier(row[0]), psycopg.sql.Literal(zone)
            )
        )


# Bad values for the client API (see test_a_bad_value_is_a_validation_error), each with the
# parameter its ValidationError names. Before both clients checked them the same way, they
# differed: past int32, sync raised ValidationError and async a bare PggclError (asyncpg's
# encoder); a limit of 1.5 made a limit of 2 in sync (float8 rounded by $2::integer) and of 1
# in async (truncated); NUL or a lone surrogate in a name gave a bare PggclError with or
# without sqlstate, or a UnicodeEncodeError.
BAD_VALUES: dict[str, str] = {
    "limit above int32": "limit",
    "fractional limit": "limit",
    "update to a limit above int32": "limit",
    "occupy above int32": "occupy",
    "NUL in a name": "name",
    "lone surrogate in a name": "name",
}


@contextmanager
def recorded_spans() -> Iterator[Any]:
    """OpenTelemetry's SDK as the global tracer provider for the block, with an in-memory
    exporter (yielded: its get_finished_spans()); the globals are put back after.
    (OpenTelemetry sets a provider once per process: this resets its private once-guard, as
    its own test helpers do.)"""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    saved = trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved
        provider.shutdown()
