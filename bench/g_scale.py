"""G: scale. 1,000 waiters blocked in one process (asyncio tasks; then, separately, 200
threads), then 10,000 limits.

Waiters: this process holds the only slot of a limit; a child process starts the waiters
(``concurrency(name, holder="w00042")``) on one client with ``pool_size=2``. Once all are
queued: the child's server connections (by application_name), the queries the whole server
runs while they wait idle (pg_stat_statements calls, else xact_commit), and the child's RSS
growth. Then this process releases, and every waiter must be granted in the engine's queue
order (the ``pggcl.queue`` view, read before the release).

A diagnostic measures what waiting with zero queries would cost instead (see ``_watch_cost``).

Limits: the median acquire latency (call -> body start, sync client) on 10 limits beside that on
10,000 (picked at random), each in a fresh database of its own, their acquires interleaved in
blocks of 50; the figure is the median of 9 rounds' ratios. Without the right to create
databases, the two are measured in this database one after the other, in alternating rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import urllib.parse
from multiprocessing.connection import Connection

import psycopg
from psycopg.conninfo import make_conninfo

import pggcl
from bench._common import (
    Env,
    Figure,
    connect,
    median,
    processes,
    progress,
    rss_bytes,
    wait_for,
    waiting,
)
from pggcl import schema
from pggcl.core.policy import Stats
from pggcl.testing import temporary_database

ID = "G"
TITLE = "scale: 1,000 waiters in one process, 10,000 limits"
APP = "pggcl-bench-g"
POOL_SIZE = 2
MAX_CONNECTIONS, MAX_RSS_MB, MAX_LATENCY_RATIO = 3, 20.0, 1.10
_BLOCK = 50  # acquires in a row on one side, when the two sides are interleaved


def run(env: Env) -> list[Figure]:
    figures = _waiters(env, "asyncio tasks", env.count(1000, 50))
    figures += _waiters(env, "threads", env.count(200, 20))
    figures += _watch_cost(env, env.count(1000, 50))
    figures.append(_limits(env, env.count(10_000, 200), env.count(9, 1)))
    return figures


# --- Waiters ------------------------------------------------------------------------------


def _waiters(env: Env, kind: str, n: int) -> list[Figure]:
    idle = env.size(6.0, 0.5)
    progress(f"G: {n} waiters ({kind}); {idle:g} s idle")
    name, warm = env.create_limit("g", 1), env.create_limit("g-warm", 1)
    ours, theirs = processes().Pipe()
    target = _task_waiters if kind == "asyncio tasks" else _thread_waiters
    dsn = _with_application_name(env.dsn, APP)
    child = processes().Process(target=target, args=(dsn, name, warm, n, theirs), daemon=True)
    try:
        with pggcl.Client(env.dsn) as client, client.concurrency(name):
            child.start()
            assert ours.recv() == "started"
            wait_for(lambda: waiting(env, name) == n, f"{n} waiters are queued", timeout=120)
            connections = _connections(env)
            ours.send("stats")
            client_before, before = ours.recv(), _activity(env)
            time.sleep(idle)
            after = _activity(env)
            ours.send("stats")
            client_after = ours.recv()
            ours.send("rss")
            rss_mb = ours.recv() / 2**20
            queue = [
                h for (h,) in env.sql(
                    "SELECT holder FROM pggcl.queue WHERE name = $1 ORDER BY position", name
                )
            ]  # fmt: skip
        released = time.monotonic()  # the with block above released the slot
        order, last = ours.recv()
        child.join(30)
    finally:
        if child.is_alive():
            child.kill()
    queries = {q: after.get(q, 0) - before.get(q, 0) for q in after}
    queries = {q: c for q, c in queries.items() if c > 0}
    per_second = sum(queries.values()) / idle
    client_calls = {k: client_after[k] - client_before[k] for k in client_after}
    fifo = [f"w{i:05d}" for i in order] == queue
    progress(
        f"G: {connections} connection(s), {per_second:.2f} queries/s idle ({queries}; the "
        f"client counted {client_calls}), "
        f"+{rss_mb:.1f} MB, FIFO {'kept' if fifo else 'BROKEN'}"
    )
    what = f"{n} waiters ({kind})"
    rate = n / (last - released) if last > released else None
    details = {
        "queries_while_idle": queries,
        "client_counted": client_calls,
        "idle_seconds": idle,
        "handoffs_per_second": rate,
    }
    return [
        Figure(ID, f"{what}: server connections (pool_size={POOL_SIZE})", connections, "",
               target=f"<= {MAX_CONNECTIONS}", ok=connections <= MAX_CONNECTIONS),
        Figure(ID, f"{what}: queries/s while they wait idle (server-wide)", per_second, "/s",
               target="0 (heartbeat: 0.5/s)", ok=None, details=details),
        Figure(ID, f"{what}: client RSS growth", rss_mb, "MB",
               target=f"< {MAX_RSS_MB:g} MB", ok=rss_mb < MAX_RSS_MB),
        Figure(ID, f"{what}: granted in queue order", float(fifo), "",
               target="1 (FIFO)", ok=fifo, details={"granted": len(order)}),
    ]  # fmt: skip


def _with_application_name(dsn: str, name: str) -> str:
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urllib.parse.urlsplit(dsn)
        query = [*urllib.parse.parse_qsl(parts.query), ("application_name", name)]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    return make_conninfo(dsn, application_name=name)


def _connections(env: Env) -> int:
    rows = env.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", APP)
    return int(rows[0][0])


def _activity(env: Env) -> dict[str, int]:
    """Calls per statement so far (pg_stat_statements), or committed transactions."""
    if env.statements:
        rows = env.sql(
            # One text can have several entries (the drivers type parameters differently).
            "SELECT query, sum(calls) FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND query NOT LIKE '%pg_stat_%' GROUP BY query"
        )
        return {str(q): int(c) for q, c in rows}
    rows = env.sql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    return {"transactions (pg_stat_database.xact_commit; this probe adds 1)": int(rows[0][0])}


def _task_waiters(dsn: str, name: str, warm: str, n: int, pipe: Connection) -> None:
    asyncio.run(_task_waiters_main(dsn, name, warm, n, pipe))


async def _task_waiters_main(dsn: str, name: str, warm: str, n: int, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    order: list[int] = []
    async with pggcl.AsyncClient(dsn, pool_size=POOL_SIZE) as client:
        async with client.concurrency(warm):  # the session and the pool exist
            pass
        base = rss_bytes()

        async def one(i: int) -> None:
            async with client.concurrency(name, holder=f"w{i:05d}", timeout_seconds=600):
                order.append(i)

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        pipe.send("started")
        while await loop.run_in_executor(None, pipe.recv) != "rss":
            pipe.send(_stats(client.stats))
        pipe.send(rss_bytes() - base)
        await asyncio.gather(*tasks)
        pipe.send((order, time.monotonic()))


def _thread_waiters(dsn: str, name: str, warm: str, n: int, pipe: Connection) -> None:
    order: list[int] = []
    with pggcl.Client(dsn, pool_size=POOL_SIZE) as client:
        with client.concurrency(warm):
            pass
        base = rss_bytes()

        def one(i: int) -> None:
            with client.concurrency(name, holder=f"w{i:05d}", timeout_seconds=600):
                order.append(i)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        pipe.send("started")
        while pipe.recv() != "rss":
            pipe.send(_stats(client.stats))
        pipe.send(rss_bytes() - base)
        for t in threads:
            t.join()
        pipe.send((order, time.monotonic()))


def _stats(stats: Stats) -> dict[str, int]:
    """What the client says it sent: statements on its pool, and heartbeats."""
    return {"statements": stats.calls, "heartbeats": stats.heartbeats}


# --- Why the idle waiters still send a heartbeat ---------------------------------------------


def _watch_cost(env: Env, cycles: int) -> list[Figure]:
    """What waiting with zero queries would cost.

    A waiter learns that a holder died only by asking (the heartbeat) or from an event. The only
    event PostgreSQL gives on a backend's death is a lock it held being let go, and the only
    way to wait for that without asking again and again is a statement blocked on that lock,
    such as ``pg_advisory_lock``. Such a statement keeps its snapshot for as long as it blocks:
    this measures the dead lease rows that VACUUM must then keep after ``cycles`` acquire and
    release cycles, beside the same cycles without the blocked statement.
    """
    progress(f"G: a blocked pg_advisory_lock() watch, {cycles} cycles beside it")
    name, key = env.create_limit("g-watch", 1), 7_426_611
    with connect(env.dsn) as holder, connect(env.dsn) as watcher, pggcl.Client(env.dsn) as client:
        watcher_pid = watcher.info.backend_pid
        holder.execute("SELECT pg_advisory_lock($1)", (key,))
        blocked = threading.Thread(
            target=watcher.execute, args=("SELECT pg_advisory_lock($1)", (key,))
        )
        blocked.start()
        wait_for(
            lambda: bool(env.sql(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                watcher_pid,
            )),
            "the watch blocks",
        )  # fmt: skip
        rows = env.sql("SELECT backend_xmin FROM pg_stat_activity WHERE pid = $1", watcher_pid)
        xmin_held = rows[0][0] is not None
        kept_with = _dead_lease_rows_after(env, client, name, cycles)
        holder.execute("SELECT pg_advisory_unlock($1)", (key,))
        blocked.join()
        watcher.execute("SELECT pg_advisory_unlock($1)", (key,))
        kept_without = _dead_lease_rows_after(env, client, name, cycles)
    if kept_with is None or kept_without is None:
        return []
    progress(
        f"G: the blocked watch holds a snapshot: {xmin_held}; VACUUM kept {kept_with} dead lease "
        f"rows beside it, {kept_without} without"
    )
    return [
        Figure(
            ID, f"diagnostic: dead lease rows VACUUM keeps, {cycles:,} cycles beside a "
            "pg_advisory_lock() watch", kept_with, "rows",
            kept_without, "the same cycles without it",
            details={"watch_holds_snapshot": xmin_held},
        ),
    ]  # fmt: skip


def _dead_lease_rows_after(env: Env, client: pggcl.Client, name: str, cycles: int) -> int | None:
    """Dead rows of pggcl.leases that VACUUM could not remove after ``cycles`` acquire+release
    (None: VACUUM needs ownership of the table)."""
    for _ in range(cycles):
        with client.concurrency(name):
            pass
    try:
        with connect(env.dsn) as conn:
            conn.execute("VACUUM pggcl.leases")
    except psycopg.Error as exc:
        progress(f"G: VACUUM refused, the watch's cost is not measured: {exc}")
        return None
    rows = env.sql(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'pggcl.leases'::regclass"
    )
    return int(rows[0][0])


# --- Limits -------------------------------------------------------------------------------


def _limits(env: Env, many: int, rounds: int) -> Figure:
    cycles = env.count(1000, 50)
    progress(f"G: acquire latency, 10 limits vs {many:,}, {rounds} round(s) of {cycles} cycles")
    try:
        with contextlib.ExitStack() as stack:
            small, large = (
                stack.enter_context(temporary_database(env.dsn, "pggcl_bench_g_")) for _ in "ab"
            )
            return _limits_side_by_side(small, large, many, rounds, cycles)
    except psycopg.errors.InsufficientPrivilege as exc:
        progress(f"G: no second database ({exc}); the two are measured one after the other")
        return _limits_one_after_other(env, many, rounds, cycles)


def _limits_side_by_side(small: str, large: str, many: int, rounds: int, cycles: int) -> Figure:
    """Two fresh databases, one with 10 limits and one with ``many``, their acquires
    interleaved in blocks: both see the same machine at the same moments."""
    names = [f"g-{i:05d}" for i in range(many)]
    for dsn, count in ((small, 10), (large, many)):
        schema.upgrade(dsn)
        with connect(dsn) as conn:
            conn.execute("SELECT pggcl.create_limit(n, 1) FROM unnest($1::text[]) n",
                         (names[:count],))  # fmt: skip
            conn.execute("VACUUM ANALYZE pggcl.limit_state")
    rng = random.Random(5)
    ratios: list[float] = []
    at_10: list[float] = []
    at_many: list[float] = []
    with pggcl.Client(small) as few_client, pggcl.Client(large) as many_client:
        for _ in range(rounds):
            few: list[float] = []
            lots: list[float] = []
            for block in range(0, cycles, _BLOCK):
                size = min(_BLOCK, cycles - block)
                few += _latencies(few_client, rng.choices(names[:10], k=size))
                lots += _latencies(many_client, rng.choices(names, k=size))
            at_10.append(median(few))
            at_many.append(median(lots))
            ratios.append(at_many[-1] / at_10[-1])
    return _latency_figure(many, at_10, at_many, ratios, "side by side")


def _limits_one_after_other(env: Env, many: int, rounds: int, cycles: int) -> Figure:
    """The fallback without a right to create databases: in this database, 10 limits and then
    ``many``, alternating in rounds (noisier: the machine changes between rounds)."""
    prefix = env.name("g-lim")
    few = [f"{prefix}-{i:05d}" for i in range(10)]
    others = [f"{prefix}-{i:05d}" for i in range(10, many)]
    env.sql("SELECT pggcl.create_limit(n, 1) FROM unnest($1::text[]) n", few)
    small: list[float] = []
    large: list[float] = []
    rng = random.Random(5)
    with pggcl.Client(env.dsn) as client:
        for r in range(rounds):
            for grow in (False, True) if r % 2 == 0 else (True, False):
                if grow:
                    env.sql("SELECT pggcl.create_limit(n, 1) FROM unnest($1::text[]) n", others)
                    _vacuum(env)
                    large.append(median(_latencies(client, rng.choices(few + others, k=cycles))))
                    env.sql("SELECT pggcl.delete_limit(n) FROM unnest($1::text[]) n", others)
                    _vacuum(env)
                else:
                    small.append(median(_latencies(client, rng.choices(few, k=cycles))))
    env.sql("SELECT pggcl.delete_limit(n) FROM unnest($1::text[]) n", few)
    ratios = [b / a for a, b in zip(small, large, strict=True)]
    return _latency_figure(many, small, large, ratios, "one after the other")


def _latency_figure(
    many: int, at_10: list[float], at_many: list[float], ratios: list[float], how: str
) -> Figure:
    value = median(ratios)
    progress(
        f"G: latency {median(at_10) * 1e3:.3f} ms (10) vs {median(at_many) * 1e3:.3f} ms "
        f"({many:,}), {how}; per-round ratios {', '.join(f'{r:.2f}' for r in ratios)}"
    )
    return Figure(
        ID, f"acquire latency with {many:,} limits", median(at_many) * 1000, "ms",
        median(at_10) * 1000, "with 10 limits", value, f"<= {MAX_LATENCY_RATIO:g}x",
        value <= MAX_LATENCY_RATIO, runs=[x * 1000 for x in at_many],
        details={"with_10_ms": [x * 1000 for x in at_10], "ratios": ratios, "measured": how},
    )  # fmt: skip


def _latencies(client: pggcl.Client, names: list[str]) -> list[float]:
    """Seconds from each acquire's call to its body start, one acquire per name."""
    for name in names[:5]:  # warm up
        with client.concurrency(name):
            pass
    samples = []
    for name in names:
        began = time.perf_counter()
        with client.concurrency(name):
            samples.append(time.perf_counter() - began)
    return samples


def _vacuum(env: Env) -> None:
    """Start each measurement from a tidy table (needs ownership; skipped without)."""
    try:
        with connect(env.dsn) as conn:
            conn.execute("VACUUM ANALYZE pggcl.limit_state")
    except Exception as exc:  # a missing right only makes the figure noisier
        progress(f"G: VACUUM skipped: {exc}")
