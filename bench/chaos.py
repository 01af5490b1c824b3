"""Chaos: many worker processes share concurrency and rate limits while the server restarts,
crashes, loses connections and workers are SIGKILLed; does every limit still hold?

    python -m bench.chaos --minutes 10
    python -m bench.chaos --seconds 60 --workers 8

It starts its own throwaway PostgreSQL (TempPostgres, fsync off but synchronous_commit on, so
that a crash keeps every committed grant), installs pggcl, creates the limits, and starts the
workers (half `pggcl.Client`, half `pggcl.AsyncClient`): each loops over `concurrency()`
blocks of 5-20 ms (timeout 10 s) and `rate_limit()` calls, recording every hold interval on
`time.monotonic()` (one clock for all processes of the machine) in a file of its own, line by
line, so that a SIGKILL loses nothing already held. The first third of the run is calm; then
every few seconds one fault: `restart("fast")`, `restart("immediate")`, pg_terminate_backend
of random client connections, SIGKILL of a random worker (started again).

It prints the most slots held at once per limit against the limit (a killed worker's hold
counts until its kill), the errors that reached user code (type, message, the fault before
them), acquisitions per second calm and faulty, the leases and waiters left once the grace
has passed after the workers stopped, and the size of pggcl's tables before and after. Exit
status 1 when a limit was exceeded or anything was left held or queued; errors alone do not
fail it (they are reported).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

import pggcl
from pggcl import schema
from pggcl.testing import TempPostgres

#: name -> (limit, slot_decay_per_second)
CONCURRENCY = {"chaos-one": 1, "chaos-two": 2, "chaos-three": 3}
RATE = {"chaos-rate": (5, 20.0)}
GRACE = 5.0
HEARTBEAT = 1.0
FAULTS = ("restart-fast", "restart-immediate", "terminate-connections", "kill-worker")
SETTINGS = {
    "synchronous_commit": "on",  # a crash (restart immediate) must keep committed grants
    "max_connections": "300",
    "autovacuum_naptime": "5s",
}
TABLES = ("limit_state", "leases", "waiters", "sessions")


# --- workers ------------------------------------------------------------------------------


def _plan(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.25:
        return "rate", next(iter(RATE))
    return "hold", rng.choice(list(CONCURRENCY))


def _record(out: Any, *fields: Any) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


def _worker(dsn: str, index: int, incarnation: int, stop_file: str, path: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("pggcl").setLevel(logging.ERROR)  # the clients' reconnect warnings
    rng = random.Random(index * 1000 + incarnation)
    stop = Path(stop_file)
    with open(path, "a") as out:
        _record(out, "ready", index, time.monotonic())
        if index % 2:
            asyncio.run(_async_worker(dsn, rng, stop, out))
        else:
            _sync_worker(dsn, rng, stop, out)


def _sync_worker(dsn: str, rng: random.Random, stop: Path, out: Any) -> None:
    with pggcl.Client(dsn, grace_seconds=GRACE, heartbeat_seconds=HEARTBEAT) as client:
        while not stop.exists():
            kind, name = _plan(rng)
            try:
                if kind == "rate":
                    client.rate_limit(name, timeout_seconds=10)
                    _record(out, "rate", name, time.monotonic())
                else:
                    with client.concurrency(name, timeout_seconds=10):
                        start = time.monotonic()
                        _record(out, "start", name, start)
                        time.sleep(rng.uniform(0.005, 0.02))
                        end = time.monotonic()
                    _record(out, "hold", name, start, end)
            except Exception as exc:
                _record(out, "error", type(exc).__name__, str(exc)[:200], time.monotonic())


async def _async_worker(dsn: str, rng: random.Random, stop: Path, out: Any) -> None:
    async with pggcl.AsyncClient(dsn, grace_seconds=GRACE, heartbeat_seconds=HEARTBEAT) as client:
        while not stop.exists():
            kind, name = _plan(rng)
            try:
                if kind == "rate":
                    await client.rate_limit(name, timeout_seconds=10)
                    _record(out, "rate", name, time.monotonic())
                else:
                    async with client.concurrency(name, timeout_seconds=10):
                        start = time.monotonic()
                        _record(out, "start", name, start)
                        await asyncio.sleep(rng.uniform(0.005, 0.02))
                        end = time.monotonic()
                    _record(out, "hold", name, start, end)
            except Exception as exc:
                _record(out, "error", type(exc).__name__, str(exc)[:200], time.monotonic())


# --- the run ------------------------------------------------------------------------------


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (at a tie, ends before starts)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


def _table_sizes(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {
            t: int(conn.execute("SELECT pg_total_relation_size(%s)", (f"pggcl.{t}",)).fetchone()[0])  # type: ignore[index]
            for t in TABLES
        }


def _terminate_clients(dsn: str, rng: random.Random) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND pid <> pg_backend_pid() AND datname = current_database()"
            )
        ]
        victims = rng.sample(pids, k=min(len(pids), max(1, len(pids) // 4)))
        for pid in victims:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return len(victims)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--fault-every", type=float, default=4.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    duration = args.seconds if args.seconds is not None else 60 * (args.minutes or 10)
    rng = random.Random(args.seed)
    ctx = multiprocessing.get_context("spawn")
    print(f"chaos: {duration:g} s, {args.workers} workers, a fault every {args.fault_every:g} s"
          " after a calm first third", flush=True)  # fmt: skip

    tmpdir = tempfile.TemporaryDirectory()
    tmp = tmpdir.name
    with TempPostgres(settings=SETTINGS) as pg:
        schema.upgrade(pg.dsn)
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            for name, limit in CONCURRENCY.items():
                conn.execute("SELECT pggcl.create_limit(%s, %s)", (name, limit))
            for name, (limit, decay) in RATE.items():
                conn.execute("SELECT pggcl.create_limit(%s, %s, %s)", (name, limit, decay))
        sizes_before = _table_sizes(pg.dsn)

        stop_file = Path(tmp) / "stop"
        procs: dict[int, Any] = {}
        files: list[Path] = []
        killed_at: dict[str, float] = {}  # file -> monotonic time of its worker's SIGKILL
        incarnations = collections.Counter[int]()

        def spawn(i: int) -> None:
            incarnations[i] += 1
            path = Path(tmp) / f"w{i}-{incarnations[i]}.jsonl"
            files.append(path)
            p = ctx.Process(
                target=_worker, args=(pg.dsn, i, incarnations[i], str(stop_file), str(path))
            )
            p.start()
            procs[i] = (p, path)

        for i in range(args.workers):
            spawn(i)
        ready_by = time.monotonic() + 120
        while time.monotonic() < ready_by and not all(
            path.exists() and path.stat().st_size > 0 for _, path in procs.values()
        ):
            time.sleep(0.1)
        started = time.monotonic()
        stop_at = started + duration
        calm_until = started + duration / 3
        faults: list[tuple[float, str]] = []
        next_fault = calm_until
        while time.monotonic() < stop_at:
            now = time.monotonic()
            if now >= next_fault and now < stop_at - 2:
                fault = rng.choice(FAULTS)
                at = time.monotonic()
                if fault == "restart-fast":
                    pg.restart("fast")
                elif fault == "restart-immediate":
                    pg.restart("immediate")
                elif fault == "terminate-connections":
                    _terminate_clients(pg.dsn, rng)
                else:
                    i = rng.randrange(args.workers)
                    p, path = procs[i]
                    if p.is_alive():
                        os.kill(p.pid, signal.SIGKILL)
                        killed_at[str(path)] = time.monotonic()
                        p.join()
                        spawn(i)
                faults.append((at, fault))
                print(f"  {at - started:6.1f} s  {fault}", flush=True)
                next_fault = time.monotonic() + args.fault_every
            time.sleep(0.1)
        stop_file.touch()
        for p, _ in procs.values():
            p.join(60)
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join()
        ended = time.monotonic()

        # Leases and waiters left once every dead session's grace has passed.
        time.sleep(GRACE + 1)
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute("SELECT pggcl.reclaim()")
            leases = conn.execute("SELECT count(*) FROM pggcl.leases").fetchone()
            waiters = conn.execute("SELECT count(*) FROM pggcl.waiters").fetchone()
            held = conn.execute("SELECT coalesce(sum(held_slots), 0) FROM pggcl.limits").fetchone()
            conn.execute("VACUUM pggcl.limit_state, pggcl.leases, pggcl.waiters, pggcl.sessions")
        sizes_after = _table_sizes(pg.dsn)
        assert leases and waiters and held

    # Merge the workers' records.
    holds: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    rates = 0
    errors: collections.Counter[tuple[str, str, str]] = collections.Counter()
    errors_by_file: collections.Counter[str] = collections.Counter()
    for path in files:
        open_starts: dict[str, float] = {}
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut by SIGKILL
                continue
            if rec[0] == "start":
                open_starts[rec[1]] = rec[2]
            elif rec[0] == "hold":
                open_starts.pop(rec[1], None)
                holds[rec[1]].append((rec[2], rec[3]))
            elif rec[0] == "rate":
                rates += 1
            elif rec[0] == "error":
                client = "AsyncClient" if int(path.name[1:].split("-")[0]) % 2 else "Client"
                errors[(f"{rec[1]} [{client}]", _during(rec[3], faults), rec[2])] += 1
                errors_by_file[str(path)] += 1
        for name, start in open_starts.items():  # killed inside its block: held until the kill
            holds[name].append((start, killed_at.get(str(path), ended)))

    tmpdir.cleanup()
    failed = False
    print("\nmax overlap per limit (hold intervals of every worker, time.monotonic()):")
    for name, limit in CONCURRENCY.items():
        peak = max_overlap(holds[name])
        bad = peak > limit
        failed |= bad
        print(
            f"  {name:12} {peak} of {limit}  {'EXCEEDED' if bad else 'ok'}"
            f"  ({len(holds[name])} holds)"
        )
    calm = sum(1 for v in holds.values() for s, _ in v if s < calm_until)
    faulty = sum(1 for v in holds.values() for s, _ in v if s >= calm_until)
    calm_s, faulty_s = calm_until - started, ended - calm_until
    print(
        f"\nacquisitions/s (concurrency): calm {calm / calm_s:.1f} ({calm} in {calm_s:.0f} s),"
        f" with faults {faulty / faulty_s:.1f} ({faulty} in {faulty_s:.0f} s);"
        f" rate_limit calls: {rates}"
    )
    print(f"faults: {dict(collections.Counter(f for _, f in faults))}")
    print(f"\nerrors that reached user code: {sum(errors.values())}")
    grouped: collections.Counter[tuple[str, str]] = collections.Counter()
    sample: dict[tuple[str, str], str] = {}
    for (kind, during, message), n in errors.items():
        key = (kind, during.split(" ")[0])
        grouped[key] += n
        sample.setdefault(key, " ".join(message.split())[:140])
    for (kind, during), n in grouped.most_common():
        print(f"  {n:6}  {kind} (after {during}; within 15 s), e.g.: {sample[kind, during]}")
    print(f"  workers with errors: {sum(1 for f in files if _has_errors(f, errors_by_file))}"
          f" of {len(files)} worker processes")  # fmt: skip
    left_held = int(leases[0]) + int(waiters[0])
    print(f"\nleft after the grace ({GRACE:g} s): {leases[0]} lease rows, {waiters[0]} waiter rows,"
          f" {held[0]} held slots")  # fmt: skip
    failed |= left_held > 0 or int(held[0]) > 0
    print("table sizes (bytes, pg_total_relation_size) before -> after:")
    for t in TABLES:
        print(f"  pggcl.{t:12} {sizes_before[t]:>9,} -> {sizes_after[t]:>9,}")
    print(
        f"\n{'FAILED' if failed else 'OK'}: limits held, nothing left" if not failed else "\nFAILED"
    )
    return 1 if failed else 0


def _has_errors(path: Path, by_file: collections.Counter[str]) -> bool:
    return by_file[str(path)] > 0


def _during(at: float, faults: list[tuple[float, str]]) -> str:
    """The last fault before `at` (within 15 s), or calm."""
    before = [(t, f) for t, f in faults if t <= at and at - t < 15]
    return f"{before[-1][1]} +{at - before[-1][0]:.1f}s" if before else "no fault"


if __name__ == "__main__":
    sys.exit(main())
