"""Processes SIGKILLed: `pggcl run` takes its COMMAND with it (parent-death signal), so that
its slot can be given away safely; a waiter killed while queued is neither served nor shown
by the views, whether or not any other client acts (issue #12)."""

from __future__ import annotations

from functools import partial

import pytest

from tests.faults.conftest import (
    Problems,
    Workers,
    pid_alive,
    queued_count,
    sql,
    wait_until,
)

GRACE = 1.0  # of the sync and async waiters killed


def test_pggcl_run_killed_kills_its_command(dsn: str, workers: Workers) -> None:
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    run = workers.start("cli", "run", dsn)
    command_pid = int(run.wait("entered")["pid"])
    assert pid_alive(command_pid)
    run.kill()  # pggcl alone, not its process group
    wait_until(
        lambda: not pid_alive(command_pid),
        f"COMMAND (pid {command_pid}) dies with its SIGKILLed `pggcl run`",
        timeout=3,
    )


@pytest.mark.parametrize("kind", ["sync", "async", "cli"])
def test_a_killed_waiter_is_not_shown_nor_served(kind: str, dsn: str, workers: Workers) -> None:
    """For cli, the `pggcl run` process (waiting, so no COMMAND yet) is SIGKILLed; a dead
    session's waiters are left out at once, whatever its grace (pggcl run's is 5 s)."""
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    seen = Problems()
    holder = workers.start("sync", "holder", dsn)  # it only holds: no heartbeat, no call
    holder.wait("entered")
    dead = workers.start(kind, "dead", dsn, grace=GRACE)
    wait_until(lambda: queued_count(dsn) == 1, "the waiter is queued")
    [(dead_session,)] = sql(dsn, "SELECT session_id FROM pggcl.queue")
    dead.kill_group()

    def not_shown() -> bool:
        queued = sql(dsn, "SELECT count(*) FROM pggcl.queue WHERE session_id = %s", dead_session)
        [(waiting,)] = sql(dsn, "SELECT waiting FROM pggcl.limits WHERE name = 'db'")
        return queued == [(0,)] and waiting == 0

    seen.expect(
        lambda: wait_until(
            not_shown,
            "pggcl.queue and pggcl.limits.waiting leave out the dead waiter",
            timeout=GRACE + 1,
        )
    )
    shown = sql(dsn, "SELECT waiter_id, session_id, holder FROM pggcl.queue")
    [(waiting,)] = sql(dsn, "SELECT waiting FROM pggcl.limits WHERE name = 'db'")
    if seen.found:
        seen.found.append(f"still shown: pggcl.queue {shown}, pggcl.limits.waiting {waiting}")

    live = workers.start("sync", "live", dsn, timeout=30)
    wait_until(
        lambda: queued_count(dsn) >= 1 and _queued_by_others(dsn, dead_session) == 1,
        "the live waiter is queued",
    )
    holder.release()
    holder.wait("exited")
    served_dead = sql(dsn, "SELECT lease_id FROM pggcl.holders WHERE session_id = %s", dead_session)
    seen.check(served_dead == [], f"the freed slot was granted to the dead waiter: {served_dead}")
    seen.expect(lambda: live.wait("entered"))
    live.release()
    for worker in (holder, live):
        seen.expect(partial(worker.wait, "result"))
    seen.nothing_held_or_queued(dsn)
    for worker in (holder, live):
        worker.finish()
        seen.found += worker.problems()
    seen.assert_none()


def _queued_by_others(dsn: str, session: int) -> int:
    rows = sql(dsn, "SELECT count(*) FROM pggcl.queue WHERE session_id <> %s", session)
    return int(rows[0][0])
