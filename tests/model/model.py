"""A plain Python model of the engine's rules (README, "The SQL API"), for the model-based
test in test_model.py. It knows nothing of SQL: limits, leases, waiters and sessions, and what
each call must do to them.

Time plays no part: rate-limit decays are 0 or 1e-9 slots per second, so nothing decays in
the few seconds a test runs (exact decay is measured by bench D and tested in tests/sql), and
leases get TTLs of an hour at least, so none expires. What the model predicts is then exact.

The grant rule, run after every change (the fixpoint every grant step of the engine heads
for, once each waiter that was told `r:` has called recheck): waiters are visited in arrival
order (waiter id); a waiter whose active limits meet a blocked limit stays queued and blocks
all its active limits (head-of-line blocking); otherwise a waiter that can never be granted
(`occupy` above an active limit's `limit`, or rate-limit mode on an active limit without
decay) is removed and told why (`e:`); otherwise it is granted when every active limit has
room, and else it blocks its active limits. Inactive limits take part without occupying or
blocking anything.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

NAMES = ("a", "b", "c")


@dataclass
class Limit:
    name: str
    limit: int
    decay: float
    active: bool
    seq: int = 0  # creation order: the engine's limit ids, the order it checks limits in
    level: float = 0.0  # rate-limit slots taken (nothing decays within a test)


@dataclass
class Lease:
    id: uuid.UUID
    session: int
    rows: dict[str, int]  # limit name -> slots (0 on a limit that was inactive at the grant)
    ttl: bool = False


@dataclass
class Waiter:
    id: int
    session: int
    names: list[str]  # sorted
    occupy: int
    mode: str
    lease_id: uuid.UUID
    ttl: bool = False


@dataclass
class Outcome:
    """What the last change did to queued requests: granted (told `g:`) and removed as
    impossible (told `e:`), by waiter id."""

    granted: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)


class Refused(Exception):
    """The call must be refused with this SQLSTATE, changing nothing."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class Model:
    def __init__(self, prompt_reject: bool = False) -> None:
        self.limits: dict[str, Limit] = {}
        self.leases: dict[uuid.UUID, Lease] = {}
        self.waiters: dict[int, Waiter] = {}
        #: The README's promise, "lowering a limit below a queued request removes that
        #: request and tells its waiter why", taken literally: such a request is removed even
        #: while an earlier request blocks its queue. False: it is removed once the grant
        #: rule reaches it (what the engine does), and blocks like any waiter until then.
        self.prompt_reject = prompt_reject
        #: Waiters that can never be granted but that the engine may still keep queued (a
        #: grant step that ran out of room before reaching them); see `reconcile`.
        self.doomed: set[int] = set()
        self._seq = 0

    # --- reading ----------------------------------------------------------------------------

    def held(self, name: str) -> int:
        return sum(lease.rows.get(name, 0) for lease in self.leases.values())

    def queued(self, name: str) -> int:
        return sum(1 for w in self.waiters.values() if name in w.names)

    def occupancy(self, name: str) -> float:
        return self.held(name) + self.limits[name].level

    def _fits(self, name: str, occupy: int) -> bool:
        lim = self.limits[name]
        return not lim.active or self.occupancy(name) + occupy <= lim.limit

    def _impossible(self, names: list[str], occupy: int, mode: str) -> bool:
        for n in names:
            lim = self.limits[n]
            if lim.active and (occupy > lim.limit or (mode == "rate_limit" and lim.decay == 0)):
                return True
        return False

    def _active(self, names: list[str]) -> set[str]:
        return {n for n in names if self.limits[n].active}

    # --- the grant rule ---------------------------------------------------------------------

    def _take(
        self, names: list[str], occupy: int, mode: str, lease_id: uuid.UUID, session: int,
        ttl: bool,
    ) -> None:  # fmt: skip
        if mode == "concurrency":
            rows = {n: (occupy if self.limits[n].active else 0) for n in names}
            self.leases[lease_id] = Lease(lease_id, session, rows, ttl)
        else:
            for n in names:
                if self.limits[n].active:
                    self.limits[n].level += occupy

    def serve(self) -> Outcome:
        """Run the grant rule until nothing changes; say who was granted or removed."""
        out = Outcome()
        blocked: set[str] = set()
        for wid in sorted(self.waiters):
            w = self.waiters[wid]
            active = self._active(w.names)
            doomed = self._impossible(w.names, w.occupy, w.mode)
            if doomed and self.prompt_reject:
                del self.waiters[wid]
                out.rejected.append(wid)
            elif active & blocked:
                blocked |= active
            elif doomed:
                # Removed when the engine's grant step reaches it; `reconcile` accepts either.
                self.doomed.add(wid)
            elif all(self._fits(n, w.occupy) for n in w.names):
                del self.waiters[wid]
                self._take(w.names, w.occupy, w.mode, w.lease_id, w.session, w.ttl)
                out.granted.append(wid)
            else:
                blocked |= active
        return out

    def reconcile(self, queued_ids: set[int]) -> list[int]:
        """Forget the doomed waiters that the engine removed (they were told `e:`); keep
        those it still queues. Returns the ids removed."""
        removed = [wid for wid in sorted(self.doomed) if wid not in queued_ids]
        for wid in removed:
            self.waiters.pop(wid, None)
        self.doomed = {wid for wid in self.doomed if wid in self.waiters}
        return removed

    # --- the calls --------------------------------------------------------------------------

    def create_limit(self, name: str, limit: int, decay: float, active: bool) -> None:
        if name in self.limits:
            raise Refused("GC002")
        self._seq += 1
        self.limits[name] = Limit(name, limit, decay, active, self._seq)

    def update_limit(
        self, name: str, limit: int | None, decay: float | None, active: bool | None
    ) -> Outcome:
        if name not in self.limits:
            raise Refused("GC001")
        lim = self.limits[name]
        if limit is not None:
            lim.limit = limit
        if decay is not None:
            lim.decay = decay
        if active is not None:
            lim.active = active
        return self.serve()

    def delete_limit(self, name: str) -> tuple[bool, Outcome]:
        """Deactivated first (its waiters go ahead as if it were missing), then gone: the
        waiters still queued drop it from their names, lease rows on it go."""
        if name not in self.limits:
            return False, Outcome()
        self.limits[name].active = False
        out = self.serve()
        for w in self.waiters.values():
            if name in w.names:
                w.names.remove(name)
        for lease in self.leases.values():
            lease.rows.pop(name, None)
        del self.limits[name]
        more = self.serve()
        out.granted += more.granted
        out.rejected += more.rejected
        return True, out

    def _ensure(self, names: list[str]) -> list[str]:
        missing = [n for n in names if n not in self.limits]
        for n in missing:
            self._seq += 1
            self.limits[n] = Limit(n, 1, 0.0, False, self._seq)
        return missing

    def acquire(
        self, session: int, names: list[str], occupy: int, mode: str, wait: bool,
        lease_id: uuid.UUID, waiter_id: int | None, ttl: bool = False,
    ) -> tuple[bool, list[str], Outcome]:  # fmt: skip
        """acquire / try_acquire (wait false). Returns (granted, created limits, what the
        call's own grant step did for others). `waiter_id` is the id the engine gave the
        request when it queued it (the model cannot know ids in advance)."""
        names = sorted(set(names))
        if occupy < 1:
            raise Refused("GC003")
        created = [n for n in names if n not in self.limits]
        for lim in sorted((self.limits[n] for n in names if n in self.limits), key=lambda x: x.seq):
            if lim.active:
                if occupy > lim.limit:
                    raise Refused("GC004")
                if mode == "rate_limit" and lim.decay == 0:
                    raise Refused("GC005")
        self._ensure(names)
        active = self._active(names)
        out = Outcome()

        def fits() -> bool:
            return all(self.queued(n) == 0 and self._fits(n, occupy) for n in active)

        granted = fits()
        # Refused at first: unless it will queue behind others on every limit, the call's
        # own grant step serves those queued ahead (e.g. removes a doomed request), and then
        # it looks again.
        if not granted and not (wait and all(self.queued(n) > 0 for n in active)):
            out = self.serve()
            granted = fits()
        if granted:
            self._take(names, occupy, mode, lease_id, session, ttl)
            return True, created, out
        if wait:
            assert waiter_id is not None
            self.waiters[waiter_id] = Waiter(waiter_id, session, names, occupy, mode, lease_id, ttl)
            more = self.serve()
            out.granted += more.granted
            out.rejected += more.rejected
        return False, created, out

    def take(self, session: int, name: str, occupy: int, lease_id: uuid.UUID) -> bool:
        lim = self.limits.get(name)
        if (
            lim is None or not lim.active or occupy < 1 or self.queued(name) > 0
            or self.occupancy(name) + occupy > lim.limit
        ):  # fmt: skip
            return False
        self._take([name], occupy, "concurrency", lease_id, session, False)
        return True

    def release(self, lease_id: uuid.UUID) -> tuple[bool, Outcome]:
        lease = self.leases.pop(lease_id, None)
        if lease is None or not lease.rows:
            return False, Outcome()
        return True, self.serve()

    def renew(self, lease_id: uuid.UUID) -> bool:
        lease = self.leases.get(lease_id)
        if lease is None or not lease.rows:
            return False
        lease.ttl = True
        return True

    def after_grant_status(self, lease_id: uuid.UUID) -> str:
        """What recheck and cancel say of a request no longer queued."""
        lease = self.leases.get(lease_id)
        return "granted" if lease is not None and lease.rows else "gone"

    def cancel(self, waiter_id: int, lease_id: uuid.UUID) -> tuple[str, Outcome]:
        if waiter_id in self.waiters:
            del self.waiters[waiter_id]
            self.doomed.discard(waiter_id)
            return "cancelled", self.serve()
        return self.after_grant_status(lease_id), Outcome()

    def session_died(self, session: int) -> Outcome:
        """Its connection ended and it was reclaimed (grace 0): its leases and waiters go."""
        for lid in [lid for lid, lease in self.leases.items() if lease.session == session]:
            del self.leases[lid]
        for wid in [wid for wid, w in self.waiters.items() if w.session == session]:
            del self.waiters[wid]
            self.doomed.discard(wid)
        return self.serve()
