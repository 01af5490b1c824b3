"""The conformance driver: runs the scenarios of scenarios.json against a client program.

A client under test is an *adapter*: a program started as ``ADAPTER DSN GRACE HEARTBEAT`` that
reads one JSON command per line on stdin and writes one JSON event per line on stdout (the
protocol is in tests/conformance/README.md). Each scenario starts its actors (one adapter
process each, so one client and one session each), then runs its steps in order: SQL as the
database owner, commands to actors, expected events, kills, dropped session connections and
checks on the engine's views. ``run_scenario`` raises AssertionError naming the failed step.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

SCENARIOS = Path(__file__).with_name("scenarios.json")
GRACE_SECONDS = 1.0
HEARTBEAT_SECONDS = 0.5

Event = dict[str, Any]


def scenarios() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(SCENARIOS.read_text())["scenarios"]
    return loaded


class Actor:
    """One adapter process; its events are read by a thread into a queue."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.events: queue.Queue[Event] = queue.Queue()
        self.backlog: list[Event] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.events.put(json.loads(line))

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def expect(self, want: dict[str, Any], within: float) -> Event:
        """The first event (kept or coming) that has every key-value of ``want``."""
        for i, event in enumerate(self.backlog):
            if _matches(event, want):
                return self.backlog.pop(i)
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{self.name}: no event {want} within {within}s (got {self.backlog})"
                )
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if _matches(event, want):
                return event
            self.backlog.append(event)

    def expect_none(self, seconds: float) -> None:
        """No grant, timeout or error for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                return
            if event["event"] in ("granted", "timeout", "error"):
                raise AssertionError(f"{self.name}: unexpected {event}")
            self.backlog.append(event)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)


def _matches(event: Event, want: dict[str, Any]) -> bool:
    return all(event.get(k) == v for k, v in want.items())


def _churn(actors: list[Actor], step: dict[str, Any]) -> None:
    failures: list[str] = []

    def work(actor: Actor) -> None:
        try:
            for i in range(step["rounds"]):
                tag = f"churn-{i}"
                actor.send({"cmd": "acquire", "tag": tag, "names": step["names"],
                            "timeout": step["timeout"]})  # fmt: skip
                actor.expect({"event": "granted", "tag": tag}, step["timeout"] + 5)
                time.sleep(0.005)
                actor.send({"cmd": "release", "tag": tag})
                actor.expect({"event": "released", "tag": tag}, 10)
        except AssertionError as exc:
            failures.append(str(exc))

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(a,)) for a in actors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    assert not failures, failures
    assert took < step["max_seconds"], f"churn took {took:.1f}s"


def run_scenario(scenario: dict[str, Any], adapter: Sequence[str], dsn: str) -> None:
    """Run one scenario with actors started as ``[*adapter, dsn, grace, heartbeat]``."""
    grace = str(scenario.get("grace", GRACE_SECONDS))
    heartbeat = str(scenario.get("heartbeat", HEARTBEAT_SECONDS))
    actors = {n: Actor(n, [*adapter, dsn, grace, heartbeat]) for n in scenario["actors"]}
    kept: list[tuple[Any, ...]] = []
    locks = RowLocks(dsn)
    try:
        with psycopg.connect(dsn, autocommit=True) as db:
            for actor in actors.values():
                actor.expect({"event": "ready"}, 30)
            for number, step in enumerate(scenario["steps"], 1):
                try:
                    kept = _step(step, actors, db, kept, locks)
                except AssertionError as exc:
                    where = f"{scenario['name']} step {number} {step}"
                    raise AssertionError(f"{where}: {exc}") from None
    finally:
        locks.close()
        for actor in actors.values():
            actor.stop()


class RowLocks:
    """Transactions of their own that hold limits' row locks (``lock_limit``), so that every
    acquire, take and release of such a limit waits until ``unlock``; ``kill_blocked``
    terminates the calls that wait (their answer is lost mid-call)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.held: dict[str, psycopg.Connection[Any]] = {}

    def lock(self, name: str) -> None:
        conn = psycopg.connect(self.dsn)
        conn.execute("SELECT 1 FROM pggcl.limit_state WHERE name = %s FOR UPDATE", (name,))
        self.held[name] = conn

    def unlock(self, name: str) -> None:
        conn = self.held.pop(name)
        conn.commit()
        conn.close()

    def kill_blocked(self, db: psycopg.Connection[Any], name: str, within: float) -> None:
        holder = self.held[name].info.backend_pid
        blocked = "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
        deadline = time.monotonic() + within
        while not (pids := [r[0] for r in db.execute(blocked, (holder,)).fetchall()]):
            assert time.monotonic() < deadline, f"no call waited for the lock on {name}"
            time.sleep(0.02)
        db.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)"
        while (row := db.execute(gone, (pids,)).fetchone()) is not None and row[0] > 0:
            assert time.monotonic() < deadline, f"backends {pids} did not go"
            time.sleep(0.02)

    def close(self) -> None:
        for conn in self.held.values():
            conn.close()
        self.held.clear()


_CLAIMS = (
    "SELECT 'lease', lease_id::text, session_id FROM pggcl.holders WHERE name = %(n)s"
    " UNION ALL SELECT 'waiter', waiter_id::text, session_id FROM pggcl.queue WHERE name = %(n)s"
    " ORDER BY 1, 2"
)

_TERMINATE = "SELECT pg_terminate_backend(backend_pid) FROM pggcl.sessions WHERE id = ANY(%s)"


def _step(
    step: dict[str, Any], actors: dict[str, Actor], db: psycopg.Connection[Any],
    kept: list[tuple[Any, ...]], locks: RowLocks,
) -> list[tuple[Any, ...]]:  # fmt: skip
    if "sql" in step:
        db.execute(step["sql"])
    elif "send" in step:
        actors[step["send"]].send(step["cmd"])
    elif "expect" in step:
        event = actors[step["expect"]].expect(step["event"], step["within"])
        if "elapsed" in step:
            low, high = step["elapsed"]
            assert low <= event["elapsed"] <= high, f"elapsed {event['elapsed']:.3f}s"
    elif "expect_none" in step:
        actors[step["expect_none"]].expect_none(step["for"])
    elif "sleep" in step:
        time.sleep(step["sleep"])
    elif "kill" in step:
        actors[step["kill"]].kill()
    elif "wait_queued" in step:
        deadline = time.monotonic() + step["within"]
        while True:
            row = db.execute(
                "SELECT count(*) FROM pggcl.queue WHERE name = %s", (step["wait_queued"],)
            ).fetchone()
            if row is not None and row[0] == step["count"]:
                break
            assert time.monotonic() < deadline, f"{row} queued, not {step['count']}"
            time.sleep(0.02)
    elif "check" in step:
        row = db.execute(step["check"]).fetchone()
        assert row is not None and row[0] == step["equals"], f"{step['check']} gave {row}"
    elif "drop_sessions" in step:
        kept = db.execute(_CLAIMS, {"n": step["drop_sessions"]}).fetchall()
        assert kept, "nothing to drop"
        dropped = db.execute(_TERMINATE, ([r[2] for r in kept],)).fetchall()
        assert dropped and all(r[0] for r in dropped), dropped
    elif "sessions_kept" in step:
        now = db.execute(_CLAIMS, {"n": step["sessions_kept"]}).fetchall()
        assert now == kept, f"before the drop {kept}, now {now}"
    elif "churn" in step:
        _churn([actors[n] for n in step["churn"]], step)
    elif "lock_limit" in step:
        locks.lock(step["lock_limit"])
    elif "unlock" in step:
        locks.unlock(step["unlock"])
    elif "kill_blocked" in step:
        locks.kill_blocked(db, step["kill_blocked"], step["within"])
    else:
        raise AssertionError(f"unknown step {step}")
    return kept
