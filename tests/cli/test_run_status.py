"""`pggcl run`'s status line while it waits: on a terminal (a real pseudo-terminal), kept
current and erased when COMMAND starts; on a pipe silent, unless --verbose.

Every wait here is for an event: a line on the terminal, a row in pggcl.queue, a process's end.
"""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import pggcl
from pggcl.cli.status import describe, ours
from pggcl.models import ConcurrencyLimit, Holder, Waiter
from tests.cli.conftest import PGGCL, env_with, wait_for

ERASE = b"\r\x1b[K"


@pytest.fixture
def client(pggcl_dsn: str) -> Iterator[pggcl.Client]:
    with pggcl.Client(pggcl_dsn) as c:
        yield c


def _read_until(fd: int, wanted: bytes, seen: bytearray, timeout: float = 30.0) -> None:
    """Read the terminal into ``seen`` until it holds ``wanted`` (or fail, showing it)."""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{wanted!r} never appeared on the terminal: {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other end closed (EIO on Linux)
                chunk = b""
            assert chunk, f"the terminal closed before {wanted!r}: {bytes(seen)!r}"
            seen += chunk


def test_on_a_terminal_the_wait_is_explained_then_erased(
    pggcl_dsn: str, client: pggcl.Client, tmp_path: Path
) -> None:
    client.create_limit("db", 1)
    out = tmp_path / "out"
    master, slave = pty.openpty()
    try:
        with client.concurrency("db", holder="the-blocker"):
            proc = subprocess.Popen(
                [str(PGGCL), "run", "db", "--", "sh", "-c", f"echo started > {out}"],
                env={**env_with(pggcl_dsn), "COLUMNS": "400"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=slave,
            )
            seen = bytearray()
            _read_until(master, b"1st in queue (0 ahead)", seen)
            line = bytes(seen).rsplit(ERASE, 1)[-1].decode()
            assert line.startswith("pggcl: waiting "), line
            assert "'db' 1/1 in use, held by the-blocker since " in line
            assert not out.exists()
        assert proc.wait(timeout=30) == 0
        os.close(slave)
        slave = -1
        rest = bytearray(seen)
        try:
            while chunk := os.read(master, 4096):
                rest += chunk
        except OSError:
            pass
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    # The last thing written is the erasure: no status line is left on the terminal.
    assert bytes(rest).endswith(ERASE), bytes(rest)[-200:]
    assert out.read_text() == "started\n"


def test_on_a_pipe_it_is_silent_unless_verbose(
    pggcl_dsn: str, client: pggcl.Client, tmp_path: Path
) -> None:
    client.create_limit("db", 1)

    def start(*options: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(PGGCL), "run", *options, "db", "--", "true"],
            env=env_with(pggcl_dsn),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # no terminal
        )

    with client.concurrency("db", holder="the-blocker"):
        quiet = start()
        wait_for(lambda: len(client.queue("db")) == 1, "the quiet run queues")
        verbose = start("--verbose")
        assert verbose.stderr is not None
        # The verbose one, which queued later, has printed its line: the quiet one has waited
        # longer than that and would have printed one by now.
        line = verbose.stderr.readline()
        assert line.startswith("pggcl: waiting "), line
        assert "held by the-blocker" in line and "2nd in queue (1 ahead)" in line
    _, quiet_err = quiet.communicate(timeout=30)
    _, verbose_err = verbose.communicate(timeout=30)
    assert (quiet.returncode, quiet_err) == (0, "")
    assert verbose.returncode == 0
    assert all(x.startswith("pggcl: waiting ") for x in verbose_err.splitlines())


def test_the_line_names_limits_holders_and_place() -> None:
    at = datetime(2026, 12, 2, 12, 1, 7, tzinfo=UTC)
    limit = ConcurrencyLimit("db\x1b[2J", 5, True, 5.0, 0.0, 2, at, at, 5, 0.0)
    holders = [
        Holder(uuid.uuid4(), "db", 2, "late", 1, at.replace(minute=5), None),
        Holder(uuid.uuid4(), "db", 3, "early", 2, at, None),
    ]
    me = f"{socket.gethostname()}:{os.getpid()}:MainThread"
    queue = [
        Waiter(1, "db", 1, 1, "concurrency", "other", 3, at),
        Waiter(2, "db", 2, 1, "concurrency", me, 4, at),
    ]
    assert describe(limit, holders, queue) == (
        "'db\\x1b[2J' 5/5 in use, held by early since 2026-12-02T12:01:07Z and 1 more, "
        "2nd in queue (1 ahead)"
    )
    assert ours(me) and not ours("other") and not ours(me.replace(":MainThread", "1:x"))
