"""Fixtures and helpers of the fault tests: a PostgreSQL cluster per test module (so that
restarting it disturbs no other test), a fresh database per test, and worker processes
(sync client, async client, ``pggcl run``) that record their hold intervals and report every
exception that reached their code.

A module may set ``CLUSTER_SETTINGS`` (postgresql.conf values) for its cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pggcl import schema
from pggcl.testing import TempPostgres, create_database, psql, temporary_database

WORKER = Path(__file__).with_name("worker.py")
#: The console script that `pip install` puts next to the interpreter.
PGGCL = Path(sys.executable).parent / "pggcl"
KINDS = ("sync", "async", "cli")

#: Every fault cluster commits synchronously: a crash (`-m immediate`) then loses no commit
#: a client was told of (fsync stays off: no OS crash is simulated).
BASE_SETTINGS = {"synchronous_commit": "on"}


# --- Polling and checks --------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll until ``predicate`` holds (an event the code under test causes), or fail."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.01)


async def await_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """`wait_until` for async tests: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        await asyncio.sleep(0.01)


def max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end before a start at the same instant)."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def sql(dsn: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(query, args).fetchall()


def held_and_queued(dsn: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(pggcl.holders rows, pggcl.queue rows), read directly."""
    holders = sql(dsn, "SELECT lease_id, name, session_id, holder FROM pggcl.holders")
    queue = sql(dsn, "SELECT waiter_id, name, session_id, holder FROM pggcl.queue")
    return holders, queue


def assert_nothing_held_or_queued(dsn: str) -> None:
    holders, queue = held_and_queued(dsn)
    assert (holders, queue) == ([], []), f"left held: {holders}; left queued: {queue}"


def queued_count(dsn: str) -> int:
    return int(sql(dsn, "SELECT count(*) FROM pggcl.queue")[0][0])


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def pooled_backends(dsn: str) -> list[int]:
    """Backends of `dsn`'s database that are no pggcl session connection: the clients'
    pooled connections (this query's own backend left out)."""
    rows = sql(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
        "AND pid NOT IN (SELECT backend_pid FROM pggcl.sessions)",
    )
    return [int(r[0]) for r in rows]


def session_backends(dsn: str) -> list[int]:
    """Backends of the live pggcl session connections of `dsn`'s database."""
    rows = sql(
        dsn,
        "SELECT a.pid FROM pg_stat_activity a JOIN pggcl.sessions s ON s.backend_pid = a.pid "
        "WHERE a.datname = current_database()",
    )
    return [int(r[0]) for r in rows]


def local_tcp_ports(pid: int) -> set[int]:
    """The local ports of process `pid`'s TCP sockets (from /proc: its fds' socket inodes,
    looked up in its network namespace's socket tables)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def backends_of_process(dsn: str, pid: int) -> tuple[list[int], list[int]]:
    """(pooled, session) backends of `dsn`'s database that serve process `pid`'s connections
    (matched by the client's TCP port)."""
    ports = sorted(local_tcp_ports(pid))
    rows = sql(
        dsn,
        "SELECT a.pid, a.pid IN (SELECT backend_pid FROM pggcl.sessions) FROM pg_stat_activity a "
        "WHERE a.datname = current_database() AND a.backend_type = 'client backend' "
        "AND a.client_port = ANY(%s)",
        ports,
    )
    return [int(r[0]) for r in rows if not r[1]], [int(r[0]) for r in rows if r[1]]


def terminate(dsn: str, pids: Sequence[int]) -> None:
    """pg_terminate_backend each of `pids`, and wait until they are gone."""
    if not pids:
        return
    sql(dsn, "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", list(pids))

    def gone() -> bool:
        rows = sql(dsn, "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", list(pids))
        return int(rows[0][0]) == 0

    wait_until(gone, f"backends {list(pids)} are gone", timeout=10)


# --- Clusters and databases -----------------------------------------------------------------


TEMPLATE = "pggcl_faults_template"


@pytest.fixture(scope="session")
def fault_datadir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with a template database holding pggcl: each module's cluster starts
    from a copy of it (no initdb, no schema install per module)."""
    dest = tmp_path_factory.mktemp("faults") / "data"
    with TempPostgres() as pg:
        dsn = create_database(pg.dsn, TEMPLATE)
        schema.upgrade(dsn)
        psql(f'ALTER DATABASE "{TEMPLATE}" IS_TEMPLATE true', pg.dsn)
        pg.stop("fast")
        pg.copy_datadir(dest)
    return dest


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, fault_datadir: Path) -> Iterator[TempPostgres]:
    """This module's own PostgreSQL server, restartable at will."""
    settings = {**BASE_SETTINGS, **getattr(request.module, "CLUSTER_SETTINGS", {})}
    with TempPostgres(settings=settings, datadir_from=fault_datadir) as pg:
        yield pg


@pytest.fixture(scope="module")
def template(cluster: TempPostgres) -> str:
    """The template database of `cluster`, with pggcl installed."""
    return TEMPLATE


@pytest.fixture
def dsn(cluster: TempPostgres, template: str) -> Iterator[str]:
    """A fresh database with pggcl on this module's cluster (up again after the test)."""
    with temporary_database(cluster.dsn, "t_faults_", template=template) as db:
        try:
            yield db
        finally:
            if not cluster.running:
                cluster.start()


# --- Worker processes -----------------------------------------------------------------------


class Worker:
    """A process of `worker.py` (sync, async) or a `pggcl run` of it (cli), one role each."""

    def __init__(self, kind: str, role: str, directory: Path, proc: subprocess.Popen[bytes]):
        self.kind, self.role, self.dir, self.proc = kind, role, directory, proc
        self.killed_at: float | None = None

    def path(self, what: str) -> Path:
        return self.dir / f"{self.role}.{what}"

    @property
    def stderr(self) -> str:
        path = self.path("stderr")
        return path.read_text(errors="replace") if path.exists() else ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        path = self.path("events")
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        found = [json.loads(line) for line in lines if line.endswith("}")]
        return [e for e in found if name is None or e["event"] == name]

    def describe(self) -> str:
        events = [e["event"] for e in self.events()]
        errors = [e["error"] for e in self.events() if e.get("error")]
        tail = self.stderr.strip().splitlines()[-3:]
        return (
            f"{self.kind} {self.role} (exit status {self.proc.poll()}): events {events}, "
            f"errors {errors}, last stderr lines {tail}"
        )

    def wait(self, event: str, count: int = 1, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the `count`-th `event`; fails at once if the worker gave up first."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(event)
            if len(found) >= count:
                return found[count - 1]
            failed = [r for r in self.events("result") if not r["ok"]]
            if failed or self.proc.poll() is not None:
                # One last look: the event may have been written just before the exit.
                found = self.events(event)
                if len(found) >= count:
                    return found[count - 1]
                raise AssertionError(f"{event!r} never came: {self.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {event!r}: {self.describe()}")
            time.sleep(0.01)

    def release(self) -> None:
        """Let the worker leave its block."""
        self.path("release").touch()

    def quit(self) -> None:
        """Let the worker close its client and exit."""
        self.path("quit").touch()

    def finish(self, timeout: float = 20.0) -> int:
        """Release, quit, and wait for the exit; returns the exit status."""
        self.release()
        self.quit()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit: {self.describe()}") from None

    def kill(self) -> None:
        """SIGKILL the worker (for `pggcl run`: only the pggcl process, not COMMAND)."""
        self.killed_at = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def kill_group(self) -> None:
        """SIGKILL the worker's whole process group (with `pggcl run`, COMMAND too)."""
        self.killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def problems(self) -> list[str]:
        """What went wrong for user code, once the worker is done: an exception (sync,
        async; for cli an exit status other than COMMAND's 0, or an error message), slots of
        its own still held after a block (checked before the client closed)."""
        if self.kind == "cli":
            code = self.proc.poll()
            errors = [line for line in self.stderr.splitlines() if line.startswith("Error")]
            if code == 0 and not errors:
                return []  # warnings on stderr are no failure
            return [f"cli {self.role}: exit status {code}, stderr {self.stderr.strip()!r}"]
        found = []
        results = self.events("result")
        if not results:
            return [f"{self.kind} {self.role}: no result: {self.describe()}"]
        if not results[0]["ok"]:
            found.append(f"{self.kind} {self.role} raised {results[0]['error']}")
        if results[0]["left"]:
            found.append(
                f"{self.kind} {self.role}: {results[0]['left']} slot(s) still held after its block"
            )
        found += [
            f"{self.kind} {self.role}: close raised {e['error']}"
            for e in self.events("close_error")
        ]
        return found

    def intervals(self) -> list[tuple[float, float]]:
        """Hold intervals (time.monotonic, comparable across processes); a hold still open
        ends when the worker was killed, or now."""
        entered = {e["i"]: e["t"] for e in self.events("entered")}
        exiting = {e["i"]: e["t"] for e in self.events("exiting")}
        exited = {e["i"]: e["t"] for e in self.events("exited")}
        end_of_open = self.killed_at if self.killed_at is not None else time.monotonic()
        return [(t, exiting.get(i, exited.get(i, end_of_open))) for i, t in entered.items()]

    def sessions(self) -> set[int]:
        return {int(e["session"]) for e in self.events("entered") if e["session"] is not None}


class Workers:
    """Starts workers for a test and kills whatever is left of them afterwards."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.started: list[Worker] = []

    def start(
        self,
        kind: str,
        role: str,
        dsn: str,
        *,
        admin_dsn: str | None = None,
        names: str = "db",
        timeout: float | None = 60.0,
        grace: float | None = None,
        client_options: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        **spec: Any,
    ) -> Worker:
        """A holder/waiter of `kind` ("sync", "async", "cli") that acquires `names` through
        `dsn`. `admin_dsn` (direct, for its recordings) defaults to `dsn`. For "cli" the
        grace is pggcl run's own (the client default), and `client_options` do not apply:
        `env` (added to the process's environment, e.g. PGGCL_SESSION_DSN) does."""
        options = dict(client_options or {})
        if grace is not None:
            options["grace_seconds"] = grace
        full = {
            "role": role,
            "dir": str(self.dir),
            "dsn": dsn,
            "admin_dsn": admin_dsn or dsn,
            "names": names,
            "timeout": timeout,
            "client_options": options,
            **spec,
        }
        unset = ("PGGCL_DSN", "PGGCL_SESSION_DSN")
        environ = {k: v for k, v in os.environ.items() if k not in unset}
        environ.update(env or {})
        if kind == "cli":
            full.update(kind="command", wait_quit=False)
            cmd = [str(PGGCL), "run", names]
            if timeout is not None:
                cmd += ["--timeout", str(timeout)]
            cmd += ["--", sys.executable, str(WORKER), json.dumps(full)]
            environ["PGGCL_DSN"] = dsn
        else:
            full["kind"] = kind
            cmd = [sys.executable, str(WORKER), json.dumps(full)]
        with open(self.dir / f"{role}.stderr", "wb") as stderr:
            proc = subprocess.Popen(
                cmd,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group: killed whole afterwards
            )
        worker = Worker(kind, role, self.dir, proc)
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.started:
            pids = [worker.proc.pid] + [int(e["pid"]) for e in worker.events("entered")]
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.proc.pid, signal.SIGKILL)
            for pid in pids:  # a COMMAND that outlived a killed `pggcl run`
                if pid != os.getpid() and pid_alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            worker.proc.wait(10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.close()


class Problems:
    """Everything a fault test saw going wrong, reported together at the end."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.found.append(what)

    def expect(self, step: Callable[[], object]) -> None:
        """Run `step` (a wait or an assertion); an AssertionError is noted, not raised."""
        try:
            step()
        except AssertionError as exc:
            self.found.append(str(exc))

    def step(self, what: str, call: Callable[[], object]) -> None:
        """Run one call of user code; an exception from it is noted, not raised."""
        try:
            call()
        except Exception as exc:
            self.found.append(f"{what} raised {type(exc).__module__}.{type(exc).__name__}: {exc}")

    async def astep(self, what: str, call: Callable[[], Awaitable[object]]) -> None:
        """`step` for a coroutine function."""
        try:
            await call()
        except Exception as exc:
            self.found.append(f"{what} raised {type(exc).__module__}.{type(exc).__name__}: {exc}")

    def nothing_held_or_queued(self, dsn: str) -> None:
        holders, queue = held_and_queued(dsn)
        self.check(holders == [], f"left held: {holders}")
        self.check(queue == [], f"left queued: {queue}")

    def assert_none(self) -> None:
        assert not self.found, "\n".join(self.found)


def all_intervals(*workers: Worker) -> list[tuple[float, float]]:
    return [interval for worker in workers for interval in worker.intervals()]
