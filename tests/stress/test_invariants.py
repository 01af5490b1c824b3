"""The engine's invariants under real concurrency: many OS processes, one server."""

from __future__ import annotations

import multiprocessing
from typing import Any

import psycopg

from tests.sql.conftest import assert_bookkeeping
from tests.stress.workers import cross_acquire, hold_and_record


def max_overlap(holds: list[tuple[float, float, int]]) -> int:
    """The most slots held at any one moment, given (start, end, slots) intervals."""
    events = sorted(
        [(start, slots) for start, _, slots in holds] + [(end, -slots) for _, end, slots in holds],
        key=lambda event: (event[0], event[1]),
    )  # at a tie, ends before starts
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


def test_max_overlap_helper() -> None:
    assert max_overlap([(0, 2, 1), (1, 3, 2), (2, 4, 1)]) == 3
    assert max_overlap([(0, 1, 1), (1, 2, 1)]) == 1


def test_held_slots_never_exceed_the_limit_across_processes(pggcl_dsn: str) -> None:
    """8 processes hammer one limit of 3 with occupy 1 or 2, half queueing and half retrying."""
    with psycopg.connect(pggcl_dsn, autocommit=True) as conn:
        conn.execute("SELECT pggcl.create_limit('db', 3)")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        results = pool.starmap(
            hold_and_record, [(pggcl_dsn, ["db"], 40, seed, seed % 2 == 0) for seed in range(8)]
        )
    holds = [hold for worker in results for hold in worker]
    assert len(holds) == 8 * 40
    peak = max_overlap(holds)
    assert peak <= 3
    assert peak >= 2, "the workers never overlapped: the test proves nothing"
    with psycopg.connect(pggcl_dsn, autocommit=True) as conn:
        row: Any = conn.execute("SELECT active_slots, waiting FROM pggcl.limits").fetchone()
        assert row == (0, 0)
    assert_bookkeeping(pggcl_dsn)


def test_multi_limit_acquires_in_opposite_orders_never_deadlock(pggcl_dsn: str) -> None:
    with psycopg.connect(pggcl_dsn, autocommit=True) as conn:
        conn.execute("SELECT pggcl.create_limit(n, 1) FROM unnest('{a,b,c}'::text[]) n")
    orders = [[["a", "b"], ["b", "a"]], [["b", "c"], ["c", "a"]], [["c", "b", "a"]], [["a", "c"]]]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        done = pool.starmap(cross_acquire, [(pggcl_dsn, orders[i % 4], 25) for i in range(8)])
    assert done == [25] * 8
    with psycopg.connect(pggcl_dsn, autocommit=True) as conn:
        assert conn.execute(
            "SELECT sum(active_slots), sum(waiting) FROM pggcl.limits"
        ).fetchone() == (0, 0)
    assert_bookkeeping(pggcl_dsn)
