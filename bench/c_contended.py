"""C: contended. A limit of 2 slots; 8 workers (4 processes of 2 threads, the module-level
``pggcl.sync.concurrency``) each hold a slot for 10 ms, again and again, for 15 s.

The ideal is 2 slots / 10 ms = 200 holds/s; the only loss should be the hand-off gap, from one
holder's body end (before its release) to the next holder's body start, each slot's
utilisation being 10 ms / (10 ms + gap). Holds are recorded on the system-wide monotonic
clock; the k-th hold to start took the slot freed by the (k-2)-th hold to end, which gives
the gaps. The figure is the median of the per-second rates. A diagnostic line splits the gap:
the release call alone (body end -> the ``with`` block has exited), the part of the gap spent
before the slot is even handed over.

Two floors, the same workers and holds on the same server, say what this machine allows:

- ``notify``: the least a hand-off by notification can be. A counting semaphore in two
  PL/pgSQL statements per call (a counter row and a FIFO table), the releaser notifying the
  head of the queue, and every waiting thread LISTENing on a connection of its own: no leases,
  no sessions, no shared listener.
- ``lock``: PostgreSQL's own lock manager. Each slot is an advisory lock; 4 workers block in
  ``pg_advisory_lock`` on each: the backend of the next waiter is woken by the unlock itself.

pggcl and the floors alternate in rounds, so that a change in the machine's load hits them
alike.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event, Semaphore

from bench._common import Env, Figure, connect, median, percentile, processes, progress

ID = "C"
TITLE = "contended: 2 slots, 8 workers in 4 processes, 10 ms holds"
SLOTS, HOLD, PROCESSES, THREADS = 2, 0.010, 4, 2
IDEAL = SLOTS / HOLD
TARGET = 0.9

#: (start, body end, block exited) of one hold, on the system-wide monotonic clock.
Hold = tuple[float, float, float]

# The notify floor's semaphore: {p} is a prefix of fresh object names. `v` is the free slots
# (negative: how many wait); the releaser pops the queue's head and notifies its channel.
FLOOR_SQL = """
CREATE TABLE {p}_sem (id integer PRIMARY KEY, v integer NOT NULL);
CREATE TABLE {p}_queue (id bigserial PRIMARY KEY, worker integer NOT NULL);
INSERT INTO {p}_sem VALUES (1, {slots});
CREATE FUNCTION {p}_acquire(me integer) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    free integer;
BEGIN
    UPDATE {p}_sem s SET v = s.v - 1 WHERE s.id = 1 RETURNING s.v INTO free;
    IF free >= 0 THEN
        RETURN true;
    END IF;
    INSERT INTO {p}_queue (worker) VALUES (me);
    RETURN false;
END
$$;
CREATE FUNCTION {p}_release() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    free integer;
    woken integer;
BEGIN
    UPDATE {p}_sem s SET v = s.v + 1 WHERE s.id = 1 RETURNING s.v INTO free;
    IF free <= 0 THEN
        WITH head AS (
            DELETE FROM {p}_queue WHERE id = (SELECT min(id) FROM {p}_queue) RETURNING worker
        )
        SELECT count(pg_notify('{p}_' || worker, '')) INTO woken FROM head;
    END IF;
END
$$;
"""
FLOOR_DROP = """
DROP FUNCTION {p}_acquire(integer);
DROP FUNCTION {p}_release();
DROP TABLE {p}_sem, {p}_queue;
"""
LOCK_KEY = 7_426_610  # + slot number: the lock floor's advisory locks

KINDS = ("pggcl", "notify", "lock")


def run(env: Env) -> list[Figure]:
    seconds, rounds = env.size(5.0, 1.0), env.count(3, 1)
    name = env.create_limit("c", SLOTS)
    prefix = f"pggcl_bench_c_{name.rsplit('-', 1)[1]}"
    env.sql(FLOOR_SQL.format(p=prefix, slots=SLOTS))
    windows: dict[str, list[int]] = {k: [] for k in KINDS}
    holds: list[list[Hold]] = []  # pggcl's, per round
    try:
        for r in range(rounds):
            for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
                progress(f"C: {kind}, round {r + 1} of {rounds}: {PROCESSES * THREADS} workers "
                         f"for {seconds:g} s")  # fmt: skip
                target = _worker if kind == "pggcl" else _floor_worker
                args = (name,) if kind == "pggcl" else (kind, prefix)
                began, records = _round(env.dsn, target, args, seconds)
                records = [h for h in records if h[0] < began + seconds]
                windows[kind] += [
                    sum(1 for s, _, _ in records if began + i <= s < began + i + 1)
                    for i in range(int(seconds))
                ]
                if kind == "pggcl":
                    holds.append(records)
    finally:
        env.sql(FLOOR_DROP.format(p=prefix))

    # The k-th hold to start in a round took the slot freed by the (k-2)-th to end.
    gaps = []
    for records in holds:
        starts, ends = [s for s, _, _ in records], sorted(e for _, e, _ in records)
        gaps += [(starts[k] - ends[k - SLOTS]) * 1000 for k in range(SLOTS, len(starts))]
    hold_ms = [(e - s) * 1000 for records in holds for s, e, _ in records]
    releases = [(x - e) * 1000 for records in holds for _, e, x in records]
    value, notify, lock = (median(windows[k]) for k in KINDS)
    gap, hold, release = percentile(gaps, 50), median(hold_ms), percentile(releases, 50)
    details = {
        "holds": len(hold_ms),
        "per_second": windows["pggcl"],
        "floor_per_second": {"notify": windows["notify"], "lock": windows["lock"]},
        "gap_ms_p50": gap,
        "gap_ms_p99": percentile(gaps, 99),
        "gap_ms_mean": sum(gaps) / len(gaps) if gaps else None,
        "hold_ms_median": hold,
        "predicted_by_gap": HOLD * 1000 / (HOLD * 1000 + gap),
        "release_ms_p50": release,
        "release_ms_p99": percentile(releases, 99),
        "notify_floor_vs_ideal": notify / IDEAL,
        "lock_floor_vs_ideal": lock / IDEAL,
    }
    progress(
        f"C: {value:g} holds/s (floors: notify {notify:g}, lock {lock:g}); "
        f"gap p50 {gap:.2f} ms, p99 {details['gap_ms_p99']:.2f} ms"
    )
    return [
        Figure(
            ID, f"holds/s, median of {len(windows['pggcl'])} 1-second windows", value, "/s", IDEAL,
            "ideal: 2 slots / 10 ms", value / IDEAL, f">= {TARGET}x ideal", value / IDEAL >= TARGET,
            runs=[float(n) for n in windows["pggcl"]], details=details,
        ),
        Figure(
            ID, "hand-off gap p50 (body end -> next body start)", gap, "ms",
            hold, "median hold (10 ms asked)",
            details=details,
        ),
        Figure(
            ID, "diagnostic: release call p50 (body end -> block exited)",
            release, "ms", gap, "hand-off gap p50", details=details,
        ),
        Figure(
            ID, "diagnostic: holds/s beside the least a NOTIFY hand-off can be", value, "/s",
            notify, f"floor: 2-statement semaphore ({notify / IDEAL:.2f}x ideal)", value / notify,
            details=details,
        ),
        Figure(
            ID, "diagnostic: holds/s beside PostgreSQL's lock manager", value, "/s",
            lock, f"floor: pg_advisory_lock ({lock / IDEAL:.2f}x ideal)", value / lock,
            details=details,
        ),
    ]  # fmt: skip


def _round(
    dsn: str, target: Callable[..., None], args: tuple[str, ...], seconds: float
) -> tuple[float, list[Hold]]:
    """Run the workers of one kind for ``seconds``; returns the start time and their holds."""
    ctx = processes()
    out: Queue[list[Hold]] = ctx.Queue()
    ready, go, deadline = ctx.Semaphore(0), ctx.Event(), ctx.Value("d", 0.0)
    procs = [
        ctx.Process(target=target, args=(dsn, p, *args, ready, go, deadline, out), daemon=True)
        for p in range(PROCESSES)
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
    return began, records


def _threads(
    loops: list[Callable[[], list[Hold]]], ready: Semaphore, go: Event, out: Queue[list[Hold]]
) -> None:
    """Run each loop in a thread of its own, once ``go`` is set; put all their holds."""
    holds: list[Hold] = []
    lock = threading.Lock()

    def run(loop: Callable[[], list[Hold]]) -> None:
        mine = loop()
        with lock:
            holds.extend(mine)

    ready.release()
    go.wait()
    threads = [threading.Thread(target=run, args=(loop,)) for loop in loops]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(holds)


def _worker(
    dsn: str,
    process: int,
    name: str,
    ready: Semaphore,
    go: Event,
    deadline: Synchronized[float],
    out: Queue[list[Hold]],
) -> None:
    os.environ["PGGCL_DSN"] = dsn
    from pggcl.sync import concurrency

    with concurrency(name):  # the session and the pool's first connection exist before timing
        pass

    def loop() -> list[Hold]:
        mine, until = [], deadline.value
        while time.monotonic() < until:
            with concurrency(name):
                start = time.monotonic()
                time.sleep(HOLD)
                body_end = time.monotonic()
            mine.append((start, body_end, time.monotonic()))
        return mine

    _threads([loop] * THREADS, ready, go, out)


def _floor_worker(
    dsn: str,
    process: int,
    kind: str,
    prefix: str,
    ready: Semaphore,
    go: Event,
    deadline: Synchronized[float],
    out: Queue[list[Hold]],
) -> None:
    def notify_loop(me: int) -> Callable[[], list[Hold]]:
        conn, listener = connect(dsn), connect(dsn)
        listener.execute(f"LISTEN {prefix}_{me}")

        def acquire() -> None:
            row = conn.execute(f"SELECT {prefix}_acquire($1)", (me,)).fetchone()
            if not (row and row[0]):
                for _ in listener.notifies(stop_after=1):
                    pass

        def release() -> None:
            conn.execute(f"SELECT {prefix}_release()")

        return lambda: _floor_holds(deadline.value, acquire, release)

    def lock_loop(me: int) -> Callable[[], list[Hold]]:
        conn = connect(dsn)
        key = LOCK_KEY + me % SLOTS  # 4 workers on each slot

        def acquire() -> None:
            conn.execute("SELECT pg_advisory_lock($1)", (key,))

        def release() -> None:
            conn.execute("SELECT pg_advisory_unlock($1)", (key,))

        return lambda: _floor_holds(deadline.value, acquire, release)

    make = notify_loop if kind == "notify" else lock_loop
    _threads([make(process * THREADS + t) for t in range(THREADS)], ready, go, out)


def _floor_holds(
    until: float, acquire: Callable[[], None], release: Callable[[], None]
) -> list[Hold]:
    """A floor worker's loop: the same holds as pggcl's workers, around its acquire and
    release."""
    mine = []
    while time.monotonic() < until:
        acquire()
        start = time.monotonic()
        time.sleep(HOLD)
        body_end = time.monotonic()
        release()
        mine.append((start, body_end, time.monotonic()))
    return mine
