"""A holder inside ``concurrency()`` and a queued waiter (another process, timeout 60 s)
while the server restarts (``-m fast``), crashes (``-m immediate``) or stays down longer than
the clients' grace period: the waiter keeps waiting and is granted after the holder leaves;
the holder keeps its lease and its release succeeds; no exception reaches user code, no slot
is held twice, nothing is left held or queued (issue #12)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import pytest

from pggcl.testing import StopMode, TempPostgres
from tests.faults.conftest import (
    KINDS,
    Problems,
    Workers,
    all_intervals,
    max_overlap,
    queued_count,
    sql,
    wait_until,
)

GRACE = 1.0  # the sync and async clients' grace_seconds here


def hold_and_wait_through(
    kind: str, dsn: str, workers: Workers, fault: Callable[[], None], grace: float | None = None
) -> None:
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    holder = workers.start(kind, "holder", dsn, grace=grace)
    holder.wait("entered")
    waiter = workers.start(kind, "waiter", dsn, grace=grace, timeout=60)
    wait_until(lambda: queued_count(dsn) == 1, "the waiter is queued")

    fault()

    seen = Problems()
    holder.release()
    seen.expect(lambda: holder.wait("exited"))
    seen.expect(lambda: waiter.wait("entered"))  # fails at once if the waiter gave up
    waiter.release()
    if kind != "cli":
        for worker in (holder, waiter):
            seen.expect(partial(worker.wait, "result"))
        seen.nothing_held_or_queued(dsn)  # while both clients are still open
    for worker in (holder, waiter):
        worker.finish()
        seen.found += worker.problems()
    overlap = max_overlap(all_intervals(holder, waiter))
    seen.check(overlap <= 1, f"{overlap} holders at once on a limit of 1")
    seen.nothing_held_or_queued(dsn)
    seen.assert_none()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
@pytest.mark.parametrize("kind", KINDS)
def test_restart(
    kind: str, mode: StopMode, cluster: TempPostgres, dsn: str, workers: Workers
) -> None:
    hold_and_wait_through(kind, dsn, workers, lambda: cluster.restart(mode), grace=GRACE)


@pytest.mark.parametrize("kind", ["sync", "async"])  # pggcl run (5 s grace): test_cli.py
def test_down_longer_than_the_grace(
    kind: str, cluster: TempPostgres, dsn: str, workers: Workers
) -> None:
    """Grace counts from when the server can first see the session gone: down for twice the
    grace, the holder's lease survives and it is still the holder once the server is back."""
    grace = GRACE

    def outage() -> None:
        cluster.down_for(2 * grace)
        # An observation window of one grace past the outage (not synchronisation): a lease
        # whose grace had counted from the outage's start would be reclaimed meanwhile.
        time.sleep(grace + 0.5)
        leases = sql(dsn, "SELECT lease_id, holder FROM pggcl.holders")
        assert len(leases) == 1, f"the holder's lease was reclaimed after the outage: {leases}"

    hold_and_wait_through(kind, dsn, workers, outage, grace=grace)
