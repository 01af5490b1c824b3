"""The conformance driver: runs the scenarios of scenarios.json against a client program.

A client under test is an *adapter*: a program started as ``ADAPTER DSN GRACE HEARTBEAT`` that
reads one JSON command per line on stdin and writes one JSON event per line on stdout (the
protocol is in tests/conformance/README.md). Each scenario starts its actors (one adapter
process each, so one client and one session each), then runs its steps in order: SQL as the
database owner, commands to actors, expected events, kills, dropped session connections and
checks on the engine's views. ``run_scenario`` raises AssertionError naming the failed step.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
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
        # When each acquire was sent and each event read, on the wall clock: the server's
        # clock_timestamp() is that clock, so spans between them compare with the engine's.
        self.sent: dict[str, float] = {}
        self.read: dict[str, float] = {}  # tag: when its last expected event was read
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.events.put({**json.loads(line), "_read_at": time.time()})

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        if cmd.get("cmd") == "acquire":
            self.sent[cmd["tag"]] = time.time()
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
    """Run one scenario with actors started as ``[*adapter, dsn, grace, heartbeat]``; in a
    scenario with ``"proxy": true`` each actor reaches the server through a HoldingProxy of
    its own."""
    grace = str(scenario.get("grace", GRACE_SECONDS))
    heartbeat = str(scenario.get("heartbeat", HEARTBEAT_SECONDS))
    proxies: dict[str, HoldingProxy] = {}
    if scenario.get("proxy"):
        proxies = {n: HoldingProxy(dsn) for n in scenario["actors"]}
    actors = {
        n: Actor(n, [*adapter, proxies[n].dsn if proxies else dsn, grace, heartbeat])
        for n in scenario["actors"]
    }
    kept: list[tuple[Any, ...]] = []
    locks = RowLocks(dsn)
    try:
        with psycopg.connect(dsn, autocommit=True) as db:
            for actor in actors.values():
                actor.expect({"event": "ready"}, 30)
            for number, step in enumerate(scenario["steps"], 1):
                try:
                    kept = _step(step, actors, db, kept, locks, proxies)
                except AssertionError as exc:
                    where = f"{scenario['name']} step {number} {step}"
                    raise AssertionError(f"{where}: {exc}") from None
    finally:
        locks.close()
        for actor in actors.values():
            actor.stop()
        for proxy in proxies.values():
            proxy.close()


_SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104
_GRANTED = re.compile(rb"g:[0-9]+")


class _Link:
    """One client connection through a HoldingProxy: the replies it holds back, if any."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.held = False
        self.primed = False  # the armed statement was parsed here: hold from its execution
        self.pending: list[bytes] = []

    def to_client(self, message: bytes) -> None:
        with self.lock:
            if self.held:
                self.pending.append(message)
            else:
                self.client.sendall(message)

    def let_go(self) -> bool:
        """Send what was held, in order; False when nothing was held."""
        with self.lock:
            if not self.held:
                return False
            self.held = False
            for message in self.pending:
                self.client.sendall(message)
            self.pending.clear()
            return True


class HoldingProxy:
    """A TCP proxy between one actor and the server that can hold back the reply to a statement
    until a ``g:`` notification has reached the actor on another of its connections: the
    order PostgreSQL allows (a grant committed between an acquire's commit and its reply is
    notified at once; the reply may come later, on another socket or just after the
    notification on the same one) made certain instead of rare.

    ``arm(text)``: from the execution of the next statement whose text contains ``text`` (a
    Query message, or the Execute after such a Parse), every byte the server sends back on that
    connection is held. The first NotificationResponse
    with a ``g:`` payload forwarded on another connection ends the hold ``SETTLE`` seconds
    later (time for the client to read it before the reply comes: the point is the order in
    which the client reads them); ``CAP`` seconds without one end it too. ``holds`` says, per
    hold, what ended it: "notification", "cap", or "held" while it lasts.

    SSL and GSS encryption requests are refused by the proxy itself ('N'): the client goes on
    in plain text, which the proxy reads message by message (the frontend/backend protocol's
    framing: a type byte and a length)."""

    SETTLE = 0.3
    CAP = 10.0

    def __init__(self, dsn: str) -> None:
        parts = urllib.parse.urlsplit(dsn)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{port}"
        self.dsn = urllib.parse.urlunsplit(
            parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host)
        )
        self._lock = threading.Lock()
        self._armed: bytes | None = None
        self._holding: tuple[_Link, int] | None = None
        self.holds: list[str] = []
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, text: str) -> None:
        with self._lock:
            self._armed = text.encode()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            link = _Link(client)
            threading.Thread(target=self._up, args=(link, upstream), daemon=True).start()
            threading.Thread(target=self._down, args=(link, upstream), daemon=True).start()

    def _up(self, link: _Link, upstream: socket.socket) -> None:
        """Client to server: the startup packet (refusing encryption), then typed messages."""
        buf, started = b"", False
        try:
            while chunk := link.client.recv(65536):
                buf += chunk
                while True:
                    head = 4 if not started else 5
                    if len(buf) < head:
                        break
                    size = struct.unpack("!I", buf[head - 4 : head])[0] + head - 4
                    if len(buf) < size:
                        break
                    message, buf = buf[:size], buf[size:]
                    if not started:
                        code = struct.unpack("!I", message[4:8])[0]
                        if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                            link.client.sendall(b"N")
                            continue
                        started = True
                    elif message[:1] in (b"P", b"Q", b"E"):
                        self._maybe_hold(link, message)
                    upstream.sendall(message)
        except OSError:
            pass
        finally:
            self._shut(link.client, upstream)

    def _maybe_hold(self, link: _Link, message: bytes) -> None:
        """Hold the replies of ``link`` from the execution of the armed statement on: a Query
        with its text, or the Execute after a Parse of it (a driver may wait for the Parse's
        own reply before it binds and executes, as asyncpg does)."""
        with self._lock:
            kind = message[:1]
            if self._armed is None:
                return
            if kind == b"P" and self._armed in message:
                link.primed = True
                return
            if not (kind == b"Q" and self._armed in message) and not (kind == b"E" and link.primed):
                return
            self._armed = None
            link.primed = False
            with link.lock:
                link.held = True
            self.holds.append("held")
            self._holding = (link, len(self.holds) - 1)
        timer = threading.Timer(self.CAP, self._end_hold, args=(link, "cap"))
        timer.daemon = True
        timer.start()

    def _end_hold(self, link: _Link, why: str) -> None:
        with self._lock:
            if self._holding is None or self._holding[0] is not link:
                return
            index = self._holding[1]
            self._holding = None
            self.holds[index] = why
        with contextlib.suppress(OSError):
            link.let_go()

    def _down(self, link: _Link, upstream: socket.socket) -> None:
        """Server to client, message by message; a g: forwarded ends another link's hold."""
        buf = b""
        try:
            while chunk := upstream.recv(65536):
                buf += chunk
                while len(buf) >= 5:
                    size = struct.unpack("!I", buf[1:5])[0] + 1
                    if len(buf) < size:
                        break
                    message, buf = buf[:size], buf[size:]
                    link.to_client(message)
                    if message[:1] == b"A" and not link.held:
                        self._notified(link, message)
        except OSError:
            pass
        finally:
            self._shut(link.client, upstream)

    def _notified(self, link: _Link, message: bytes) -> None:
        # NotificationResponse: int32 pid, channel, payload (both NUL-terminated).
        payload = message[9:].split(b"\0")[1] if message.count(b"\0") >= 2 else b""
        if not _GRANTED.fullmatch(payload):
            return
        with self._lock:
            holding = self._holding
        if holding is not None and holding[0] is not link:
            timer = threading.Timer(self.SETTLE, self._end_hold, args=(holding[0], "notification"))
            timer.daemon = True
            timer.start()

    @staticmethod
    def _shut(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()


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
    kept: list[tuple[Any, ...]], locks: RowLocks, proxies: dict[str, HoldingProxy],
) -> list[tuple[Any, ...]]:  # fmt: skip
    if "sql" in step:
        db.execute(step["sql"])
    elif "send" in step:
        actors[step["send"]].send(step["cmd"])
    elif "expect" in step:
        actor = actors[step["expect"]]
        event = actor.expect(step["event"], step["within"])
        if "tag" in event:
            actor.read[event["tag"]] = event["_read_at"]
        if "elapsed" in step:
            low, high = step["elapsed"]
            assert low <= event["elapsed"] <= high, f"elapsed {event['elapsed']:.3f}s"
        for span in step.get("spans", []):
            # From sending an earlier acquire ("from_sent", a span that holds every server
            # moment of both calls, so the engine's own bounds hold on it exactly) or reading
            # its expected event ("from_read"), to reading this event.
            sent = "from_sent" in span
            start = actor.sent[span["from_sent"]] if sent else actor.read[span["from_read"]]
            took = event["_read_at"] - start
            low, high = span.get("at_least", 0.0), span.get("at_most", float("inf"))
            assert low <= took <= high, f"{took:.4f}s for {span}"
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
    elif "hold_reply" in step:
        proxies[step["hold_reply"]].arm(step["containing"])
    elif "replies_held" in step:
        holds = proxies[step["replies_held"]].holds
        assert holds == step["ended_by"], f"holds ended by {holds}, not {step['ended_by']}"
    else:
        raise AssertionError(f"unknown step {step}")
    return kept
