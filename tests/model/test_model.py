"""Model-based test of the engine (issue #12, point 7): hypothesis drives the SQL API with
random sequences of calls, through raw psycopg connections acting as client sessions (the
protocol of sql/30_sessions.sql: open_session, LISTEN, take / acquire / try_acquire, recheck
on `r:`, cancel, release, renew, heartbeat), plus limit management (create, update: limit up
and down, active on and off, decay; delete) and session deaths (pg_terminate_backend of a
session's connection; grace 0, reclaimed by the next reap, here `pggcl.reclaim()`), against
the plain Python model of tests/model/model.py.

After every step it checks:
- the engine's state equals the model's: every limit's settings, `held`, `queued` and level,
  every lease row, every waiter row (including the limits it waits on);
- counters equal rows: `limit_state.held` and `pggcl.limits.held_slots` are the sum of the
  live lease rows, `queued` and `pggcl.limits.waiting` the number of waiter rows;
- occupancy: a step that adds occupancy to an active limit leaves it at or below the limit
  (it may stay above only after the limit was lowered, and then only go down);
- FIFO, from the engine's rows alone: no queued waiter has room on all its limits with nobody
  queued before it on any of its active limits; and grants of single-limit, 1-slot waiters are
  notified in queue order;
- notifications: each request the model says was granted (or removed as impossible) gets
  exactly one `g:` (`e:`) on its session's channel, and no other request gets one;
- refused calls (GC errors: GC001 to GC005, as the model predicts them) change nothing: the
  private tables are the same before and after.

The runs are derandomized (the same examples on every run) and bounded, about 30 s here.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import psycopg
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.model.harness import (
    Engine,
    Mismatch,
    Request,
    Session,
    db_state,
    fixpoint_violations,
    model_state,
)
from tests.model.model import NAMES, Model, Outcome, Refused

SLOTS = 3  # client sessions
LIMITS = st.integers(0, 3)
DECAYS = st.sampled_from([0.0, 1e-9])  # slow enough that nothing decays during a test
NAME_SETS = st.lists(st.sampled_from(NAMES), min_size=1, max_size=2, unique=True)
PICK = st.integers(0, 1_000_000)
OCCUPY = st.sampled_from([1, 1, 1, 1, 2, 2, 3, 0])  # 0: refused (GC003)

MODEL_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    # No shrinking: against a real server it can take many minutes, past the suite's budget.
    # A failure prints the whole (unshrunk) sequence of steps that led to it.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)


class EngineMachine(RuleBasedStateMachine):
    dsn: str = ""
    prompt_reject = False

    def __init__(self) -> None:
        super().__init__()
        self.model = Model(prompt_reject=self.prompt_reject)
        self.engine = Engine(self.dsn)
        self.previous: dict[str, float] = {}
        self.released: list[uuid.UUID] = []
        self.gone: list[Request] = []

    @initialize(
        limits=st.lists(st.integers(1, 3), min_size=3, max_size=3),
        decays=st.lists(DECAYS, min_size=3, max_size=3),
        active=st.lists(st.sampled_from([True, True, True, False]), min_size=3, max_size=3),
    )
    def start(self, limits: list[int], decays: list[float], active: list[bool]) -> None:
        """Three sessions, and the three limits (mostly active, limit 1 to 4)."""
        for slot in range(SLOTS):
            self.engine.open(slot)
        for name, limit, decay, on in zip(NAMES, limits, decays, active, strict=True):
            self.create_limit(name, limit, decay, on)

    def teardown(self) -> None:
        self.engine.close()

    # --- helpers ----------------------------------------------------------------------------

    def _live(self) -> list[Session]:
        return [s for s in self.engine.sessions.values() if s.alive]

    def _session(self, pick: int) -> Session:
        live = self._live()
        return live[pick % len(live)]

    def _run(self, conn: psycopg.Connection[Any], query: str, *args: Any) -> tuple[Any, ...]:
        row = conn.execute(query, args).fetchone()
        assert row is not None
        return tuple(row)

    def _refused(self, conn: psycopg.Connection[Any], code: str, query: str, *args: Any) -> None:
        """The call must fail with SQLSTATE `code` and change nothing."""
        before = self.engine.snapshot()
        try:
            conn.execute(query, args)
        except psycopg.Error as exc:
            if exc.sqlstate != code:
                raise Mismatch(f"expected {code}, the engine raised {exc.sqlstate}: {exc}") from exc
        else:
            raise Mismatch(f"expected {code}, the call succeeded: {query} {args}")
        if self.engine.snapshot() != before:
            raise Mismatch(f"a refused call ({code}) changed the tables: {query} {args}")

    def _settle(self, out: Outcome) -> None:
        """Wait for the notifications of what the step granted or removed (rechecking on `r:`
        as a client does), then let the model forget the impossible requests the engine
        removed meanwhile (they are told `e:` too)."""
        self.engine.expect(out)
        self.engine.pump(self._on_recheck)
        removed = self.model.reconcile(self.engine.queued_ids())
        self.engine.expect(Outcome(rejected=removed))
        self.engine.pump(self._on_recheck)

    def _on_recheck(self, session: Session, req: Request) -> str:
        row = self._run(session.conn, "SELECT * FROM pggcl.recheck(%s, %s)", req.waiter_id,
                        req.lease_id)  # fmt: skip
        return str(row[0])

    # --- limits -----------------------------------------------------------------------------

    def create_limit(self, name: str, limit: int, decay: float, active: bool) -> None:
        query = "SELECT name FROM pggcl.create_limit(%s, %s, %s, %s)"
        try:
            self.model.create_limit(name, limit, decay, active)
        except Refused as r:
            self._refused(self.engine.admin, r.sqlstate, query, name, limit, decay, active)
            return
        self._run(self.engine.admin, query, name, limit, decay, active)

    @rule(name=st.sampled_from(NAMES), limit=LIMITS, decay=DECAYS, active=st.booleans())
    def create(self, name: str, limit: int, decay: float, active: bool) -> None:
        self.create_limit(name, limit, decay, active)

    @rule(
        name=st.sampled_from(NAMES),
        limit=st.none() | LIMITS,
        decay=st.none() | DECAYS,
        active=st.none() | st.booleans(),
    )
    def update_limit(
        self, name: str, limit: int | None, decay: float | None, active: bool | None
    ) -> None:
        query = "SELECT name FROM pggcl.update_limit(%s, %s, %s, %s)"
        try:
            out = self.model.update_limit(name, limit, decay, active)
        except Refused as r:
            self._refused(self.engine.admin, r.sqlstate, query, name, limit, decay, active)
            return
        self._run(self.engine.admin, query, name, limit, decay, active)
        self._settle(out)

    @rule(name=st.sampled_from(NAMES), again=st.none() | st.integers(1, 3))
    def delete_limit(self, name: str, again: int | None) -> None:
        """Delete, and usually create it again (active, `again` slots): the queues keep
        something to contend for."""
        existed, out = self.model.delete_limit(name)
        row = self._run(self.engine.admin, "SELECT pggcl.delete_limit(%s)", name)
        assert row == (existed,), f"delete_limit({name!r}) returned {row[0]}, not {existed}"
        self._settle(out)
        if again is not None:
            self.engine_equals_model()
            self.create_limit(name, again, 0.0, True)

    # --- acquiring --------------------------------------------------------------------------

    @precondition(lambda self: bool(self._live()))
    @rule(pick=PICK, names=NAME_SETS, occupy=OCCUPY, ttl=st.booleans())
    def acquire_and_wait(self, pick: int, names: list[str], occupy: int, ttl: bool) -> None:
        self.acquire(pick, names, occupy, "concurrency", True, ttl, "acquire")

    @precondition(lambda self: bool(self._live()))
    @rule(pick=PICK, name=st.sampled_from(NAMES), occupy=OCCUPY)
    def acquire_one_and_wait(self, pick: int, name: str, occupy: int) -> None:
        self.acquire(pick, [name], occupy, "concurrency", True, False, "acquire")

    @precondition(lambda self: bool(self._live()))
    @rule(pick=PICK, name=st.sampled_from(NAMES), occupy=OCCUPY)
    def acquire_one_and_wait_too(self, pick: int, name: str, occupy: int) -> None:
        self.acquire(pick, [name], occupy, "concurrency", True, False, "acquire")

    @precondition(lambda self: bool(self._live()))
    @rule(
        pick=PICK,
        names=NAME_SETS,
        occupy=OCCUPY,
        mode=st.sampled_from(["concurrency", "rate_limit"]),
        wait=st.booleans(),
        ttl=st.booleans(),
        function=st.sampled_from(["acquire", "try_acquire"]),
    )
    def acquire_any(
        self, pick: int, names: list[str], occupy: int, mode: str, wait: bool, ttl: bool,
        function: str,
    ) -> None:  # fmt: skip
        self.acquire(pick, names, occupy, mode, wait, ttl, function)

    def acquire(
        self, pick: int, names: list[str], occupy: int, mode: str, wait: bool, ttl: bool,
        function: str,
    ) -> None:  # fmt: skip
        s = self._session(pick)
        wait = wait and function == "acquire"
        request_id = uuid.uuid4()
        ttl_seconds = 3600.0 if ttl else None
        if function == "acquire":
            query = (
                "SELECT granted, lease_id, waiter_id, created_limits FROM pggcl.acquire("
                "%s::text[], %s, %s, false, %s, 'model', %s, %s, %s)"
            )
            args: tuple[Any, ...] = (names, occupy, mode, ttl_seconds, s.id, wait, request_id)
        else:
            query = (
                "SELECT granted, lease_id, NULL::bigint, NULL::text[] FROM pggcl.try_acquire("
                "%s::text[], %s, %s, false, %s, 'model', %s)"
            )
            args = (names, occupy, mode, ttl_seconds, s.id)
        probe = Model.__new__(Model)  # the model's verdict first, on a copy: refusals
        probe.__dict__ = _copy(self.model)
        try:
            probe.acquire(s.id, names, occupy, mode, False, request_id, None)
        except Refused as r:
            self._refused(s.conn, r.sqlstate, query, *args)
            return
        granted, lease_id, waiter_id, created = self._run(s.conn, query, *args)
        lease = lease_id if function == "try_acquire" and lease_id is not None else request_id
        queued = waiter_id is not None
        expect_granted, expect_created, out = self.model.acquire(
            s.id, names, occupy, mode, wait and not granted, lease, waiter_id, ttl
        )
        if granted != expect_granted:
            raise Mismatch(
                f"{function}({names}, occupy={occupy}, {mode}, wait={wait}) granted={granted}, "
                f"the model says {expect_granted}"
            )
        if queued != (wait and not granted):
            raise Mismatch(f"{function} queued={queued} (waiter {waiter_id}), granted={granted}")
        if function == "acquire" and sorted(created or []) != sorted(expect_created):
            raise Mismatch(f"created_limits {created}, the model says {expect_created}")
        if granted and mode == "concurrency" and function == "acquire":
            assert lease_id == request_id, "the lease id is not the request id"
        if waiter_id is not None:
            single = names[0] if len(names) == 1 and occupy == 1 else None
            self.engine.requests[waiter_id] = Request(waiter_id, s.id, request_id, mode, single)
        self._settle(out)

    @precondition(lambda self: bool(self._live()))
    @rule(pick=PICK, name=st.sampled_from(NAMES), occupy=st.integers(1, 3))
    def take(self, pick: int, name: str, occupy: int) -> None:
        s = self._session(pick)
        request_id = uuid.uuid4()
        expect = self.model.take(s.id, name, occupy, request_id)
        row = self._run(s.conn, "SELECT pggcl.take(%s, %s, %s, 'model', %s)", name, occupy, s.id,
                        request_id)  # fmt: skip
        if row[0] != expect:
            raise Mismatch(f"take({name!r}, {occupy}) = {row[0]}, the model says {expect}")

    # --- holding and waiting ----------------------------------------------------------------

    def _owner(self, session_id: int) -> Session | None:
        return self.engine.by_id(session_id)

    @precondition(lambda self: bool(self.model.leases))
    @rule(pick=PICK)
    def release_held(self, pick: int) -> None:
        self.release(pick, False)

    @precondition(lambda self: bool(self.model.leases) or bool(self.released))
    @rule(pick=PICK, again=st.booleans())
    def release_any(self, pick: int, again: bool) -> None:
        self.release(pick, again)

    @precondition(lambda self: bool(self.model.leases))
    @rule(pick=PICK)
    def release_held_too(self, pick: int) -> None:  # (weight: releases keep queues moving)
        self.release(pick, False)

    def release(self, pick: int, again: bool) -> None:
        if again and self.released:
            lease_id = self.released[pick % len(self.released)]
            conn = self.engine.admin
        else:
            if not self.model.leases:
                return
            lease = list(self.model.leases.values())[pick % len(self.model.leases)]
            lease_id = lease.id
            owner = self._owner(lease.session)
            conn = owner.conn if owner else self.engine.admin
        expect, out = self.model.release(lease_id)
        row = self._run(conn, "SELECT pggcl.release(%s)", lease_id)
        if row[0] != expect:
            raise Mismatch(f"release = {row[0]}, the model says {expect}")
        self.released.append(lease_id)
        self._settle(out)

    @precondition(lambda self: bool(self.model.leases))
    @rule(pick=PICK)
    def renew(self, pick: int) -> None:
        lease = list(self.model.leases.values())[pick % len(self.model.leases)]
        expect = self.model.renew(lease.id)
        row = self._run(self.engine.admin, "SELECT pggcl.renew(%s, 3600)", lease.id)
        if row[0] != expect:
            raise Mismatch(f"renew = {row[0]}, the model says {expect}")

    def _request(self, pick: int) -> Request | None:
        live = [r for r in self.engine.requests.values() if self._owner(r.session)]
        return live[pick % len(live)] if live else None

    @precondition(lambda self: bool(self.engine.requests))
    @rule(pick=PICK, by_request_id=st.booleans())
    def cancel(self, pick: int, by_request_id: bool) -> None:
        req = self._request(pick)
        if req is None:
            return
        owner = self._owner(req.session)
        assert owner is not None
        doomed = req.waiter_id in self.model.doomed
        expect, out = self.model.cancel(req.waiter_id, req.lease_id)
        if by_request_id:
            row = self._run(owner.conn, "SELECT pggcl.cancel(NULL, %s)", req.lease_id)
        else:
            row = self._run(owner.conn, "SELECT pggcl.cancel(%s, %s)", req.waiter_id,
                            req.lease_id)  # fmt: skip
        if row[0] != expect and not (doomed and row[0] == "gone"):
            raise Mismatch(f"cancel = {row[0]!r}, the model says {expect!r}")
        self._settle(out)

    @precondition(lambda self: bool(self.engine.requests))
    @rule(pick=PICK)
    def recheck(self, pick: int) -> None:
        """At the fixpoint a recheck changes nothing: 'queued' for a queued request, else
        what became of it."""
        req = self._request(pick)
        if req is None:
            return
        owner = self._owner(req.session)
        assert owner is not None
        if req.waiter_id in self.model.waiters:
            expect = {"queued", "rejected"} if req.waiter_id in self.model.doomed else {"queued"}
        else:
            expect = {self.model.after_grant_status(req.lease_id)}
        status = self._on_recheck(owner, req)
        if status not in expect:
            raise Mismatch(f"recheck = {status!r}, the model says {expect}")
        self._settle(Outcome())

    @precondition(lambda self: bool(self._live()))
    @rule(pick=PICK)
    def heartbeat(self, pick: int) -> None:
        """Everyone alive, nothing expired: a heartbeat only reads."""
        s = self._session(pick)
        before = self.engine.snapshot()
        s.conn.execute("SELECT pggcl.heartbeat(%s)", (s.id,))
        if self.engine.snapshot() != before:
            raise Mismatch("a heartbeat with everyone alive changed the tables")

    # --- session deaths ---------------------------------------------------------------------

    @precondition(lambda self: bool(self._live()))
    @rule(pick=PICK)
    def kill_session(self, pick: int) -> None:
        """pg_terminate_backend of a session's connection; grace 0, so the next reap (here
        pggcl.reclaim()) drops its leases and waiters and serves those they blocked."""
        s = self._session(pick)
        self.engine.kill(s)
        out = self.model.session_died(s.id)
        for wid in [w for w, r in self.engine.requests.items() if r.session == s.id]:
            self.engine.expected.pop(wid, None)
        self.engine.admin.execute("SELECT pggcl.reclaim()")
        self._settle(out)

    @precondition(lambda self: len(self._live()) < SLOTS)
    @rule(pick=PICK)
    def open_session(self, pick: int) -> None:
        dead = [s for s in self.engine.sessions.values() if not s.alive]
        self.engine.open(dead[pick % len(dead)].slot)

    # --- after every step -------------------------------------------------------------------

    @invariant()
    def engine_equals_model(self) -> None:
        state = db_state(self.engine.admin)
        expected = model_state(self.model)
        problems: list[str] = []
        limits = state["limits"]
        if set(limits) != set(self.model.limits):
            problems.append(f"limits {sorted(limits)}, the model has {sorted(self.model.limits)}")
        for name, lim in self.model.limits.items():
            if name not in limits:
                continue
            limit, decay, active, held, queued, level, held_slots, waiting = limits[name]
            want = (
                lim.limit,
                lim.decay,
                lim.active,
                self.model.held(name),
                self.model.queued(name),
            )
            if (limit, decay, active, held, queued) != want:
                problems.append(
                    f"limit {name!r}: (limit, decay, active, held, queued) = "
                    f"{(limit, decay, active, held, queued)}, the model says {want}"
                )
            if not math.isclose(level, lim.level, abs_tol=1e-4):
                problems.append(f"limit {name!r}: level {level}, the model says {lim.level}")
            # Counters equal rows, in the tables and in the view.
            if held != state["lease_sums"][name] or held_slots != held:
                problems.append(f"limit {name!r}: held {held} / held_slots {held_slots}, "
                                f"lease rows sum to {state['lease_sums'][name]}")  # fmt: skip
            if queued != state["waiter_rows"][name] or waiting != queued:
                problems.append(f"limit {name!r}: queued {queued} / waiting {waiting}, "
                                f"{state['waiter_rows'][name]} waiter rows")  # fmt: skip
            # Occupancy: never raised above the limit.
            occupancy = held + level
            if (
                active
                and occupancy > limit + 1e-9
                and occupancy > self.previous.get(name, 0) + 1e-9
            ):
                problems.append(
                    f"limit {name!r}: occupancy rose to {occupancy} above its limit {limit}"
                )
            self.previous[name] = occupancy
        if state["leases"] != expected["leases"]:
            problems.append(_diff("lease rows", state["leases"], expected["leases"]))
        if state["waiters"] != expected["waiters"]:
            problems.append(_diff("waiter rows", state["waiters"], expected["waiters"]))
        problems += fixpoint_violations(state)
        if problems:
            raise Mismatch("; ".join(problems) + "\n" + "\n".join(self.engine.log[-20:]))


def _diff(what: str, engine: set[Any], model: set[Any]) -> str:
    return (f"{what}: only in the engine {sorted(engine - model, key=str)}, "
            f"only in the model {sorted(model - engine, key=str)}")  # fmt: skip


def _copy(model: Model) -> dict[str, Any]:
    import copy

    return copy.deepcopy(model.__dict__)


def run_machine(dsn: str, machine: type[EngineMachine], config: settings) -> None:
    machine.dsn = dsn
    run_state_machine_as_test(machine, settings=config)


def test_engine_follows_the_model(pggcl_dsn: str) -> None:
    run_machine(pggcl_dsn, EngineMachine, MODEL_SETTINGS)
