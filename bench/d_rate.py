"""D: rate limit. A limit of 5 slots decaying at 10/s; 4 worker processes call the
module-level ``pggcl.sync.rate_limit`` in a loop for 20 s.

After the first burst (the empty bucket lets 5 through at once), calls should go out at the
decay rate, 10/s: the figure is the median of the rates of 4 consecutive parts of the run
(each part: calls - 1 over the time from its first to its last call). No window of 1 second
may hold more than limit + decay = 15 calls.
"""

from __future__ import annotations

import itertools
import os
import time
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event, Semaphore

from bench._common import Env, Figure, median, processes, progress

ID = "D"
TITLE = "rate limit: limit 5, decay 10/s, 4 workers"
LIMIT, DECAY, WORKERS, PARTS = 5, 10.0, 4, 4
TOLERANCE = 0.02


def run(env: Env) -> list[Figure]:
    seconds = env.size(20.0, 1.5)
    name = env.create_limit("d", LIMIT, DECAY)
    warm = env.create_limit("d-warm", 1000, 1000.0)
    progress(f"D: {WORKERS} workers for {seconds:g} s")
    ctx = processes()
    out: Queue[list[float]] = ctx.Queue()
    ready, go, deadline = ctx.Semaphore(0), ctx.Event(), ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_worker, args=(env.dsn, name, warm, ready, go, deadline, out), daemon=True
        )
        for _ in range(WORKERS)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        assert ready.acquire(timeout=30), "a worker did not start"
    deadline.value = time.monotonic() + seconds
    go.set()
    calls = sorted(t for _ in procs for t in out.get(timeout=seconds + 60))
    for p in procs:
        p.join(10)

    steady = calls[LIMIT:]
    bounds = [round(i * (len(steady) - 1) / PARTS) for i in range(PARTS + 1)]
    parts = [steady[a : b + 1] for a, b in itertools.pairwise(bounds)]
    rates = [(len(p) - 1) / (p[-1] - p[0]) for p in parts if len(p) > 1 and p[-1] > p[0]]
    value = median(rates)
    overall = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0
    busiest = _busiest_second(calls)
    progress(f"D: {value:.3f} calls/s; busiest second {busiest} calls")
    close = abs(value - DECAY) <= TOLERANCE * DECAY
    return [
        Figure(
            ID, f"calls/s after the first burst, median of {len(rates)} parts", value, "/s",
            DECAY, "configured decay", value / DECAY, f"within {TOLERANCE:.0%} of 10/s", close,
            runs=rates, details={"calls": len(calls), "overall_rate": overall},
        ),
        Figure(
            ID, "most calls in any 1-second window", float(busiest), "calls",
            LIMIT + DECAY, "limit + decay x 1 s", busiest / (LIMIT + DECAY), "<= 15",
            busiest <= LIMIT + DECAY,
        ),
    ]  # fmt: skip


def _busiest_second(times: list[float]) -> int:
    """The most calls within any window of 1 second (a window [t, t + 1) starting at a call)."""
    best, j = 0, 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + 1.0:
            j += 1
        best = max(best, j - i)
    return best


def _worker(
    dsn: str,
    name: str,
    warm: str,
    ready: Semaphore,
    go: Event,
    deadline: Synchronized[float],
    out: Queue[list[float]],
) -> None:
    os.environ["PGGCL_DSN"] = dsn
    from pggcl.sync import rate_limit

    rate_limit(warm)  # the session and a pool connection exist before timing starts
    ready.release()
    go.wait()
    until, calls = deadline.value, []
    while time.monotonic() < until:
        rate_limit(name)
        calls.append(time.monotonic())
    out.put([t for t in calls if t <= until])
