"""B: hand-off latency. A limit of 1 slot; this process holds it while a waiter in another
process is blocked in ``concurrency()``; the holder releases.

Latency = the waiter's ``time.monotonic()`` when its ``with`` body starts minus the holder's
right after ``release()`` returned (the release has committed by then). ``time.monotonic`` is
one system-wide clock on Linux, so the two processes' readings compare. Baseline, interleaved
with every repetition between the same two processes: a bare LISTEN/NOTIFY round trip
(``pg_notify`` returned -> the listener has the notification), through the same driver.
"""

from __future__ import annotations

import asyncio
import time
from multiprocessing.connection import Connection
from typing import Any

import asyncpg

import pggcl
from bench._common import (
    Env,
    Figure,
    connect,
    median,
    percentile,
    processes,
    progress,
    ratio,
    wait_for,
)

ID = "B"
TITLE = "hand-off: release -> the waiter in another process starts"
TARGETS = ((50, 2.0), (99, 10.0))  # percentile, milliseconds
SETTLE = 0.02  # seconds the waiter is left blocked before the release: it is idle, not busy
CHANNEL = "pggcl_bench_b"


def run(env: Env) -> list[Figure]:
    reps = env.count(200, 5)
    figures = []
    for driver in ("sync", "async"):
        handoff, notify = _measure(env, driver, reps)
        for p, target in TARGETS:
            value, base = percentile(handoff, p), percentile(notify, p)
            figures.append(Figure(
                ID, f"{driver}: hand-off p{p}, {reps} repetitions", value, "ms", base,
                "LISTEN/NOTIFY round trip", ratio(value, base), f"<= {target:g} ms",
                value <= target, runs=handoff if p == 50 else [],
                details={"notify_runs": notify} if p == 50 else {},
            ))  # fmt: skip
    return figures


def _measure(env: Env, driver: str, reps: int) -> tuple[list[float], list[float]]:
    progress(f"B: {driver} waiter, {reps} repetitions")
    name = env.create_limit("b", 1)
    ours, theirs = processes().Pipe()
    target = _sync_waiter if driver == "sync" else _async_waiter
    child = processes().Process(target=target, args=(env.dsn, name, theirs), daemon=True)
    child.start()
    handoff: list[float] = []
    notify: list[float] = []
    try:
        assert ours.recv() == "ready"
        with pggcl.Client(env.dsn) as client, connect(env.dsn) as poll:

            def queued() -> bool:
                row = poll.execute(
                    "SELECT waiting FROM pggcl.limits WHERE name = $1", (name,)
                ).fetchone()
                return row is not None and row[0] == 1

            for _ in range(reps):
                # The baseline: the child blocks on its LISTEN connection; we notify.
                ours.send("notify")
                assert ours.recv() == "listening"
                time.sleep(SETTLE)
                poll.execute("SELECT pg_notify($1, 'x')", (CHANNEL,))
                sent = time.monotonic()
                notify.append((ours.recv() - sent) * 1000)
                # pggcl: we hold the slot, the child queues for it, we release.
                with client.concurrency(name):
                    ours.send("acquire")
                    wait_for(queued, "the waiter is queued")
                    time.sleep(SETTLE)
                released = time.monotonic()
                handoff.append((ours.recv() - released) * 1000)
        ours.send("stop")
        child.join(10)
    finally:
        if child.is_alive():
            child.kill()
    progress(
        f"B: {driver} hand-off p50 {median(handoff):.2f} ms, notify p50 {median(notify):.2f} ms"
    )
    return handoff, notify


def _sync_waiter(dsn: str, name: str, pipe: Connection) -> None:
    with pggcl.Client(dsn) as client, connect(dsn) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        pipe.send("ready")
        while (command := pipe.recv()) != "stop":
            if command == "notify":
                pipe.send("listening")
                for _ in listener.notifies(stop_after=1):
                    pipe.send(time.monotonic())
            else:
                with client.concurrency(name):
                    pipe.send(time.monotonic())


def _async_waiter(dsn: str, name: str, pipe: Connection) -> None:
    asyncio.run(_async_waiter_main(dsn, name, pipe))


async def _async_waiter_main(dsn: str, name: str, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[float] = asyncio.Queue()

    def on_notify(*_: Any) -> None:
        arrived.put_nowait(time.monotonic())

    listener = await asyncpg.connect(dsn)
    await listener.add_listener(CHANNEL, on_notify)
    async with pggcl.AsyncClient(dsn) as client:
        pipe.send("ready")
        while (command := await loop.run_in_executor(None, pipe.recv)) != "stop":
            if command == "notify":
                pipe.send("listening")
                pipe.send(await arrived.get())
            else:
                async with client.concurrency(name):
                    pipe.send(time.monotonic())
    await listener.close()
