"""A holder or waiter of the fault tests, in its own process: ``python worker.py SPEC``.

SPEC is a JSON object (see :func:`main`). The worker records what happens as JSON lines in
``DIR/ROLE.events`` and reacts to files the test creates (``DIR/ROLE.release``: leave the
block; ``DIR/ROLE.quit``: close the client and exit), so that the test waits for events,
never for durations. Every exception that reaches this "user code" is recorded in its
``result`` event (and makes the exit status 1).

Kinds: ``sync`` (pggcl.Client), ``async`` (pggcl.AsyncClient), and ``command``: the COMMAND
that a ``pggcl run`` runs, which records its own entry, exit and the lease's session.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import psycopg

import pggcl

POLL = 0.01


class Spec:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.kind: str = raw["kind"]
        self.role: str = raw["role"]
        self.dir = Path(raw["dir"])
        self.dsn: str = raw.get("dsn", "")
        self.admin_dsn: str = raw["admin_dsn"]  # direct, for the recordings
        self.names: str = raw.get("names", "db")
        self.timeout: float | None = raw.get("timeout", 60.0)
        self.holds: int = raw.get("holds", 1)
        self.hold_seconds: float = raw.get("hold_seconds", 0.0)  # work inside the block
        self.wait_release: bool = raw.get("wait_release", True)
        self.wait_quit: bool = raw.get("wait_quit", True)
        self.client_options: dict[str, Any] = raw.get("client_options", {})

    def path(self, what: str) -> Path:
        return self.dir / f"{self.role}.{what}"

    def record(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "t": time.monotonic(), "pid": os.getpid(), **fields})
        with open(self.path("events"), "a") as f:
            f.write(line + "\n")


def _admin(spec: Spec, query: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(spec.admin_dsn, autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


def _session_of_lease(spec: Spec, lease_id: object) -> int | None:
    rows = _admin(spec, "SELECT session_id FROM pggcl.holders WHERE lease_id = %s", lease_id)
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def _left_of_lease(spec: Spec, lease_id: object) -> int:
    rows = _admin(spec, "SELECT count(*) FROM pggcl.holders WHERE lease_id = %s", lease_id)
    return int(rows[0][0])


def _wait_file(path: Path) -> None:
    while not path.exists():
        time.sleep(POLL)


async def _await_file(path: Path) -> None:
    while not path.exists():
        await asyncio.sleep(POLL)


def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def run_sync(spec: Spec) -> bool:
    ok, error, left = True, None, 0
    client = None
    try:
        client = pggcl.Client(spec.dsn, **spec.client_options)
        for i in range(spec.holds):
            with client.concurrency(spec.names, timeout_seconds=spec.timeout) as grant:
                spec.record("entered", i=i, session=_session_of_lease(spec, grant.lease_id))
                if spec.hold_seconds:
                    time.sleep(spec.hold_seconds)
                if spec.wait_release:
                    _wait_file(spec.path("release"))
                spec.record("exiting", i=i)
            spec.record("exited", i=i)
            left += _left_of_lease(spec, grant.lease_id)
    except BaseException as exc:
        ok, error = False, _error(exc)
    spec.record("result", ok=ok, error=error, left=left)
    if spec.wait_quit:
        _wait_file(spec.path("quit"))
    if client is not None:
        try:
            client.close()
        except BaseException as exc:
            spec.record("close_error", error=_error(exc))
            ok = False
    return ok


async def run_async(spec: Spec) -> bool:
    ok, error, left = True, None, 0
    client = None
    try:
        client = pggcl.AsyncClient(spec.dsn, **spec.client_options)
        for i in range(spec.holds):
            async with client.concurrency(spec.names, timeout_seconds=spec.timeout) as grant:
                session = await asyncio.to_thread(_session_of_lease, spec, grant.lease_id)
                spec.record("entered", i=i, session=session)
                if spec.hold_seconds:
                    await asyncio.sleep(spec.hold_seconds)
                if spec.wait_release:
                    await _await_file(spec.path("release"))
                spec.record("exiting", i=i)
            spec.record("exited", i=i)
            left += await asyncio.to_thread(_left_of_lease, spec, grant.lease_id)
    except BaseException as exc:
        ok, error = False, _error(exc)
    spec.record("result", ok=ok, error=error, left=left)
    if spec.wait_quit:
        await _await_file(spec.path("quit"))
    if client is not None:
        try:
            await client.close()
        except BaseException as exc:
            spec.record("close_error", error=_error(exc))
            ok = False
    return ok


def run_command(spec: Spec) -> bool:
    """COMMAND of `pggcl run`: its lease is the one whose holder names our parent's pid."""
    rows = _admin(
        spec,
        "SELECT session_id FROM pggcl.holders WHERE holder LIKE %s",
        f"%:{os.getppid()} %",
    )
    spec.record("entered", i=0, session=rows[0][0] if rows else None, ppid=os.getppid())
    if spec.hold_seconds:
        time.sleep(spec.hold_seconds)
    if spec.wait_release:
        _wait_file(spec.path("release"))
    spec.record("exited", i=0)
    return True


def main() -> None:
    spec = Spec(json.loads(sys.argv[1]))
    if spec.kind == "sync":
        ok = run_sync(spec)
    elif spec.kind == "async":
        ok = asyncio.run(run_async(spec))
    elif spec.kind == "command":
        ok = run_command(spec)
    else:
        raise SystemExit(f"unknown kind {spec.kind!r}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
