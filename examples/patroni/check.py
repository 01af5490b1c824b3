"""The clients' side of examples/patroni/run.sh: a holder and two queued waiters ride through
a Patroni failover, and the invariants are checked.

    python check.py --dsn DSN --work DIR --rest 8008,8009 --nodes node0,node1

DSN names both PostgreSQL nodes with ``target_session_attrs=read-write``. The holder (the sync
client, ``pggcl.Client``) sits inside ``concurrency("example")`` on a limit of 1; behind it wait
an async client (``pggcl.AsyncClient``) and a ``pggcl run``, each in its own process. Then the
leader node is lost (its Patroni and its PostgreSQL SIGKILLed, as when its machine dies), the
holder leaves its block at once (while no node takes writes), and Patroni promotes the
replica. What must hold: both waiters are granted, one after the other (in either order: a
waiter still reconnecting when the slot frees is passed over, keeping its place for the next
slot), no exception reaches any client's code (``pggcl run`` exits with COMMAND's 0), no two
processes are ever inside their blocks at once (``time.monotonic()`` intervals, comparable
across processes on one machine), and nothing is left held or queued. Exits 0 when all of
that holds, 1 otherwise (saying what failed).

``python check.py child ...`` is one of those client processes (used by the above).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

import pggcl

LIMIT = "example"
GRACE = 30.0  # the sync and async clients' grace_seconds: more than a failover takes
PGGCL = Path(sys.executable).parent / "pggcl"


# --- the client processes ----------------------------------------------------------------


def record(directory: Path, role: str, event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "t": time.monotonic(), "pid": os.getpid(), **fields})
    with open(directory / f"{role}.events", "a") as f:
        f.write(line + "\n")


def child(args: argparse.Namespace) -> int:
    """One client: enter the block, record it, wait for the release file, leave."""
    directory, role = Path(args.dir), args.role
    release = directory / f"{role}.release"
    options: dict[str, Any] = {"grace_seconds": GRACE}
    if args.kind == "command":  # COMMAND of a `pggcl run`: the slot is its parent's
        record(directory, role, "entered")
        while not release.exists():
            time.sleep(0.01)
        record(directory, role, "exited")
        return 0
    ok, error = True, None
    try:
        if args.kind == "sync":
            with (
                pggcl.Client(args.dsn, **options) as client,
                client.concurrency(LIMIT, timeout_seconds=120),
            ):
                record(directory, role, "entered")
                while not release.exists():
                    time.sleep(0.01)
                record(directory, role, "exited")
        else:

            async def run() -> None:
                async with (
                    pggcl.AsyncClient(args.dsn, **options) as client,
                    client.concurrency(LIMIT, timeout_seconds=120),
                ):
                    record(directory, role, "entered")
                    while not release.exists():
                        await asyncio.sleep(0.01)
                    record(directory, role, "exited")

            asyncio.run(run())
    except BaseException as exc:  # anything reaching "user code" is a failure
        ok, error = False, "".join(traceback.format_exception_only(type(exc), exc)).strip()
    record(directory, role, "result", ok=ok, error=error)
    return 0 if ok else 1


# --- the orchestration -------------------------------------------------------------------


class Client:
    def __init__(self, kind: str, role: str, directory: Path, dsn: str) -> None:
        self.kind, self.role, self.dir = kind, role, directory
        me = [sys.executable, __file__, "child", "--kind", kind, "--role", role]
        me += ["--dir", str(directory), "--dsn", dsn]
        env = dict(os.environ)
        if kind == "cli":
            cmd = [str(PGGCL), "run", LIMIT, "--timeout", "120", "--", *me]
            cmd[cmd.index("--kind") + 1] = "command"
            env["PGGCL_DSN"] = dsn
        else:
            cmd = me
        self.stderr = open(directory / f"{role}.stderr", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.stderr)

    def events(self, name: str) -> list[dict[str, Any]]:
        path = self.dir / f"{self.role}.events"
        if not path.exists():
            return []
        found = [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]
        return [e for e in found if e["event"] == name]

    def wait(self, event: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.events(event):
            if self.proc.poll() is not None and not self.events(event):
                raise Failed(f"{self.role} ({self.kind}) exited before {event!r}: {self.tail()}")
            if time.monotonic() > deadline:
                raise Failed(f"{self.role} ({self.kind}): no {event!r} in {timeout} s")
            time.sleep(0.02)

    def release(self) -> None:
        (self.dir / f"{self.role}.release").touch()

    def tail(self) -> str:
        text = (self.dir / f"{self.role}.stderr").read_text(errors="replace").strip()
        return " | ".join(text.splitlines()[-5:])

    def interval(self) -> tuple[float, float] | None:
        entered, exited = self.events("entered"), self.events("exited")
        if not entered:
            return None
        return entered[0]["t"], exited[0]["t"] if exited else time.monotonic()


class Failed(Exception):
    pass


def first_to_enter(clients: list[Client], timeout: float) -> Client:
    """The first of ``clients`` to record "entered" within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for c in clients:
            if c.events("entered"):
                return c
            if c.proc.poll() is not None:
                raise Failed(f"{c.role} ({c.kind}) exited before 'entered': {c.tail()}")
        if time.monotonic() > deadline:
            names = ", ".join(c.role for c in clients)
            raise Failed(f"none of {names} entered in {timeout} s")
        time.sleep(0.02)


def rest(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET Patroni's REST API on 127.0.0.1: (status, JSON body); (0, {}) when unreachable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return 0, {}


def leader(ports: dict[str, int]) -> str | None:
    for name, port in ports.items():
        if rest(port, "/primary")[0] == 200:
            return name
    return None


def wait_leader(ports: dict[str, int], other_than: str | None, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = leader(ports)
        if found is not None and found != other_than:
            return found
        if time.monotonic() > deadline:
            raise Failed(f"no new leader within {timeout} s")
        time.sleep(0.1)


def lose_node(work: Path, name: str) -> None:
    """SIGKILL the node's Patroni and its PostgreSQL (postmaster and every child): its
    machine is gone. Nothing of it shuts down cleanly."""
    patroni_pid = int((work / f"{name}.pid").read_text())
    postmaster = int((work / name / "data" / "postmaster.pid").read_text().split()[0])
    pids = [patroni_pid, postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def queued(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM pggcl.queue WHERE name = %s", (LIMIT,)).fetchone()
        return int(row[0]) if row else 0


def left(dsn: str) -> tuple[list[Any], list[Any]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        holders = conn.execute("SELECT lease_id, holder FROM pggcl.holders").fetchall()
        queue = conn.execute("SELECT waiter_id, holder FROM pggcl.queue").fetchall()
        return holders, queue


def orchestrate(args: argparse.Namespace) -> int:
    work, dsn = Path(args.work), args.dsn
    ports = dict(zip(args.nodes.split(","), map(int, args.rest.split(",")), strict=True))
    directory = work / "clients"
    directory.mkdir(exist_ok=True)
    problems: list[str] = []
    clients: list[Client] = []
    try:
        with pggcl.Client(dsn) as admin:
            admin.create_limit(LIMIT, limit=1)
        old = wait_leader(ports, None, 30)
        holder = Client("sync", "holder", directory, dsn)
        clients.append(holder)
        holder.wait("entered", 30)
        for kind, role in (("async", "waiter1"), ("cli", "waiter2")):
            clients.append(Client(kind, role, directory, dsn))
            count = len(clients) - 1
            deadline = time.monotonic() + 30
            while queued(dsn) < count:
                if time.monotonic() > deadline:
                    raise Failed(f"{role} never queued")
                time.sleep(0.02)
        print(f"check: leader {old}; holder inside, 2 waiters queued; losing {old}", flush=True)

        killed = time.monotonic()
        lose_node(work, old)
        holder.release()  # leaves its block now: its release waits for a new leader
        new = wait_leader(ports, old, 90)
        promoted = time.monotonic() - killed
        print(f"check: {new} is the leader {promoted:.1f} s after {old} was lost", flush=True)

        holder.wait("exited", 60)
        # In either order: a waiter whose client is still reconnecting when the slot frees is
        # passed over (and keeps its place for the next slot), so the other may go first.
        waiting = clients[1:]
        while waiting:
            waiter = first_to_enter(waiting, 90)
            waiter.release()
            waiter.wait("exited", 30)
            waiting.remove(waiter)
        granted = time.monotonic() - killed
        print(f"check: both waiters granted and done {granted:.1f} s after the loss", flush=True)
        for c in clients:
            c.proc.wait(60)
    except Failed as exc:
        problems.append(str(exc))
    finally:
        for c in clients:
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()
            c.stderr.close()

    for c in clients:
        if c.proc.returncode != 0:
            problems.append(f"{c.role} ({c.kind}) exit status {c.proc.returncode}: {c.tail()}")
        for result in c.events("result"):
            if not result["ok"]:
                problems.append(f"{c.role} ({c.kind}) raised {result['error']}")
        if c.kind == "cli":
            errors = [x for x in c.tail().split(" | ") if x.startswith("Error")]
            problems += [f"{c.role} (pggcl run): {e}" for e in errors]
    intervals = sorted(i for c in clients if (i := c.interval()) is not None)
    overlapping = [(a, b) for a, b in itertools.pairwise(intervals) if b[0] < a[1]]
    if overlapping:
        problems.append(f"a slot was held twice: {overlapping}")
    try:
        holders, queue = left(dsn)
        if holders or queue:
            problems.append(f"left held {holders}, left queued {queue}")
    except psycopg.Error as exc:
        problems.append(f"could not read what is left: {exc}")
    for p in problems:
        print(f"check: FAILED: {p}", flush=True)
    if not problems:
        print("check: OK: no exception reached the clients, no slot held twice, nothing left")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    c = sub.add_parser("child")
    c.add_argument("--kind", choices=["sync", "async", "command"], required=True)
    c.add_argument("--role", required=True)
    c.add_argument("--dir", required=True)
    c.add_argument("--dsn", required=True)
    parser.add_argument("--dsn")
    parser.add_argument("--work")
    parser.add_argument("--rest")
    parser.add_argument("--nodes")
    args = parser.parse_args()
    if args.command == "child":
        return child(args)
    if not (args.dsn and args.work and args.rest and args.nodes):
        parser.error("--dsn, --work, --rest and --nodes are required")
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
