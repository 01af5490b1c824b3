"""C: contended. A limit of 2 slots; 8 workers (4 processes of 2 threads, the module-level
``pggcl.sync.concurrency``) each hold a slot for 10 ms, again and again, for 15 s.

The ideal is 2 slots / 10 ms = 200 holds/s; the only loss should be the hand-off gap, from one
holder's body end (before its release) to the next holder's body start, each slot's
utilisation being 10 ms / (10 ms + gap). Holds are recorded on the system-wide monotonic
clock; the k-th hold to start took the slot freed by the (k-2)-th hold to end, which gives
the gaps. The figure is the median of the per-second rates. A diagnostic line splits the gap:
the release call alone (body end -> the ``with`` block has exited), the part of the gap spent
before the slot is even handed over.
"""

from __future__ import annotations

import os
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event, Semaphore

from bench._common import Env, Figure, median, percentile, processes, progress

ID = "C"
TITLE = "contended: 2 slots, 8 workers in 4 processes, 10 ms holds"
SLOTS, HOLD, PROCESSES, THREADS = 2, 0.010, 4, 2
IDEAL = SLOTS / HOLD
TARGET = 0.9


def run(env: Env) -> list[Figure]:
    seconds = env.size(15.0, 1.0)
    name = env.create_limit("c", SLOTS)
    progress(f"C: {PROCESSES * THREADS} workers for {seconds:g} s")
    ctx = processes()
    out: Queue[list[tuple[float, float, float]]] = ctx.Queue()
    ready, go, deadline = ctx.Semaphore(0), ctx.Event(), ctx.Value("d", 0.0)
    procs = [
        ctx.Process(target=_worker, args=(env.dsn, name, ready, go, deadline, out), daemon=True)
        for _ in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        assert ready.acquire(timeout=30), "a worker did not start"
    began = time.monotonic()
    deadline.value = began + seconds
    go.set()
    records = sorted(h for _ in procs for h in out.get(timeout=seconds + 60))
    for p in procs:
        p.join(10)
    end = began + seconds
    records = [r for r in records if r[0] < end]
    holds = [(start, body_end) for start, body_end, _ in records]
    releases = [(exited - body_end) * 1000 for _, body_end, exited in records]

    per_second = [
        sum(1 for s, _ in holds if began + i <= s < began + i + 1) for i in range(int(seconds))
    ]
    value = median(per_second)
    starts, ends = [s for s, _ in holds], sorted(e for _, e in holds)
    gaps = [(starts[k] - ends[k - SLOTS]) * 1000 for k in range(SLOTS, len(starts))]
    hold_ms = [(e - s) * 1000 for s, e in holds]
    held = sum(min(e, end) - s for s, e in holds)
    gap, hold = percentile(gaps, 50), median(hold_ms)
    details = {
        "holds": len(holds),
        "per_second": per_second,
        "gap_ms_p50": gap,
        "gap_ms_p99": percentile(gaps, 99),
        "hold_ms_median": hold,
        "slot_occupancy": held / (SLOTS * seconds),
        "predicted_by_gap": HOLD * 1000 / (HOLD * 1000 + gap),
        "release_ms_p50": percentile(releases, 50),
        "release_ms_p99": percentile(releases, 99),
    }
    progress(f"C: {value:g} holds/s; gap p50 {gap:.2f} ms, p99 {details['gap_ms_p99']:.2f} ms")
    return [
        Figure(
            ID, f"holds/s, median of {len(per_second)} 1-second windows", value, "/s", IDEAL,
            "ideal: 2 slots / 10 ms", value / IDEAL, f">= {TARGET}x ideal", value / IDEAL >= TARGET,
            runs=[float(n) for n in per_second], details=details,
        ),
        Figure(
            ID, "hand-off gap p50 (body end -> next body start)", gap, "ms",
            hold, "median hold (10 ms asked)",
            details=details,
        ),
        Figure(
            ID, "diagnostic: release call p50 (body end -> block exited)",
            details["release_ms_p50"], "ms", gap, "hand-off gap p50", details=details,
        ),
    ]  # fmt: skip


def _worker(
    dsn: str,
    name: str,
    ready: Semaphore,
    go: Event,
    deadline: Synchronized[float],
    out: Queue[list[tuple[float, float, float]]],
) -> None:
    os.environ["PGGCL_DSN"] = dsn
    from pggcl.sync import concurrency

    with concurrency(name):  # the session and the pool's first connection exist before timing
        pass
    holds: list[tuple[float, float, float]] = []
    lock = threading.Lock()

    def loop() -> None:
        mine = []
        while time.monotonic() < until:
            with concurrency(name):
                start = time.monotonic()
                time.sleep(HOLD)
                body_end = time.monotonic()
            mine.append((start, body_end, time.monotonic()))
        with lock:
            holds.extend(mine)

    ready.release()
    go.wait()
    until = deadline.value
    threads = [threading.Thread(target=loop) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(holds)
