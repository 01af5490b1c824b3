"""Worker processes for the stress tests: plain psycopg clients of the SQL API."""

from __future__ import annotations

import random
import time
from typing import Any

import psycopg


def _wait_for_grant(conn: psycopg.Connection[Any], session_id: int, row: tuple[Any, ...]) -> None:
    """Block until the request that pggcl.acquire answered with `row` is granted."""
    granted, lease_id, waiter_id, retry_after = row[:4]
    while not granted:
        timeout = min(retry_after if retry_after is not None else 2.0, 2.0)
        payloads = [n.payload for n in conn.notifies(timeout=timeout, stop_after=1)]
        if f"g:{waiter_id}" in payloads:
            return
        status, retry_after = conn.execute(
            "SELECT * FROM pggcl.recheck(%s, %s)", (waiter_id, lease_id)
        ).fetchone() or ("gone", None)
        if status == "granted":
            return
        assert status == "queued", status
        conn.execute("SELECT pggcl.heartbeat(%s)", (session_id,))


def hold_and_record(
    dsn: str, names: list[str], iterations: int, seed: int, use_queue: bool
) -> list[tuple[float, float, int]]:
    """Acquire, hold briefly, release, `iterations` times; return (start, end, occupy) of each
    hold on the system-wide monotonic clock."""
    rng = random.Random(seed)
    conn = psycopg.connect(dsn, autocommit=True)
    session_id, _token, channel = conn.execute("SELECT * FROM pggcl.open_session()").fetchone()  # type: ignore[misc]
    conn.execute(f'LISTEN "{channel}"')
    holds: list[tuple[float, float, int]] = []
    for _ in range(iterations):
        occupy = rng.choice([1, 1, 2])
        if use_queue:
            row = conn.execute(
                "SELECT * FROM pggcl.acquire(%s, %s, session_id => %s)", (names, occupy, session_id)
            ).fetchone()
            assert row is not None
            _wait_for_grant(conn, session_id, row)
            lease_id = row[1]
        else:
            while True:
                granted, lease_id, _ = conn.execute(  # type: ignore[misc]
                    "SELECT * FROM pggcl.try_acquire(%s, %s, session_id => %s)",
                    (names, occupy, session_id),
                ).fetchone()
                if granted:
                    break
                time.sleep(rng.uniform(0, 0.002))
        start = time.monotonic()
        time.sleep(rng.uniform(0, 0.003))
        end = time.monotonic()
        holds.append((start, end, occupy))
        assert conn.execute("SELECT pggcl.release(%s)", (lease_id,)).fetchone() == (True,)
    conn.close()
    return holds


def cross_acquire(dsn: str, orders: list[list[str]], iterations: int) -> int:
    """Acquire multi-limit requests in the given name orders, waiting; return how many ran."""
    conn = psycopg.connect(dsn, autocommit=True)
    session_id, _token, channel = conn.execute("SELECT * FROM pggcl.open_session()").fetchone()  # type: ignore[misc]
    conn.execute(f'LISTEN "{channel}"')
    done = 0
    for i in range(iterations):
        names = orders[i % len(orders)]
        row = conn.execute(
            "SELECT * FROM pggcl.acquire(%s, session_id => %s)", (names, session_id)
        ).fetchone()
        assert row is not None
        _wait_for_grant(conn, session_id, row)
        conn.execute("SELECT pggcl.release(%s)", (row[1],))
        done += 1
    conn.close()
    return done
