"""A: uncontended acquire+release cycles per second, beside the floor PostgreSQL allows.

The floor is the same number of round trips doing the least work a slot change could: two
single-row UPDATE transactions (autocommit, prepared) through the same driver, from the same
number of clients (threads for sync, tasks for async), each client on its own row. pggcl runs
``with client.concurrency(name)`` (``async with`` for async), each client on its own limit.
Floor and pggcl alternate, round after round; the ratio is the median of the rounds' ratios.

Three diagnostic lines (1 sync client, no target) split the cost: the SQL API called through
psycopg directly (no Python client); the same row changes as plain SQL (no PL/pgSQL), which
needs rights on pggcl's private tables that no user of the API has; and the same row changes in
the least a secure SQL API can be: a pair of SECURITY DEFINER PL/pgSQL functions with a pinned
search_path, doing nothing but those changes (no checks, no queue, no session).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg

import pggcl
from bench._common import Env, Figure, connect, median, progress, ratio

ID = "A"
TITLE = "uncontended acquire+release"
TARGET = 0.6

SyncOp = Callable[[], None]
AsyncOp = Callable[[], Awaitable[None]]

UPDATE = "UPDATE {table} SET n = n + 1 WHERE id = $1"


def run(env: Env) -> list[Figure]:
    seconds, rounds = env.size(1.0, 0.1), env.count(5, 1)
    table = f"pggcl_bench_floor_{env.name('a').rsplit('-', 1)[1]}"
    env.sql(f"CREATE TABLE {table} (id integer PRIMARY KEY, n bigint NOT NULL DEFAULT 0)")
    env.sql(f"INSERT INTO {table} (id) SELECT generate_series(0, 7)")
    try:
        figures = []
        for clients in (1, 8):
            names = [env.create_limit("a", 1) for _ in range(clients)]
            pair = _sync_pair(env.dsn, table, names, seconds, rounds)
            figures.append(_figure(f"sync, {clients} client(s) on {clients} limit(s)", *pair))
            pair = asyncio.run(_async_pair(env.dsn, table, names, seconds, rounds))
            figures.append(_figure(f"async, {clients} client(s) on {clients} limit(s)", *pair))
        figures += _diagnostics(env, table, seconds, rounds)
        return figures
    finally:
        env.sql(f"DROP TABLE {table}")


def _figure(what: str, pggcl_runs: list[float], floor_runs: list[float]) -> Figure:
    r = median([ratio(p, f) for p, f in zip(pggcl_runs, floor_runs, strict=True)])
    return Figure(
        ID, f"{what}, cycles/s", median(pggcl_runs), "/s", median(floor_runs),
        "floor: 2 UPDATE transactions", r, f">= {TARGET}x floor", r >= TARGET,
        runs=pggcl_runs, details={"floor_runs": floor_runs},
    )  # fmt: skip


# --- sync ---------------------------------------------------------------------------------


def _sync_rate(ops: list[SyncOp], seconds: float) -> float:
    """Cycles per second of all ``ops`` looping at once for ``seconds`` (one thread each)."""
    for op in ops:  # warm up: connections open, statements prepared
        for _ in range(10):
            op()
    if len(ops) == 1:
        return _loop(ops[0], time.perf_counter() + seconds, seconds)
    counts = [0] * len(ops)
    start = threading.Barrier(len(ops) + 1)
    deadline = 0.0

    def worker(i: int) -> None:
        start.wait()
        counts[i] = _count(ops[i], deadline)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(ops))]
    for t in threads:
        t.start()
    began = time.perf_counter()
    deadline = began + seconds
    start.wait()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def _count(op: SyncOp, deadline: float) -> int:
    n = 0
    while time.perf_counter() < deadline:
        op()
        n += 1
    return n


def _loop(op: SyncOp, deadline: float, seconds: float) -> float:
    began = time.perf_counter()
    n = _count(op, deadline)
    return n / (time.perf_counter() - began)


def _sync_pair(
    dsn: str, table: str, names: list[str], seconds: float, rounds: int
) -> tuple[list[float], list[float]]:
    progress(f"A: sync, {len(names)} client(s)")
    conns = [connect(dsn) for _ in names]
    client = pggcl.Client(dsn, pool_size=len(names))
    try:
        floor_ops = [_floor_op(conn, table, i) for i, conn in enumerate(conns)]
        pggcl_ops = [_pggcl_op(client, name) for name in names]
        return _alternate(lambda: _sync_rate(pggcl_ops, seconds),
                          lambda: _sync_rate(floor_ops, seconds), rounds)  # fmt: skip
    finally:
        client.close()
        for conn in conns:
            conn.close()


def _floor_op(conn: psycopg.Connection[Any], table: str, row: int) -> SyncOp:
    cur, query = conn.cursor(), UPDATE.format(table=table)

    def op() -> None:
        cur.execute(query, (row,))
        cur.execute(query, (row,))

    return op


def _pggcl_op(client: pggcl.Client, name: str) -> SyncOp:
    def op() -> None:
        with client.concurrency(name):
            pass

    return op


def _alternate(
    measure: Callable[[], float], baseline: Callable[[], float], rounds: int
) -> tuple[list[float], list[float]]:
    """Run both ``rounds`` times, alternating which goes first."""
    measured: list[float] = []
    base: list[float] = []
    for r in range(rounds):
        if r % 2:
            measured.append(measure())
            base.append(baseline())
        else:
            base.append(baseline())
            measured.append(measure())
    return measured, base


# --- async --------------------------------------------------------------------------------


async def _async_rate(ops: list[AsyncOp], seconds: float) -> float:
    for op in ops:
        for _ in range(10):
            await op()
    began = time.perf_counter()
    deadline = began + seconds

    async def worker(op: AsyncOp) -> int:
        n = 0
        while time.perf_counter() < deadline:
            await op()
            n += 1
        return n

    counts = await asyncio.gather(*(worker(op) for op in ops))
    return sum(counts) / (time.perf_counter() - began)


async def _async_pair(
    dsn: str, table: str, names: list[str], seconds: float, rounds: int
) -> tuple[list[float], list[float]]:
    progress(f"A: async, {len(names)} client(s)")
    conns = [await asyncpg.connect(dsn) for _ in names]
    client = pggcl.AsyncClient(dsn, pool_size=len(names))
    try:
        query = UPDATE.format(table=table)

        def floor_op(conn: Any, row: int) -> AsyncOp:
            async def op() -> None:
                await conn.execute(query, row)
                await conn.execute(query, row)

            return op

        def pggcl_op(name: str) -> AsyncOp:
            async def op() -> None:
                async with client.concurrency(name):
                    pass

            return op

        floor_ops = [floor_op(conn, i) for i, conn in enumerate(conns)]
        pggcl_ops = [pggcl_op(name) for name in names]
        measured: list[float] = []
        base: list[float] = []
        for r in range(rounds):
            order = [(pggcl_ops, measured), (floor_ops, base)]
            for ops, out in order if r % 2 else reversed(order):
                out.append(await _async_rate(ops, seconds))
        return measured, base
    finally:
        await client.close()
        for conn in conns:
            await conn.close()


# --- diagnostics --------------------------------------------------------------------------

# As the clients call it when the limit has room: pggcl.take, then pggcl.release.
SQL_TAKE = "SELECT pggcl.take($1::text, 1, $2::integer, $3::text, $4::uuid)"
SQL_RELEASE = "SELECT pggcl.release($1::uuid)"
# What the engine's single-name fast path changes, as two plain statements: the limit row and
# a lease row, then the reverse. Private tables: a diagnostic, not an API.
BARE_ACQUIRE = """
WITH u AS (
    UPDATE pggcl.limit_state s SET held = s.held + 1
    WHERE s.name = $1 AND s.active AND s.queued = 0 AND s.held + 1 <= s."limit"
    RETURNING s.id)
INSERT INTO pggcl.leases (id, limit_id, occupy, session_id, holder, acquired_at)
SELECT gen_random_uuid(), u.id, 1, $2, $3, clock_timestamp() FROM u
RETURNING id"""
BARE_RELEASE = """
WITH d AS (DELETE FROM pggcl.leases x WHERE x.id = $1 RETURNING x.limit_id, x.occupy)
UPDATE pggcl.limit_state l SET held = l.held - d.occupy FROM d WHERE l.id = d.limit_id"""
# The least a secure SQL API over the private tables can be (created beside the floor table).
MINIMAL_FUNCTIONS = (
    """CREATE FUNCTION {prefix}_acquire(lim text, sid integer, who text) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lease uuid := gen_random_uuid();
    found_id bigint;
BEGIN
    UPDATE pggcl.limit_state s SET held = s.held + 1
    WHERE s.name = lim AND s.active AND s.queued = 0 AND s.held + 1 <= s."limit"
    RETURNING s.id INTO found_id;
    INSERT INTO pggcl.leases (id, limit_id, occupy, session_id, holder, acquired_at)
    VALUES (lease, found_id, 1, sid, who, clock_timestamp());
    RETURN lease;
END
$$""",
    """CREATE FUNCTION {prefix}_release(lease uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    freed_id bigint;
BEGIN
    DELETE FROM pggcl.leases x WHERE x.id = lease RETURNING x.limit_id INTO freed_id;
    UPDATE pggcl.limit_state s SET held = s.held - 1 WHERE s.id = freed_id;
    RETURN FOUND;
END
$$""",
)


def _diagnostics(env: Env, table: str, seconds: float, rounds: int) -> list[Figure]:
    progress("A: diagnostics (SQL API through psycopg; the same row changes as plain SQL and in a"
             " minimal function)")  # fmt: skip
    name = env.create_limit("a", 1)
    minimal_acquire = f"SELECT {table}_acquire($1, $2, $3)"
    minimal_release = f"SELECT {table}_release($1)"
    try:
        for definition in MINIMAL_FUNCTIONS:
            env.sql(definition.format(prefix=table))
        return _run_diagnostics(env, table, name, minimal_acquire, minimal_release, seconds, rounds)
    finally:
        env.sql(f"DROP FUNCTION IF EXISTS {table}_acquire, {table}_release")


def _run_diagnostics(
    env: Env,
    table: str,
    name: str,
    minimal_acquire: str,
    minimal_release: str,
    seconds: float,
    rounds: int,
) -> list[Figure]:
    figures = []
    with connect(env.dsn) as floor_conn, connect(env.dsn) as conn:
        floor = _floor_op(floor_conn, table, 0)
        cur = conn.cursor()
        session = conn.execute("SELECT session_id FROM pggcl.open_session()").fetchone()
        assert session is not None

        def api() -> None:
            lease = uuid.uuid4()
            row = cur.execute(SQL_TAKE, (name, session[0], "bench", lease)).fetchone()
            assert row is not None and row[0]
            cur.execute(SQL_RELEASE, (lease,))

        def bare() -> None:
            row = cur.execute(BARE_ACQUIRE, (name, session[0], "bench")).fetchone()
            assert row is not None
            cur.execute(BARE_RELEASE, (row[0],))

        def minimal() -> None:
            row = cur.execute(minimal_acquire, (name, session[0], "bench")).fetchone()
            assert row is not None
            cur.execute(minimal_release, (row[0],))

        diagnostics = [
            ("SQL API through psycopg, no client", api),
            ("same row changes as plain SQL", bare),
            ("same row changes in a minimal SECURITY DEFINER function", minimal),
        ]
        for what, op in diagnostics:
            try:
                pair = _alternate(lambda op=op: _sync_rate([op], seconds),  # type: ignore[misc]
                                  lambda: _sync_rate([floor], seconds), rounds)  # fmt: skip
            except psycopg.Error as exc:  # the last two need rights on the private tables
                progress(f"A: skipped '{what}': {exc}")
                continue
            f = _figure(f"diagnostic: {what}, 1 client", *pair)
            f.target, f.ok = "", None
            figures.append(f)
    return figures
