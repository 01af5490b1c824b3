"""`pggcl run` through what the sync and async clients are tested against elsewhere in
tests/faults (issue #12, point 7): an outage longer than the grace while one run holds and
another waits, and a waiting run whose connections (pooled and session) the server kills.
Each checks that COMMAND's exit status is returned with no error on stderr (warnings are
allowed), that no slot is held twice (COMMAND's hold intervals across processes), and that
nothing is left held or queued.

`pggcl run` has no option or environment variable for its grace: it is the client's
default, 5 s (CLI_GRACE)."""

from __future__ import annotations

import time

from pggcl.testing import TempPostgres
from tests.faults.conftest import (
    Problems,
    Workers,
    all_intervals,
    backends_of_process,
    max_overlap,
    queued_count,
    sql,
    terminate,
    wait_until,
)
from tests.faults.test_restart import hold_and_wait_through

CLI_GRACE = 5.0  # pggcl.Client's default grace_seconds, which `pggcl run` uses


def test_pggcl_run_down_longer_than_the_grace(
    cluster: TempPostgres, dsn: str, workers: Workers
) -> None:
    """Down for longer than pggcl run's grace while one run holds and another waits: the
    holder's lease survives (grace counts from when the server is back), the waiter keeps
    waiting and is granted once the holder's COMMAND exits, both return COMMAND's 0."""

    def outage() -> None:
        cluster.down_for(CLI_GRACE + 3)
        # An observation window of one grace past the outage (not synchronisation): a lease
        # whose grace had counted from the outage's start would be reclaimed meanwhile.
        time.sleep(CLI_GRACE + 0.5)
        leases = sql(dsn, "SELECT lease_id, holder FROM pggcl.holders")
        assert len(leases) == 1, f"the holder's lease was reclaimed after the outage: {leases}"
        assert queued_count(dsn) == 1, "the waiting run lost its place"

    hold_and_wait_through("cli", dsn, workers, outage)


def test_pggcl_run_waiting_while_its_connections_are_killed(dsn: str, workers: Workers) -> None:
    """A `pggcl run` waiter whose pooled and session connections are terminated while it
    waits keeps waiting (its session resumed, its place kept), is granted when the holder's
    COMMAND exits, and returns COMMAND's status."""
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    seen = Problems()
    holder = workers.start("cli", "holder", dsn)
    holder.wait("entered")
    waiter = workers.start("cli", "waiter", dsn, timeout=60)
    wait_until(lambda: queued_count(dsn) == 1, "the waiter is queued")
    [(place,)] = sql(dsn, "SELECT waiter_id FROM pggcl.queue")

    pooled, session = backends_of_process(dsn, waiter.proc.pid)
    assert len(session) == 1, f"the waiting run's session connection: {session}"
    assert pooled, "the waiting run has no pooled connection to kill"
    terminate(dsn, pooled + session)

    def resumed() -> bool:
        return len(backends_of_process(dsn, waiter.proc.pid)[1]) == 1

    seen.expect(lambda: wait_until(resumed, "the waiting run's session connection is re-made"))
    queue = sql(dsn, "SELECT waiter_id FROM pggcl.queue")
    seen.check(queue == [(place,)], f"the waiting run did not keep its place: {queue}")

    holder.release()
    seen.expect(lambda: holder.wait("exited"))
    seen.expect(lambda: waiter.wait("entered"))
    waiter.release()
    for worker in (holder, waiter):
        seen.expect(worker.finish)
        seen.found += worker.problems()
    overlap = max_overlap(all_intervals(holder, waiter))
    seen.check(overlap <= 1, f"{overlap} holders at once on a limit of 1")
    seen.nothing_held_or_queued(dsn)
    seen.assert_none()
