"""Two versions of pggcl, side by side on one server: is a change slower?

    python -m bench.compare OLD_TREE [NEW_TREE] [--rounds 12] [--seconds 1.5]

Each tree (a checkout, e.g. ``git worktree add /tmp/old <commit>``; NEW_TREE defaults to this
one) installs its own engine in its own database of one throwaway server, and runs in its own
worker process (``PYTHONPATH=<tree>``). The workers take turns, OLD then NEW then OLD ..., each
turn a burst of uncontended ``with client.concurrency(name)`` cycles (sync and async, by one
caller, then by 8 threads or tasks of one client on 8 limits), so both
see the same machine, minute by minute. Printed: per workload, the median over rounds of the
NEW/OLD ratio of cycles per second, its spread, and the load average. On a noisy machine a
same-run ratio of alternating bursts is the only figure worth quoting; absolute rates are not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from pggcl.testing import TempPostgres, create_database, with_database

HERE = Path(__file__).resolve().parent.parent
#: sync/async: one client, one limit; sync8/async8: 8 threads or tasks of one client, 8 limits.
KINDS = ("sync", "async", "sync8", "async8")

# Runs inside a worker, with the tree's pggcl first on the path. It reads one command per line
# ("sync SECONDS" / "async SECONDS" / "quit") and answers with the cycles per second.
WORKER = r"""
import asyncio, sys, threading, time
import pggcl
dsn = sys.argv[1]
client = pggcl.Client(dsn)
aclient = None
try:
    client.create_limit("cmp", 1_000_000)
except Exception:
    pass

def sync_burst(seconds):
    n, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        for _ in range(50):
            with client.concurrency("cmp"):
                pass
        n += 50
    return n / (time.perf_counter() - start)

async def async_burst(seconds):
    global aclient
    if aclient is None:
        aclient = pggcl.AsyncClient(dsn)
    n, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        for _ in range(50):
            async with aclient.concurrency("cmp"):
                pass
        n += 50
    return n / (time.perf_counter() - start)

many = pggcl.Client(dsn, pool_size=8)
amany = None
for i in range(8):
    try:
        client.create_limit(f"cmp{i}", 1_000_000)
    except Exception:
        pass

def sync8_burst(seconds):
    counts = [0] * 8
    end = time.perf_counter() + seconds
    def worker(i):
        while time.perf_counter() < end:
            for _ in range(20):
                with many.concurrency(f"cmp{i}"):
                    pass
            counts[i] += 20
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)

async def async8_burst(seconds):
    global amany
    if amany is None:
        amany = pggcl.AsyncClient(dsn, pool_size=8)
    counts = [0] * 8
    end = time.perf_counter() + seconds
    async def worker(i):
        while time.perf_counter() < end:
            for _ in range(20):
                async with amany.concurrency(f"cmp{i}"):
                    pass
            counts[i] += 20
    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(8)))
    return sum(counts) / (time.perf_counter() - start)

loop = asyncio.new_event_loop()
print("ready", flush=True)
for line in sys.stdin:
    kind, _, arg = line.strip().partition(" ")
    if kind == "quit":
        break
    if kind == "sync":
        print(sync_burst(float(arg)), flush=True)
    elif kind == "sync8":
        print(sync8_burst(float(arg)), flush=True)
    elif kind == "async8":
        print(loop.run_until_complete(async8_burst(float(arg))), flush=True)
    else:
        print(loop.run_until_complete(async_burst(float(arg))), flush=True)
client.close()
many.close()
for c in (aclient, amany):
    if c is not None:
        loop.run_until_complete(c.close())
"""


def _install(tree: Path, dsn: str) -> None:
    code = "import sys, pggcl.schema as s; s.upgrade(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, dsn], env=_env(tree), check=True)


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def _commit(tree: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path, nargs="?", default=HERE)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args(argv)
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    with TempPostgres() as server:
        workers = {}
        for label, tree in trees.items():
            dbname = f"cmp_{label}"
            create_database(server.dsn, dbname)
            dsn = with_database(server.dsn, dbname)
            _install(tree, dsn)
            proc = subprocess.Popen(
                [sys.executable, "-c", WORKER, dsn], env=_env(tree), text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            workers[label] = proc
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        results: dict[str, dict[str, list[float]]] = {k: {} for k in KINDS}
        for kind in KINDS:
            for label in trees:
                results[kind][label] = []
            for r in range(args.rounds):
                order = ("old", "new") if r % 2 == 0 else ("new", "old")
                for label in order:
                    proc = workers[label]
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(f"{kind} {args.seconds}\n")
                    proc.stdin.flush()
                    results[kind][label].append(float(proc.stdout.readline()))
        for proc in workers.values():
            assert proc.stdin is not None
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            proc.wait(30)
        load_after = Path("/proc/loadavg").read_text().split()[:3]
    summary = {}
    for label, tree in trees.items():
        print(f"{label}: {tree} ({_commit(tree)})")
    for kind, by in results.items():
        ratios = [n / o for n, o in zip(by["new"], by["old"], strict=True)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        summary[kind] = {
            "old_median": statistics.median(by["old"]),
            "new_median": statistics.median(by["new"]),
            "ratio_median": statistics.median(ratios),
            "ratio_quartiles": [q[0], q[2]],
        }
        print(
            f"{kind:6}  old {summary[kind]['old_median']:7.0f}/s  "
            f"new {summary[kind]['new_median']:7.0f}/s  "
            f"new/old median {summary[kind]['ratio_median']:.3f} "
            f"(quartiles {q[0]:.3f}..{q[2]:.3f}, {len(ratios)} rounds)"
        )
    print(f"load average before/after: {' '.join(load_before)} / {' '.join(load_after)}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
