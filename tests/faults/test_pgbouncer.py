"""Behind a real PgBouncer (Debian package): in transaction or statement mode pggcl either
works (the session connection on a direct DSN, `session_dsn`, the calls through the pooler) or
refuses
at once with ConfigurationError naming the fix; it never shares a session between processes
nor puts more holders than the limit at once. Session mode works, also with
``server_reset_query = ''``: a SIGKILLed holder is reclaimed and a new process does not
inherit its session (issue #12)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import psycopg
import psycopg.sql
import pytest

import pggcl
from pggcl.testing import PgBouncerNotFound, PoolMode, TempPgBouncer, TempPostgres, find_pgbouncer
from tests.faults.conftest import (
    Problems,
    Worker,
    Workers,
    all_intervals,
    max_overlap,
    queued_count,
    sql,
    wait_until,
)

LIMIT, PROCESSES, HOLDS = 2, 4, 4
TIMEOUT = 5.0  # of each acquisition in a crowd: ample for 4 short holds on 2 slots
CLI_TIMEOUT = 60.0  # of each `pggcl run` in the crowd that must work
GRACE = 1.0  # of the sync and async holders killed in session mode
CLI_GRACE = 5.0  # pggcl run's: the client default
HEARTBEAT = 2.0  # the client default: how often a waiter's process reclaims the dead
# Of the sync and async clients in session mode: without a reset query, PostgreSQL ends a
# killed holder's server session (kept open by PgBouncer) this long after its last statement.
IDLE_TIMEOUT = 3.0


def _pgbouncer_installed() -> bool:
    try:
        find_pgbouncer()
    except PgBouncerNotFound:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _pgbouncer_installed(), reason="pgbouncer is not installed (scripts/bootstrap.sh)"
)

MakeBouncer = Callable[..., TempPgBouncer]


@pytest.fixture
def bouncer(cluster: TempPostgres) -> Iterator[MakeBouncer]:
    """`bouncer(pool_mode, server_reset_query=None, settings=None)`: a PgBouncer in front of
    the cluster, stopped after the test."""
    started: list[TempPgBouncer] = []

    def make(
        pool_mode: PoolMode,
        server_reset_query: str | None = None,
        settings: dict[str, str] | None = None,
    ) -> TempPgBouncer:
        started.append(
            TempPgBouncer(
                cluster,
                pool_mode=pool_mode,
                server_reset_query=server_reset_query,
                settings=settings,
            )
        )
        return started[-1].start()

    yield make
    for b in started:
        b.stop()


def names_the_fix(error: str) -> bool:
    return "session_dsn" in error or "session mode" in error or "pool_mode" in error


def check_sessions_not_shared(seen: Problems, processes: list[Worker]) -> None:
    owners: dict[int, str] = {}
    for worker in processes:
        for session in worker.sessions():
            other = owners.setdefault(session, worker.role)
            seen.check(other == worker.role, f"{other} and {worker.role} shared session {session}")


def run_crowd(
    kind: str,
    dsn: str,
    through: str,
    workers: Workers,
    client_options: dict[str, Any],
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> tuple[Problems, list[Worker]]:
    """PROCESSES processes, each holding a slot of a limit of LIMIT for HOLDS short blocks,
    through the pooler; returns what went wrong and the workers (all finished). `env` is
    for `pggcl run` (kind "cli"), which takes no client options."""
    sql(dsn, "SELECT pggcl.create_limit('db', %s)", LIMIT)
    seen = Problems()
    spec: dict[str, Any] = {"hold_seconds": 0.05, "wait_release": False}
    if kind == "cli":  # one hold per `pggcl run`, so as many runs as the others' holds
        crowd = [
            workers.start(kind, f"p{i}", through, admin_dsn=dsn, timeout=timeout, env=env, **spec)
            for i in range(PROCESSES * 2)
        ]
    else:
        crowd = [
            workers.start(
                kind,
                f"p{i}",
                through,
                admin_dsn=dsn,
                timeout=TIMEOUT,
                holds=HOLDS,
                client_options=client_options,
                **spec,
            )
            for i in range(PROCESSES)
        ]
        for worker in crowd:
            seen.expect(partial(worker.wait, "result"))
        seen.nothing_held_or_queued(dsn)  # while the clients are still open
    for worker in crowd:
        seen.expect(worker.finish)
    overlap = max_overlap(all_intervals(*crowd))
    seen.check(overlap <= LIMIT, f"{overlap} holders at once on a limit of {LIMIT}")
    check_sessions_not_shared(seen, crowd)
    seen.nothing_held_or_queued(dsn)
    return seen, crowd


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_transaction_mode_with_a_direct_session_dsn_works(
    mode: PoolMode, kind: str, dsn: str, workers: Workers, bouncer: MakeBouncer
) -> None:
    through = bouncer(mode).through(dsn)
    seen, crowd = run_crowd(kind, dsn, through, workers, {"session_dsn": dsn})
    for worker in crowd:
        seen.found += worker.problems()
    seen.assert_none()


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_pggcl_run_in_transaction_mode_with_a_direct_session_dsn_works(
    mode: PoolMode, dsn: str, workers: Workers, bouncer: MakeBouncer
) -> None:
    """`pggcl run` through the pooler, its session connection on PGGCL_SESSION_DSN (direct).
    One server connection behind the pooler: a session connection that went through it
    would meet the others' there and be refused, so only a direct one passes."""
    through = bouncer(mode, settings={"default_pool_size": "1"}).through(dsn)
    env = {"PGGCL_SESSION_DSN": dsn}
    # Each hold lasts COMMAND's start-up (a Python process): seconds on a loaded machine, so
    # the crowd's waits are given time enough (what is tested is that every run works).
    seen, crowd = run_crowd("cli", dsn, through, workers, {}, env=env, timeout=CLI_TIMEOUT)
    for worker in crowd:
        seen.found += worker.problems()
    seen.check(all(worker.events("entered") for worker in crowd), "a run never ran its COMMAND")
    seen.assert_none()


@pytest.mark.parametrize(
    "kind",
    [
        "sync",
        "async",
        "cli",
    ],
)
@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_transaction_mode_alone_works_or_refuses_at_once(
    mode: PoolMode, kind: str, dsn: str, workers: Workers, bouncer: MakeBouncer
) -> None:
    # One server connection for all: every process's session statements meet on it, so
    # that no lucky spread over server sessions hides what the client does behind a pooler.
    through = bouncer(mode, settings={"default_pool_size": "1"}).through(dsn)
    seen, crowd = run_crowd(kind, dsn, through, workers, {})
    for worker in crowd:
        problems = worker.problems()
        if not problems:
            continue  # it worked
        refused = (
            "ConfigurationError" in problems[0] if kind != "cli" else "Error: " in worker.stderr
        )
        fix_named = names_the_fix(problems[0])
        never_entered = not worker.events("entered")
        if refused and fix_named and never_entered and len(problems) == 1:
            continue  # it refused at once, naming the fix
        seen.found += [f"neither worked nor refused at once naming the fix: {p}" for p in problems]
    seen.assert_none()


@pytest.mark.parametrize(
    ("kind", "reset"),
    [
        pytest.param("sync", "DISCARD ALL", id="sync-discard-all"),
        pytest.param("async", "DISCARD ALL", id="async-discard-all"),
        pytest.param("cli", "DISCARD ALL", id="cli-discard-all"),
        pytest.param("sync", "", id="sync-no-reset-query"),
        pytest.param("async", "", id="async-no-reset-query"),
        pytest.param("cli", "", id="cli-no-reset-query"),
    ],
)
def test_session_mode_reclaims_a_killed_holder(
    kind: str, reset: str, dsn: str, workers: Workers, bouncer: MakeBouncer
) -> None:
    # Without a reset the killed holder's server session stays open until PostgreSQL's idle
    # timeout ends it; only then does the server see the holder gone and its grace start. The
    # sync and async clients set the timeout themselves (idle_session_timeout_seconds); pggcl
    # run has no such option, so there it is the server's, set here for the database (an
    # operator could as well set it for pggcl's role), and the client keeps
    # its connection alive by the timeout it finds in effect.
    if kind == "cli" and reset == "":
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                psycopg.sql.SQL("ALTER DATABASE {} SET idle_session_timeout = {}").format(
                    psycopg.sql.Identifier(conn.info.dbname), f"{IDLE_TIMEOUT:g}s"
                )
            )
    through = bouncer("session", server_reset_query=reset).through(dsn)
    sql(dsn, "SELECT pggcl.create_limit('db', 1)")
    grace = CLI_GRACE if kind == "cli" else GRACE
    seen_gone = IDLE_TIMEOUT if reset == "" else 0.0
    options: dict[str, Any] = {"admin_dsn": dsn}
    if kind != "cli":
        options["grace"] = GRACE
        options["client_options"] = {"idle_session_timeout_seconds": IDLE_TIMEOUT}
    seen = Problems()

    killed = workers.start(kind, "killed", through, **options)
    killed.wait("entered")
    budget = seen_gone + grace + HEARTBEAT
    waiter = workers.start(kind, "waiter", through, timeout=budget + 3, **options)
    wait_until(lambda: queued_count(dsn) == 1, "the waiter is queued")
    killed.kill_group()  # SIGKILL (for pggcl run, COMMAND too)

    seen.expect(lambda: waiter.wait("entered", timeout=budget + 10))
    if waiter.events("entered"):
        newcomer = workers.start(kind, "newcomer", through, timeout=30, **options)
        wait_until(lambda: queued_count(dsn) == 1, "the newcomer is queued")
        waiter.release()
        seen.expect(lambda: newcomer.wait("entered"))
        newcomer.release()
        seen.expect(lambda: newcomer.wait("exited"))
        seen.expect(newcomer.finish)
        seen.found += newcomer.problems()
        inherited = newcomer.sessions() & killed.sessions()
        seen.check(not inherited, f"the newcomer inherited the killed one's session {inherited}")
    else:
        seen.found.append("the killed holder's slot was never reclaimed (no newcomer started)")
    seen.expect(lambda: waiter.wait("exited"))
    seen.expect(waiter.finish)
    seen.found += waiter.problems()
    check_sessions_not_shared(seen, workers.started)
    overlap = max_overlap(all_intervals(*workers.started))
    seen.check(overlap <= 1, f"{overlap} holders at once on a limit of 1")
    seen.nothing_held_or_queued(dsn)
    seen.assert_none()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_session_mode_without_a_reset_refuses_to_inherit_a_session(
    kind: str, dsn: str, bouncer: MakeBouncer
) -> None:
    """What docs/reliability.md promises for the time until PostgreSQL ends a dead client's
    server session (its idle timeout, above): a client whose session connection reaches a
    server session still carrying a gone client's pggcl session (session mode,
    `server_reset_query = ''`, one server connection) is refused at once with
    ConfigurationError naming the fix; it never takes that session over."""
    through = bouncer(
        "session", server_reset_query="", settings={"default_pool_size": "1"}
    ).through(dsn)
    with psycopg.connect(through, autocommit=True) as gone:  # a client that went away
        [(left,)] = gone.execute("SELECT session_id FROM pggcl.open_session(60)").fetchall()

    sql(dsn, "SELECT pggcl.create_limit('db', 1)")

    async def async_first_contact() -> None:
        async with (
            pggcl.AsyncClient(through, grace_seconds=GRACE) as client,
            client.concurrency("db", timeout_seconds=5),
        ):
            pass

    with pytest.raises(pggcl.ConfigurationError) as refused:
        if kind == "sync":
            with (
                pggcl.Client(through, grace_seconds=GRACE) as client,
                client.concurrency("db", timeout_seconds=5),
            ):
                pass
        else:
            asyncio.run(async_first_contact())
    assert names_the_fix(str(refused.value)), str(refused.value)
    assert f"session {left}" in str(refused.value), str(refused.value)
    # Nothing was held through the inherited session.
    assert sql(dsn, "SELECT count(*) FROM pggcl.holders") == [(0,)]
