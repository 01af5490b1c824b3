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
  the release), from the body-start times (``time.monotonic()``, one clock for the machine).
  Waiters granted at the same moment (the first release grants ``slots`` at once) may start
  in any order, so the order is kept when no waiter starts more than ``slots - 1`` places
  away from its queue position.

Connections: one sync client (one thread) holding a slot, and one async client with the
default ``pool_size`` while 100 of its tasks queue at once, counted in pg_stat_activity.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import astuple, dataclass
from multiprocessing.connection import Connection
from typing import Any

import pggcl
from bench._common import Env, Figure, median, processes, progress, rss_bytes, wait_for
from bench.g_scale import _activity as activity
from bench.g_scale import _with_application_name as with_application_name

__all__ = ["Sizes", "connections", "waiters", "with_application_name"]

ID = "H"
APP = "pggcl-bench-h-waiters"
POOL_SIZE = 2


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
        return cls(processes=2, per_process=10, limits=2, slots=2, hold=0.01, idle=0.5)

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
        with pggcl.Client(env.dsn) as client, client.concurrency(names, occupy=s.slots):
            for i in range(s.processes):
                ours, theirs = ctx.Pipe()
                proc = ctx.Process(target=_waiter_process, daemon=True,
                                   args=(dsn, i, astuple(s), names, warm, theirs))  # fmt: skip
                proc.start()
                pipes.append(ours)
                procs.append(proc)
            for pipe in pipes:
                assert pipe.recv() == "started"
            wait_for(lambda: _queued(env, names) == s.total, f"{s.total} waiters are queued",
                     timeout=600)  # fmt: skip
            used = _connections(env)
            before = activity(env)
            stats_before = _ask(pipes, "stats")
            time.sleep(s.idle)
            after = activity(env)
            stats_after = _ask(pipes, "stats")
            memory = _ask(pipes, "memory")
            server_pss = _server_pss(env)
            queue = env.sql("SELECT name, holder FROM pggcl.queue WHERE name = ANY($1::text[])"
                            " ORDER BY name, position", names)  # fmt: skip
            for pipe in pipes:
                pipe.send("drain")
        released = time.monotonic()  # the with block above released every slot
        records = [r for pipe in pipes for r in pipe.recv()]
        for proc in procs:
            proc.join(60)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    return _waiter_figures(s, used, before, after, stats_before, stats_after, memory,
                           server_pss, queue, released, records)  # fmt: skip


def _waiter_figures(
    s: Sizes,
    used: int,
    before: dict[str, int],
    after: dict[str, int],
    stats_before: list[dict[str, int]],
    stats_after: list[dict[str, int]],
    memory: list[tuple[int, int, int]],
    server_pss: int | None,
    queue: list[tuple[Any, ...]],
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
    per_limit: dict[str, list[tuple[float, str]]] = {}
    for holder, name, start, _ in records:
        per_limit.setdefault(name, []).append((start, holder))
    positions: dict[str, dict[str, int]] = {}
    for name, holder in queue:
        positions.setdefault(str(name), {})[str(holder)] = len(positions.get(str(name), {}))
    displacement = 0
    for name, starts in per_limit.items():
        for rank, (_, holder) in enumerate(sorted(starts)):
            displacement = max(displacement, abs(rank - positions[name].get(holder, -(10**9))))
    fifo = len(records) == s.total and displacement < s.slots
    most = max((len(v) for v in per_limit.values()), default=0)
    ideal = math.ceil(most / s.slots) * s.hold
    drain = max((end for *_, end in records), default=released) - released
    rate = len(records) / drain if drain > 0 else math.nan
    progress(
        f"H: {used} connections, {per_second:.1f} queries/s idle ({heartbeats} heartbeats),"
        f" RSS {rss_total:,.0f} MB (PSS {pss_total:,.0f} MB), grant order displacement"
        f" {displacement} (< {s.slots}: {'kept' if fifo else 'BROKEN'}), drained in {drain:.2f} s"
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
        Figure(ID, f"{what}: granted in queue order per limit", float(fifo), "",
               target=f"1 (no start more than {s.slots - 1} places off)", ok=fifo,
               details={"granted": len(records), "max_displacement": displacement}),
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
