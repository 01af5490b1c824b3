"""H, part two: waiters at scale and the connections a client process uses (issue #19,
points 3-4). Run by bench/h_capacity.py.

Waiters: this process holds every slot of ``limits`` limits (``slots`` each, one multi-limit
acquire); ``processes`` child processes, each one ``pggcl.AsyncClient`` with ``pool_size=2``,
start ``per_process`` waiter tasks each, spread over the limits round-robin
(``concurrency(name, holder="p003w042")``). Once every waiter is queued: the children's server
connections (by application_name), the server's queries while they wait idle
(pg_stat_statements calls, else xact_commit), and the children's memory (RSS and PSS). Then
this process releases, every waiter holds ``hold`` seconds and leaves, and:

- the drain time: the release -> the last waiter's body end, beside the ideal
  ``ceil(waiters per limit / slots) * hold`` (each limit's slots busy all the time);
- the grant order, per limit, against the engine's queue order (``pggcl.queue``, read before
  the release): a thread reads ``pggcl.holders`` every 20 ms while they drain, and the leases'
  ``since`` (the server's clock in the granting transaction, taken under the limit's row lock)
  ordered by time must never go down in queue position (grants of one transaction share
  their time). The largest distance between a waiter's body-start rank (``time.monotonic()``,
  one clock for the machine) and its queue position is given beside it: the clients' view,
  where waiters granted at nearly the same moment may wake in either order.

Connections: one sync client (one thread) holding a slot, and one async client with the
default ``pool_size`` while 100 of its tasks queue at once, counted in pg_stat_activity.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import threading
import time
from dataclasses import asdict, astuple, dataclass
from multiprocessing.connection import Connection
from typing import Any

import psycopg

import pggcl
from bench._common import Env, Figure, connect, median, processes, progress, rss_bytes, wait_for
from bench.g_scale import _activity as activity
from bench.g_scale import _with_application_name as with_application_name

__all__ = ["Sizes", "connections", "waiters", "with_application_name"]

ID = "H"
APP = "pggcl-bench-h-waiters"
POOL_SIZE = 2
QUEUE = "SELECT name, holder FROM pggcl.queue WHERE name = ANY($1) ORDER BY name, position"


@dataclass(frozen=True)
class Sizes:
    processes: int
    per_process: int
    limits: int
    slots: int
    hold: float  # seconds each waiter holds once granted
    idle: float  # seconds the queued waiters are watched idle

    @classmethod
    def full(cls) -> Sizes:
        return cls(processes=100, per_process=100, limits=10, slots=10, hold=0.1, idle=5.0)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(processes=2, per_process=10, limits=2, slots=2, hold=0.05, idle=0.5)

    @property
    def total(self) -> int:
        return self.processes * self.per_process

    def connections_needed(self) -> int:
        return self.processes * (1 + POOL_SIZE) + 10


# --- Waiters at scale ---------------------------------------------------------------------


def waiters(env: Env, sizes: Sizes) -> list[Figure]:
    s = sizes
    progress(f"H: {s.total:,} waiters in {s.processes} processes on {s.limits} limits "
             f"({s.slots} slots each, hold {s.hold:g} s); {s.idle:g} s idle")  # fmt: skip
    names = [env.create_limit("h-wait", s.slots) for _ in range(s.limits)]
    warm = env.create_limit("h-warm", 1_000_000)
    dsn = with_application_name(env.dsn, APP)
    ctx = processes()
    pipes: list[Connection] = []
    procs: list[Any] = []
    try:
        with pggcl.Client(env.dsn) as client:
            with client.concurrency(names, occupy=s.slots):
                for i in range(s.processes):
                    ours, theirs = ctx.Pipe()
                    proc = ctx.Process(
                        target=_waiter_process,
                        daemon=True,
                        args=(dsn, i, astuple(s), names, warm, theirs),
                    )
                    proc.start()
                    pipes.append(ours)
                    procs.append(proc)
                for pipe in pipes:
                    assert pipe.recv() == "started"
                everyone = f"{s.total} waiters are queued"
                wait_for(lambda: _queued(env, names) == s.total, everyone, timeout=600)
                used = _connections(env)
                before = activity(env)
                stats_before = _ask(pipes, "stats")
                time.sleep(s.idle)
                after = activity(env)
                stats_after = _ask(pipes, "stats")
                memory = _ask(pipes, "memory")
                server_pss = _server_pss(env)
                queue = env.sql(QUEUE, names)
                for pipe in pipes:
                    pipe.send("drain")
                watcher = _GrantWatcher(env.dsn, names)
            released = time.monotonic()  # the block above released every slot
            records = [r for pipe in pipes for r in pipe.recv()]
        grants = watcher.stop()
        for proc in procs:
            proc.join(60)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    order = _grant_order(s, queue, grants, records)
    return _waiter_figures(s, used, before, after, stats_before, stats_after, memory,
                           server_pss, order, released, records)  # fmt: skip


class _GrantWatcher(threading.Thread):
    """Reads the leases of ``names`` every 20 ms while the waiters drain: each one's limit,
    holder and the commit time of the transaction that granted it (``track_commit_timestamp``;
    grants of one limit commit in the order they took its row lock, and those of one
    transaction share the time). A lease lives ``hold`` seconds, so a reading every 20 ms sees
    each one of 0.1 s several times. Without commit times (the setting is off, or no right to
    read pggcl's tables) it reads nothing and the order is judged from the clients' view."""

    QUERY = (
        "SELECT l.name, le.holder, pg_xact_commit_timestamp(le.xmin) FROM pggcl.leases le"
        " JOIN pggcl.limit_state l ON l.id = le.limit_id WHERE l.name = ANY($1::text[])"
    )

    def __init__(self, dsn: str, names: list[str]) -> None:
        super().__init__(daemon=True)
        self.conn = connect(dsn)
        self.names = names
        self.seen: dict[tuple[str, str], Any] = {}
        self.done = threading.Event()
        try:
            row = self.conn.execute("SHOW track_commit_timestamp").fetchone()
            self.conn.execute(self.QUERY, ([],))
            self.works = row is not None and row[0] == "on"
        except psycopg.Error:
            self.works = False
        if self.works:
            self.start()

    def run(self) -> None:
        while not self.done.wait(0.02):  # a sampling interval, not a synchronisation
            for name, holder, at in self.conn.execute(self.QUERY, (self.names,)).fetchall():
                self.seen.setdefault((str(name), str(holder)), at)

    def stop(self) -> dict[tuple[str, str], Any] | None:
        self.done.set()
        if self.works:
            self.join()
        self.conn.close()
        return self.seen if self.works else None


@dataclass
class _Order:
    fifo: bool
    how: str  # what the verdict rests on
    seen: int  # grants the watcher saw, of every waiter's
    inversions: int  # grants committed before one queued ahead of them
    displacement: int  # largest |body-start rank - queue position| (the clients' view)


def _grant_order(
    s: Sizes,
    queue: list[tuple[Any, ...]],
    grants: dict[tuple[str, str], Any] | None,
    records: list[tuple[str, str, float, float]],
) -> _Order:
    """FIFO per limit: ordered by the commit time of their grants (ties: one transaction), the
    queue positions never go down. Without commit times: no waiter's body starts ``slots`` or
    more places from its queue position (waiters granted together may wake in any order)."""
    positions: dict[str, dict[str, int]] = {}
    for name, holder in queue:
        at = positions.setdefault(str(name), {})
        at[str(holder)] = len(at)
    starts: dict[str, list[tuple[float, str]]] = {}
    for holder, name, start, _ in records:
        starts.setdefault(name, []).append((start, holder))
    displacement = max((abs(rank - positions[n].get(h, -(10**9)))
                        for n, v in starts.items() for rank, (_, h) in enumerate(sorted(v))),
                       default=0)  # fmt: skip
    everyone = len(records) == s.total
    if grants is None:
        fifo = everyone and displacement < s.slots
        return _Order(fifo, f"body starts < {s.slots} places off", 0, 0, displacement)
    inversions = seen = 0
    for name, at in positions.items():
        granted = sorted((t, at[h]) for (n, h), t in grants.items() if n == name and h in at)
        seen += len(granted)
        inversions += sum(1 for a, b in itertools.pairwise(granted) if a[1] > b[1] and a[0] < b[0])
    return _Order(everyone and inversions == 0, "commit order", seen, inversions, displacement)


def _waiter_figures(
    s: Sizes,
    used: int,
    before: dict[str, int],
    after: dict[str, int],
    stats_before: list[dict[str, int]],
    stats_after: list[dict[str, int]],
    memory: list[tuple[int, int, int]],
    server_pss: int | None,
    order: _Order,
    released: float,
    records: list[tuple[str, str, float, float]],
) -> list[Figure]:
    queries = {q: after.get(q, 0) - before.get(q, 0) for q in after}
    queries = {q: c for q, c in queries.items() if c > 0}
    per_second = sum(queries.values()) / s.idle
    heartbeats = sum(a["heartbeats"] - b["heartbeats"]
                     for a, b in zip(stats_after, stats_before, strict=True))  # fmt: skip
    growth_mb = [(rss - base) / 2**20 for base, rss, _ in memory]
    rss_total = sum(rss for _, rss, _ in memory) / 2**20
    pss_total = sum(pss for _, _, pss in memory) / 2**20
    per_limit: dict[str, int] = {}
    for _, name, _, _ in records:
        per_limit[name] = per_limit.get(name, 0) + 1
    most = max(per_limit.values(), default=0)
    ideal = math.ceil(most / s.slots) * s.hold
    drain = max((end for *_, end in records), default=released) - released
    rate = len(records) / drain if drain > 0 else math.nan
    progress(
        f"H: {used} connections, {per_second:.1f} queries/s idle ({heartbeats} heartbeats),"
        f" RSS {rss_total:,.0f} MB (PSS {pss_total:,.0f} MB), grant order"
        f" {'kept' if order.fifo else 'BROKEN'} by {order.how} ({order.seen} grants seen,"
        f" {order.inversions} inversions; body starts up to {order.displacement} places off),"
        f" drained in {drain:.2f} s"
        f" (ideal {ideal:.2f} s, {rate:,.0f} hand-offs/s)"
    )
    what = f"{s.total:,} waiters, {s.processes} processes, {s.limits} limits"
    return [
        Figure(ID, f"{what}: server connections (pool_size={POOL_SIZE})", used, "",
               target=f"<= {s.processes * (1 + POOL_SIZE)} (1 + pool_size a process)",
               ok=used <= s.processes * (1 + POOL_SIZE),
               details={"per_process": used / s.processes}),
        Figure(ID, f"{what}: queries/s while they wait idle (server-wide)", per_second, "/s",
               s.processes / 2.0, "heartbeats: 1 a process every 2 s",
               ratio=per_second / (s.processes / 2.0),
               details={"queries": queries, "heartbeats_counted": heartbeats,
                        "idle_seconds": s.idle}),
        Figure(ID, f"{what}: client memory, PSS of all processes", pss_total, "MB",
               details={"rss_total_mb": rss_total, "rss_growth_mb_median": median(growth_mb),
                        "rss_growth_mb_max": max(growth_mb, default=math.nan),
                        "server_backends_pss_mb": server_pss and server_pss / 2**20}),
        Figure(ID, f"{what}: granted in queue order per limit", float(order.fifo), "",
               target=f"1 (FIFO: {order.how})", ok=order.fifo,
               details={"granted": len(records), **asdict(order)}),
        Figure(ID, f"{what}: time to drain once the slots free", drain, "s", ideal,
               f"ideal: {s.slots} slots x {s.hold:g} s holds", ideal / drain if drain else None,
               details={"handoffs_per_second": rate}),
    ]  # fmt: skip


def _ask(pipes: list[Connection], what: str) -> list[Any]:
    for pipe in pipes:
        pipe.send(what)
    return [pipe.recv() for pipe in pipes]


def _queued(env: Env, names: list[str]) -> int:
    rows = env.sql("SELECT coalesce(sum(waiting), 0) FROM pggcl.limits"
                   " WHERE name = ANY($1::text[])", names)  # fmt: skip
    return int(rows[0][0])


def _connections(env: Env, app: str = APP) -> int:
    rows = env.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app)
    return int(rows[0][0])


def pss_bytes(pid: int) -> int:
    """Proportional set size of a process (shared pages divided among their users)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _server_pss(env: Env) -> int | None:
    """PSS of the waiters' server backends, when the server runs on this machine."""
    rows = env.sql("SELECT pid FROM pg_stat_activity WHERE application_name = $1", APP)
    try:
        return sum(pss_bytes(int(pid)) for (pid,) in rows)
    except OSError:
        return None


def _waiter_process(
    dsn: str, index: int, sizes: tuple[Any, ...], names: list[str], warm: str, pipe: Connection
) -> None:
    asyncio.run(_waiter_main(dsn, index, Sizes(*sizes), names, warm, pipe))


async def _waiter_main(
    dsn: str, index: int, s: Sizes, names: list[str], warm: str, pipe: Connection
) -> None:
    loop = asyncio.get_running_loop()
    records: list[tuple[str, str, float, float]] = []
    async with pggcl.AsyncClient(dsn, pool_size=POOL_SIZE) as client:
        async with client.concurrency(warm):  # the session and the pool exist
            pass
        base = rss_bytes()

        async def one(i: int) -> None:
            name = names[(index * s.per_process + i) % len(names)]
            holder = f"p{index:03d}w{i:03d}"
            async with client.concurrency(name, holder=holder, timeout_seconds=1800):
                start = time.monotonic()
                await asyncio.sleep(s.hold)
                records.append((holder, name, start, time.monotonic()))

        tasks = [asyncio.create_task(one(i)) for i in range(s.per_process)]
        pipe.send("started")
        while (message := await loop.run_in_executor(None, pipe.recv)) != "drain":
            if message == "stats":
                stats = client.stats
                pipe.send({"statements": stats.calls, "heartbeats": stats.heartbeats})
            else:
                pipe.send((base, rss_bytes(), pss_bytes(os.getpid())))
        await asyncio.gather(*tasks)
    pipe.send(records)


# --- Connections of one process -----------------------------------------------------------


def connections(env: Env) -> list[Figure]:
    """What one client process uses today, counted in pg_stat_activity."""
    name = env.create_limit("h-conn", 1)
    app = f"{APP}-sync"
    with pggcl.Client(with_application_name(env.dsn, app)) as client, client.concurrency(name):
        sync_holding = _connections(env, app)
    tasks = 100
    async_queuing = asyncio.run(_async_queuing(env, name, tasks))
    progress(f"H: connections: a sync client holding a slot {sync_holding}; an async client with"
             f" the default pool while {tasks} tasks queue {async_queuing}")  # fmt: skip
    return [
        Figure(ID, "connections of one process: sync client, one thread holding a slot",
               sync_holding, "", target="session + 1 pool connection",
               details={"least_if_the_session_connection_carried_calls": 1}),
        Figure(ID, f"connections of one process: async client, default pool_size, {tasks} tasks"
               " queuing at once", async_queuing, "", target="session + up to pool_size"),
    ]  # fmt: skip


async def _async_queuing(env: Env, name: str, tasks: int) -> int:
    app = f"{APP}-async"
    loop = asyncio.get_running_loop()
    with pggcl.Client(env.dsn) as holder:
        held = holder.concurrency(name)
        held.__enter__()
        try:
            async with pggcl.AsyncClient(with_application_name(env.dsn, app)) as client:

                async def one() -> None:
                    async with client.concurrency(name, timeout_seconds=600):
                        pass

                waiting = [asyncio.create_task(one()) for _ in range(tasks)]
                while await loop.run_in_executor(None, _queued, env, [name]) < tasks:
                    await asyncio.sleep(0.01)  # setup, not a timed section
                used = await loop.run_in_executor(None, _connections, env, app)
                await loop.run_in_executor(None, held.__exit__, None, None, None)
                await asyncio.gather(*waiting)
                return used
        finally:
            held.__exit__(None, None, None)  # a second release is a no-op
