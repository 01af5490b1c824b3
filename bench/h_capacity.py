"""H: capacity. How far one PostgreSQL server goes, beside pgbench on the same server.

Throughput (issue #19, points 1-2): 1, 4, 16 and 64 client processes (one ``pggcl.Client``
each, one thread) loop for a few seconds on

- one hot limit, concurrency mode: ``with client.concurrency(name): pass`` (a cycle is two
  transactions: acquire and release);
- one hot limit, rate mode: ``client.rate_limit(name)`` (a cycle is one transaction);
- 64 limits, then 10,000 limits, concurrency mode, each cycle on a limit picked at random.

The limits are large enough that nobody ever queues: this is the row-lock and CPU ceiling, not
the hand-off (bench C). Beside each, in the same round on the same server, pgbench with as many
clients runs a one-row ``UPDATE`` script: on one row (hot) or on as many rows as there are
limits, picked at random (spread). A pgbench transaction is one UPDATE, so a concurrency
cycle that kept pace with two pgbench transactions would show 0.5x. pggcl and pgbench
alternate, round after round; each ratio is the median of the rounds' ratios. Acquire latency
(call -> body start, or the whole ``rate_limit`` call) is pooled over every process; its
baseline is pgbench's mean latency of one UPDATE.

Waiters at scale and connections (points 3-4) are in bench/h_waiters.py.

The server: it needs about 3 connections a waiter process (100 of them) and 2 a throughput
process. When the database given has too few free connections, H starts a throwaway
PostgreSQL of its own with ``max_connections`` raised (it says so).
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pggcl
from bench import h_waiters
from bench._common import (
    Env,
    Figure,
    connect,
    median,
    percentile,
    processes,
    progress,
    ratio,
    server,
    wait_for,
)
from pggcl.testing import PostgresNotFound, find_server_binaries

ID = "H"
TITLE = "capacity: client processes on one hot limit and on many, 10,000 waiters"
APP = "pggcl-bench-h"
PARTS = ("throughput", "connections", "waiters")
#: Enough for 100 waiter processes x 3 connections, pgbench, this process and a margin.
MAX_CONNECTIONS = 450
#: The throwaway server's settings beyond bench/_common.py's: commit times order the grants.
OWN_SERVER = {"max_connections": str(MAX_CONNECTIONS), "track_commit_timestamp": "on"}


@dataclass(frozen=True)
class Sizes:
    """Every size of H (``python -m bench.h_capacity --help`` sets them one by one)."""

    clients: tuple[int, ...] = (1, 4, 16, 64)  # client processes of the throughput parts
    spreads: tuple[int, ...] = (64, 10_000)  # limits of the spread parts
    seconds: float = 2.0  # each measured window
    rounds: int = 2  # pggcl and pgbench alternate this many times per line
    waiters: h_waiters.Sizes = field(default_factory=h_waiters.Sizes.full)
    parts: tuple[str, ...] = PARTS

    @classmethod
    def quick(cls) -> Sizes:
        return cls((1, 2), (2, 10), 0.2, 1, h_waiters.Sizes.quick())


def run(env: Env, sizes: Sizes | None = None) -> list[Figure]:
    s = sizes or (Sizes.quick() if env.quick else Sizes())
    needed = 10 + max(2 * max(s.clients) if "throughput" in s.parts else 0,
                      s.waiters.connections_needed() if "waiters" in s.parts else 0)  # fmt: skip
    figures: list[Figure] = []
    with _server_for(env, needed) as henv:
        if "throughput" in s.parts:
            figures += _throughput(henv, list(s.clients), list(s.spreads), s.seconds, s.rounds)
        if "connections" in s.parts:
            figures += h_waiters.connections(henv)
        if "waiters" in s.parts:
            figures += h_waiters.waiters(henv, s.waiters)
        henv.cleanup()
    return figures


@contextlib.contextmanager
def _server_for(env: Env, needed: int) -> Iterator[Env]:
    """``env`` when its server has ``needed`` connections free, else a throwaway server."""
    (free,) = env.sql(
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
        " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
    )[0]
    if free >= needed:
        yield env
        return
    try:
        find_server_binaries()
    except PostgresNotFound:
        progress(f"H: only {free} connections free (needs {needed}); no server binaries to start"
                 " one with more: the largest sizes may fail")  # fmt: skip
        yield env
        return
    progress(f"H: {free} connections free, {needed} needed: a throwaway PostgreSQL of H's own"
             f" with max_connections={MAX_CONNECTIONS}")  # fmt: skip
    with server(None, env.quick, OWN_SERVER) as own:
        yield own


# --- Server CPU ---------------------------------------------------------------------------


class ServerCpu:
    """CPU seconds the whole server has used so far: its live processes plus those that ended
    (the postmaster's cutime/cstime), when it runs on this machine; else None. The difference
    over a window is the server's CPU in it, whatever the clients cost on the same cores."""

    def __init__(self, env: Env) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.postmaster: int | None = None
        with connect(env.dsn) as conn:  # read while its backend lives
            row = conn.execute("SELECT pg_backend_pid(), inet_server_addr()").fetchone()
            assert row is not None
            pid, address = int(row[0]), row[1]
            if (
                address is not None
                and not ipaddress.ip_address(str(address).split("/")[0]).is_loopback
            ):
                return  # a server on another machine: its pid means nothing here
            with (
                contextlib.suppress(OSError, IndexError, ValueError),
                open(f"/proc/{pid}/comm") as f,
            ):
                if f.read().strip() == "postgres":
                    self.postmaster = int(self._stat(pid)[1])

    @staticmethod
    def _stat(pid: int) -> list[str]:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()  # state, ppid, ... (fields 3 on)

    def children(self) -> set[int]:
        """The server's processes now (the postmaster's children)."""
        found = set()
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    if int(self._stat(int(entry.name))[1]) == self.postmaster:
                        found.add(int(entry.name))
        return found

    def settle(self, before: set[int]) -> None:
        """Wait (setup, at most 10 s) until the processes started since ``before`` have ended
        and been reaped, so that their CPU is in the postmaster's cutime."""
        if self.postmaster is not None:
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not self.children() - before, "pgbench's backends end", 10)

    def total(self) -> float | None:
        """Live processes by /proc/<pid>/schedstat (ns); ended ones by the postmaster's cutime
        and cstime (clock ticks: rounded per process, so count many transactions)."""
        if self.postmaster is None:
            return None
        try:
            own = self._stat(self.postmaster)
            seconds = (int(own[13]) + int(own[14])) / self.tick + self._runtime(self.postmaster)
        except (OSError, IndexError, ValueError):
            return None
        for pid in self.children():
            with contextlib.suppress(OSError, IndexError, ValueError):
                seconds += self._runtime(pid)
        return seconds

    @staticmethod
    def _runtime(pid: int) -> float:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9


def _delta(cpu: ServerCpu, before: float | None) -> float | None:
    after = cpu.total()
    return None if before is None or after is None else after - before


# --- pgbench ------------------------------------------------------------------------------


def _pgbench_binary() -> str:
    try:
        candidate = find_server_binaries() / "pgbench"
        if candidate.is_file():
            return str(candidate)
    except PostgresNotFound:
        pass
    found = shutil.which("pgbench")
    if not found:
        raise RuntimeError("pgbench not found (Debian: it comes with postgresql-contrib/-client)")
    return found


class PgBench:
    """pgbench against a table of ``rows`` rows of H's own (dropped by :meth:`close`)."""

    def __init__(self, env: Env, rows: int, quick: bool) -> None:
        self.env, self.quick = env, quick
        self.binary = _pgbench_binary()
        self.table = f"pggcl_bench_h_{env.name('h').rsplit('-', 1)[1]}"
        env.sql(f"CREATE TABLE {self.table} (id integer PRIMARY KEY, n bigint NOT NULL DEFAULT 0)")
        env.sql(f"INSERT INTO {self.table} (id) SELECT generate_series(0, $1::int - 1)", rows)
        env.sql(f"VACUUM ANALYZE {self.table}")
        self.dir = Path(tempfile.mkdtemp(prefix="pggcl-bench-h-"))
        self.cpu = ServerCpu(env)

    def script(self, rows: int) -> Path:
        """A one-row UPDATE: on row 0 (``rows`` == 1) or on one of ``rows`` rows at random."""
        path = self.dir / f"update_{rows}.sql"
        if not path.exists():
            update = f"UPDATE {self.table} SET n = n + 1 WHERE id = "
            text = f"{update}0;\n" if rows == 1 else (
                f"\\set id random(0, {rows - 1})\n{update}:id;\n"
            )  # fmt: skip
            path.write_text(text)
        return path

    def run(self, rows: int, clients: int, seconds: float) -> tuple[float, float, float | None]:
        """Transactions per second, mean latency (s) and server CPU seconds per transaction of
        ``clients`` pgbench clients."""
        length = ["-t", "50"] if self.quick else ["-T", str(max(1, round(seconds)))]
        script = str(self.script(rows))
        cmd = [self.binary, "-n", "-M", "prepared", "-c", str(clients), "-j",
               str(min(clients, 2)), *length, "-f", script, self.env.dsn]  # fmt: skip
        before, running = self.cpu.total(), self.cpu.children()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
        self.cpu.settle(running)
        used = _delta(self.cpu, before)
        tps = re.search(r"^tps = ([\d.]+)", proc.stdout, re.M)
        latency = re.search(r"^latency average = ([\d.]+) ms", proc.stdout, re.M)
        done = re.search(r"^number of transactions actually processed: (\d+)", proc.stdout, re.M)
        if proc.returncode != 0 or tps is None or done is None:
            raise RuntimeError(f"pgbench failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        per_tx = used / int(done.group(1)) if used is not None and int(done.group(1)) else None
        return float(tps.group(1)), float(latency.group(1)) / 1000 if latency else math.nan, per_tx

    def close(self) -> None:
        self.env.sql(f"DROP TABLE IF EXISTS {self.table}")
        shutil.rmtree(self.dir, ignore_errors=True)


# --- Throughput ---------------------------------------------------------------------------

#: (label, mode, how many limits); "spread" entries take the counts of ``spreads``.
SCENARIOS = [("one hot limit, concurrency", "concurrency", 1),
             ("one hot limit, rate", "rate", 1)]  # fmt: skip


def _throughput(
    env: Env, clients: list[int], spreads: list[int], seconds: float, rounds: int
) -> list[Figure]:
    scenarios = SCENARIOS + [(f"{n:,} limits, concurrency", "concurrency", n) for n in spreads]
    big = 1_000_000_000  # nobody ever queues: this measures the rows, not the hand-off
    names: dict[str, list[str]] = {}
    for label, mode, count in scenarios:
        prefix = env.name("h")
        names[label] = [f"{prefix}-{i:05d}" for i in range(count)]
        decay = float(big) if mode == "rate" else 0.0
        env.sql("SELECT pggcl.create_limit(n, $2::int, $3::float8) FROM unnest($1::text[]) n",
                names[label], big, decay)  # fmt: skip
    bench = PgBench(env, max(spreads), env.quick)
    figures: list[Figure] = []
    try:
        for n in clients:
            with _Workers(env.dsn, n) as workers:
                for label, mode, count in scenarios:
                    progress(f"H: {n} process(es), {label}")
                    figures += _scenario(bench, workers, label, mode, names[label], n,
                                         count, seconds, rounds)  # fmt: skip
    finally:
        bench.close()
        env.sql("SELECT pggcl.delete_limit(n) FROM unnest($1::text[]) n",
                [x for group in names.values() for x in group])  # fmt: skip
    return figures


def _scenario(
    bench: PgBench,
    workers: _Workers,
    label: str,
    mode: str,
    names: list[str],
    n: int,
    rows: int,
    seconds: float,
    rounds: int,
) -> list[Figure]:
    rates: list[float] = []
    base: list[float] = []
    base_latency: list[float] = []
    latencies: list[float] = []
    cpu: list[float] = []
    base_cpu: list[float] = []
    for r in range(rounds):
        for side in ("pggcl", "pgbench") if r % 2 else ("pgbench", "pggcl"):
            if side == "pgbench":
                tps, mean, per_tx = bench.run(rows, n, seconds)
                base.append(tps)
                base_latency.append(mean)
                base_cpu += [] if per_tx is None else [per_tx]
            else:
                rate, samples, per_cycle = workers.measure(mode, names, seconds, bench.cpu)
                rates.append(rate)
                latencies += samples
                cpu += [] if per_cycle is None else [per_cycle]
    r_median = median([ratio(p, b) for p, b in zip(rates, base, strict=True)])
    kind = "hot-row" if rows == 1 else f"{rows:,}-row"
    what = f"{label}, {n} process(es)"
    unit_note = "2 transactions a cycle" if mode == "concurrency" else "1 transaction a call"
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    progress(
        f"H: {what}: {median(rates):,.0f} cycles/s, pgbench {median(base):,.0f} tps"
        f" ({r_median:.3f}x); acquire p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms"
    )
    details: dict[str, Any] = {"pgbench_runs": base, "cycle": unit_note, "limits": len(names),
                               "pgbench_mean_latency_s": base_latency}  # fmt: skip
    figures = [
        Figure(ID, f"{what}: cycles/s ({unit_note})", median(rates), "/s", median(base),
               f"pgbench {kind} UPDATE tps", r_median, runs=rates, details=details),
    ]  # fmt: skip
    if cpu and base_cpu:
        us, base_us = median(cpu) * 1e6, median(base_cpu) * 1e6
        figures.append(Figure(ID, f"{what}: server CPU per cycle", us, "us", base_us,
                              "pgbench per UPDATE transaction", ratio(us, base_us),
                              runs=[x * 1e6 for x in cpu],
                              details={"pgbench_runs": [x * 1e6 for x in base_cpu]}))  # fmt: skip
    if rows == 1:  # latency lines for the hot limit only (the table stays short)
        mean = median(base_latency) * 1000
        figures += [
            Figure(ID, f"{what}: acquire p50", p50 * 1000, "ms", mean,
                   "pgbench mean UPDATE latency", ratio(p50 * 1000, mean)),
            Figure(ID, f"{what}: acquire p99", p99 * 1000, "ms", mean,
                   "pgbench mean UPDATE latency", ratio(p99 * 1000, mean)),
        ]  # fmt: skip
    else:
        figures[0].details.update(acquire_p50_ms=p50 * 1000, acquire_p99_ms=p99 * 1000)
    return figures


class _Workers:
    """``n`` client processes, each with one ``pggcl.Client`` (one thread), kept across the
    scenarios of one client count. :meth:`measure` runs them all for the same window."""

    def __init__(self, dsn: str, n: int) -> None:
        self.dsn, self.n = dsn, n
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []

    def __enter__(self) -> _Workers:
        ctx = processes()
        for i in range(self.n):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_cycle_worker, args=(self.dsn, i, theirs), daemon=True)
            proc.start()
            self.pipes.append(ours)
            self.procs.append(proc)
        for pipe in self.pipes:
            assert pipe.recv() == "ready"
        return self

    def measure(
        self, mode: str, names: list[str], seconds: float, cpu: ServerCpu
    ) -> tuple[float, list[float], float | None]:
        """Cycles per second of all processes in one window, every acquire's latency, and the
        server's CPU seconds per cycle."""
        for pipe in self.pipes:
            pipe.send(("warm", mode, names))
        for pipe in self.pipes:
            assert pipe.recv() == "warm"
        start = time.monotonic() + 0.05 + 0.002 * self.n  # time for every process to be told
        for pipe in self.pipes:
            pipe.send(("go", start, start + seconds))
        time.sleep(max(0.0, start - time.monotonic()))
        before = cpu.total()
        count, samples = 0, []
        for pipe in self.pipes:
            done, latencies = pipe.recv()
            count += done
            samples += latencies
        used = _delta(cpu, before)
        return count / seconds, samples, used / count if used is not None and count else None

    def __exit__(self, *exc: object) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


def _cycle_worker(dsn: str, index: int, pipe: Connection) -> None:
    rng = random.Random(index)
    with pggcl.Client(h_waiters.with_application_name(dsn, APP)) as client:
        pipe.send("ready")
        mode, names = "concurrency", [""]
        while True:
            message = pipe.recv()
            if message[0] == "stop":
                return
            if message[0] == "warm":
                mode, names = message[1], message[2]
                for _ in range(5):
                    _cycle(client, mode, rng.choice(names))
                pipe.send("warm")
                continue
            _, start, end = message
            time.sleep(max(0.0, start - time.monotonic()))  # one window for every process
            done, latencies = 0, []
            while time.monotonic() < end:
                latencies.append(_cycle(client, mode, rng.choice(names)))
                done += 1
            pipe.send((done, latencies))


def _cycle(client: pggcl.Client, mode: str, name: str) -> float:
    """One acquire+release (or one rate_limit call); seconds to the body start."""
    began = time.monotonic()
    if mode == "rate":
        client.rate_limit(name)
        return time.monotonic() - began
    with client.concurrency(name):
        return time.monotonic() - began
