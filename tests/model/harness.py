"""The engine side of the model-based test: raw psycopg connections acting as client sessions
(open_session, LISTEN, the calls of the protocol in sql/30_sessions.sql), and what the test
reads back as the superuser (private tables included) to compare with the model."""

from __future__ import annotations

import select
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.model.model import Model, Outcome

#: How long a notification the model expects may take to arrive (loopback: milliseconds).
NOTIFY_TIMEOUT = 2.0

SNAPSHOT = (
    'SELECT id, name, "limit", slot_decay_per_second, active, held, queued, queue_from, level,'
    " level_at, created, updated FROM pggcl.limit_state ORDER BY id",
    "SELECT * FROM pggcl.leases ORDER BY id, limit_id",
    "SELECT * FROM pggcl.waiters ORDER BY id, limit_id",
    "SELECT id, token, backend_pid, grace_seconds, dead_since, reclaimed FROM pggcl.sessions"
    " ORDER BY id",
)


class Mismatch(AssertionError):
    """The engine did something the model's rules say it must not."""


@dataclass
class Session:
    slot: int
    conn: psycopg.Connection[Any]
    id: int
    pid: int
    alive: bool = True


@dataclass
class Request:
    """A queued request as its client knows it."""

    waiter_id: int
    session: int  # session id
    lease_id: uuid.UUID
    mode: str
    single_name: str | None  # the limit, for a single-limit request of 1 slot (FIFO check)


@dataclass
class Engine:
    dsn: str
    admin: psycopg.Connection[Any] = field(init=False)
    sessions: dict[int, Session] = field(default_factory=dict)  # by slot
    requests: dict[int, Request] = field(default_factory=dict)  # by waiter id
    #: Notifications the model expects, by waiter id: "g" or "e".
    expected: dict[int, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.admin = psycopg.connect(self.dsn, autocommit=True)
        self.admin.execute(
            "TRUNCATE pggcl.limit_state, pggcl.leases, pggcl.waiters, pggcl.sessions"
        )

    # --- sessions ---------------------------------------------------------------------------

    def open(self, slot: int) -> Session:
        conn = psycopg.connect(self.dsn, autocommit=True)
        row = conn.execute(
            "SELECT session_id, channel, pg_backend_pid() FROM pggcl.open_session(0)"
        ).fetchone()
        assert row is not None
        conn.execute(f'LISTEN "{row[1]}"')
        session = Session(slot, conn, row[0], row[2])
        self.sessions[slot] = session
        return session

    def by_id(self, session_id: int) -> Session | None:
        for s in self.sessions.values():
            if s.id == session_id and s.alive:
                return s
        return None

    def kill(self, session: Session) -> None:
        """pg_terminate_backend of the session's connection, waiting until it is gone."""
        row = self.admin.execute(
            "SELECT pg_terminate_backend(%s, 10000)", (session.pid,)
        ).fetchone()
        assert row == (True,), f"backend {session.pid} did not end"
        session.alive = False
        session.conn.close()

    def close(self) -> None:
        for s in self.sessions.values():
            s.conn.close()
        self.admin.close()

    # --- reading ----------------------------------------------------------------------------

    def snapshot(self) -> list[list[tuple[Any, ...]]]:
        return [self.admin.execute(q).fetchall() for q in SNAPSHOT]

    def queued_ids(self) -> set[int]:
        return {r[0] for r in self.admin.execute("SELECT DISTINCT id FROM pggcl.waiters")}

    # --- notifications ----------------------------------------------------------------------

    def expect(self, out: Outcome) -> None:
        for wid in out.granted:
            self.expected[wid] = "g"
        for wid in out.rejected:
            self.expected[wid] = "e"

    def pump(self, recheck: Callable[[Session, Request], str]) -> None:
        """Read every live session's notifications, acting on them as a client does (`r:`:
        recheck), until the expected ones have all arrived or NOTIFY_TIMEOUT passes."""
        deadline = time.monotonic() + NOTIFY_TIMEOUT
        while True:
            for s in list(self.sessions.values()):
                if not s.alive:
                    continue
                per_limit_last: dict[str, int] = {}
                # (Read them all first: the generator holds the connection's lock.)
                for note in list(s.conn.notifies(timeout=0)):
                    kind, _, rest = note.payload.partition(":")
                    wid = int(rest.split(":", 1)[0])
                    self.log.append(f"notify s{s.id} {note.payload}")
                    if kind == "r":
                        req = self.requests.get(wid)
                        if req is not None:
                            recheck(s, req)
                        continue
                    if self.expected.get(wid) != kind:
                        raise Mismatch(
                            f"unexpected notification {note.payload!r} on session {s.id} "
                            f"(expected for this waiter: {self.expected.get(wid)!r})"
                        )
                    del self.expected[wid]
                    req = self.requests.get(wid)
                    if kind == "g" and req is not None and req.single_name is not None:
                        last = per_limit_last.get(req.single_name, 0)
                        if wid < last:
                            raise Mismatch(
                                f"grants out of queue order on {req.single_name!r}: "
                                f"g:{wid} arrived after g:{last}"
                            )
                        per_limit_last[req.single_name] = wid
            if not self.expected:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise Mismatch(f"notifications never arrived: {self.expected}")
            fds = [s.conn.fileno() for s in self.sessions.values() if s.alive]
            select.select(fds, [], [], min(left, 0.05))


def db_state(admin: psycopg.Connection[Any]) -> dict[str, Any]:
    """The engine's state in the model's terms, read from the private tables."""
    limits = {
        r[0]: r[1:]
        for r in admin.execute(
            'SELECT l.name, l."limit", l.slot_decay_per_second, l.active, l.held, l.queued,'
            " v.decaying_slots, v.held_slots, v.waiting"
            " FROM pggcl.limit_state l JOIN pggcl.limits v ON v.name = l.name"
        )
    }
    leases = set(
        admin.execute(
            "SELECT x.id, l.name, x.occupy, x.session_id, x.expires_at IS NOT NULL"
            " FROM pggcl.leases x JOIN pggcl.limit_state l ON l.id = x.limit_id"
        ).fetchall()
    )
    waiters = {
        (*row[:6], tuple(row[6] or ()))
        for row in admin.execute(
            "SELECT w.id, l.name, w.occupy, w.mode, w.session_id, w.lease_id,"
            " (SELECT array_agg(y.name ORDER BY y.name) FROM pggcl.limit_state y"
            "   WHERE y.id = ANY(w.limit_ids))"
            " FROM pggcl.waiters w JOIN pggcl.limit_state l ON l.id = w.limit_id"
        )
    }
    lease_rows = admin.execute(
        "SELECT l.name, coalesce(sum(x.occupy), 0), count(x.*) FROM pggcl.limit_state l"
        " LEFT JOIN pggcl.leases x ON x.limit_id = l.id GROUP BY l.name"
    ).fetchall()
    waiter_rows = dict(
        admin.execute(
            "SELECT l.name, count(w.*) FROM pggcl.limit_state l"
            " LEFT JOIN pggcl.waiters w ON w.limit_id = l.id GROUP BY l.name"
        ).fetchall()
    )
    return {
        "limits": limits,
        "leases": leases,
        "waiters": waiters,
        "lease_sums": {name: int(total) for name, total, _ in lease_rows},
        "waiter_rows": waiter_rows,
    }


def model_state(model: Model) -> dict[str, Any]:
    leases = {
        (lease.id, name, occupy, lease.session, lease.ttl)
        for lease in model.leases.values()
        for name, occupy in lease.rows.items()
    }
    waiters = {
        (w.id, name, w.occupy, w.mode, w.session, w.lease_id, tuple(w.names))
        for w in model.waiters.values()
        for name in w.names
    }
    return {"leases": leases, "waiters": waiters}


def fixpoint_violations(state: dict[str, Any]) -> list[str]:
    """Queued requests that the grant rule would serve now, read from the engine's rows alone
    (whatever the model says): a waiter with room on every limit and nobody before it on any
    of its active limits, left asleep."""
    limits = state["limits"]
    by_id: dict[int, list[tuple[Any, ...]]] = {}
    for row in state["waiters"]:
        by_id.setdefault(row[0], []).append(row)
    blocked: set[str] = set()
    problems = []
    for wid in sorted(by_id):
        rows = by_id[wid]
        names = sorted({r[1] for r in rows})
        occupy, mode = rows[0][2], rows[0][3]
        active = {n for n in names if limits[n][2]}
        impossible = any(
            occupy > limits[n][0] or (mode == "rate_limit" and limits[n][1] == 0) for n in active
        )
        if active & blocked:
            blocked |= active
        elif impossible:
            continue
        elif all(limits[n][3] + limits[n][5] + occupy <= limits[n][0] + 1e-9 for n in active):
            problems.append(
                f"waiter {wid} ({mode}, occupy {occupy} on {names}) is queued with room on every"
                " limit and nobody ahead of it"
            )
        else:
            blocked |= active
    return problems
