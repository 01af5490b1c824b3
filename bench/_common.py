"""What every workload shares: the server, limit names, statistics, worker processes, results.

A workload module exposes ``ID``, ``TITLE`` and ``run(env) -> list[Figure]``. Each figure is a
median of repeated runs beside a baseline measured in the same run, on the same server.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import multiprocessing.context
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pggcl import schema
from pggcl.testing import TempPostgres

#: Settings of the throwaway server (TempPostgres adds fsync=off and friends).
SERVER_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "top",
    "max_connections": "300",
}


# --- Statistics ---------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values."""
    return percentile(values, 50)


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), interpolating between ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline else math.nan


# --- Results ------------------------------------------------------------------------------


@dataclass
class Figure:
    """One line of the table: a measured value beside its same-run baseline.

    ``ratio`` is value / baseline unless the workload says otherwise; ``ok`` is None where no
    target applies (diagnostic lines). ``runs`` are the repeated measurements behind ``value``.
    """

    id: str
    what: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_what: str = ""
    ratio: float | None = None
    target: str = ""
    ok: bool | None = None
    runs: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def fmt(value: float | None, unit: str = "") -> str:
    """A number for the table: thousands separated, 4 significant digits below 100."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100 or (float(value).is_integer() and unit in ("", "calls", "rows")):
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text}{unit}" if unit == "x" else f"{text} {unit}".strip()


def table(figures: Sequence[Figure]) -> str:
    """The results as a plain-text table."""
    header = ("id", "measure", "pggcl", "baseline (same run)", "ratio", "target", "")
    rows = [header]
    for f in figures:
        baseline = f"{fmt(f.baseline, f.unit)} {f.baseline_what}".strip() if f.baseline_what else ""
        verdict = "" if f.ok is None else ("ok" if f.ok else "MISSED")
        rows.append(
            (f.id, f.what, fmt(f.value, f.unit), baseline, fmt(f.ratio, "x") if f.ratio else "",
             f.target, verdict)
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- The server ---------------------------------------------------------------------------


@dataclass
class Env:
    """Where and how big a run is. ``quick`` runs tiny sizes (the smoke test)."""

    dsn: str
    quick: bool
    #: pg_stat_statements is loaded and its extension exists in the database.
    statements: bool
    _names: list[str] = field(default_factory=list)

    def size(self, full: float, quick: float) -> float:
        return quick if self.quick else full

    def count(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def name(self, what: str) -> str:
        """A fresh limit name for this run; its limit is deleted by :meth:`cleanup`."""
        name = f"bench-{what}-{secrets.token_hex(3)}"
        self._names.append(name)
        return name

    def create_limit(self, what: str, limit: int, decay: float = 0.0) -> str:
        name = self.name(what)
        self.sql("SELECT pggcl.create_limit($1::text, $2::integer, $3::double precision)",
                 name, limit, decay)  # fmt: skip
        return name

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """One autocommit statement (``$n`` placeholders) on a fresh connection."""
        with connect(self.dsn) as conn:
            cur = conn.execute(query, args)
            return cur.fetchall() if cur.description else []

    def cleanup(self) -> None:
        names, self._names = self._names, []
        if names:
            self.sql("SELECT pggcl.delete_limit(n) FROM unnest($1::text[]) n", names)


def connect(dsn: str) -> psycopg.Connection[Any]:
    """An autocommit psycopg connection whose cursors take ``$n`` placeholders."""
    return psycopg.Connection.connect(dsn, autocommit=True, cursor_factory=psycopg.RawCursor)


@contextlib.contextmanager
def server(dsn: str | None, quick: bool, settings: dict[str, str] | None = None) -> Iterator[Env]:
    """The database to run in: ``dsn`` (pggcl installed there when missing), or a throwaway
    PostgreSQL with pg_stat_statements loaded (and ``settings`` over SERVER_SETTINGS), removed
    afterwards."""
    with contextlib.ExitStack() as stack:
        if dsn is None:
            progress("starting a throwaway PostgreSQL (pggcl.testing.TempPostgres) ...")
            merged = {**SERVER_SETTINGS, **(settings or {})}
            dsn = stack.enter_context(TempPostgres(settings=merged)).dsn
        if schema.current(dsn) is None:
            progress("installing pggcl (alembic upgrade head) ...")
            schema.upgrade(dsn)
        env = Env(dsn, quick, statements=_enable_statements(dsn))
        yield env


def _enable_statements(dsn: str) -> bool:
    try:
        with connect(dsn) as conn:
            loaded = conn.execute("SHOW shared_preload_libraries").fetchone()
            if loaded is None or "pg_stat_statements" not in str(loaded[0]):
                return False
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            return True
    except psycopg.Error:
        return False


def server_version(dsn: str) -> str:
    with connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


# --- Processes ----------------------------------------------------------------------------

_context: multiprocessing.context.ForkServerContext | None = None


def processes() -> multiprocessing.context.ForkServerContext:
    """Worker processes are forked from a clean server process that has the drivers imported:
    cheap to start, and no state (threads, connections) inherited from the coordinator."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["pggcl.sync", "pggcl.asyncio", "bench._common"])
    return _context


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), in bytes."""
    with open(f"/proc/{pid or os.getpid()}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll until ``predicate()`` (setup only: never inside a timed section)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting until {what}")
        time.sleep(0.002)


def waiting(env: Env, name: str) -> int:
    """How many requests are queued on limit ``name``."""
    rows = env.sql("SELECT waiting FROM pggcl.limits WHERE name = $1::text", name)
    return int(rows[0][0]) if rows else 0
