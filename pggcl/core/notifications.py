"""Notification payloads and their routing to waiters. Pure: no driver, no I/O.

The session connection receives one notification per event, payload ``g:<waiter_id>`` (granted),
``r:<waiter_id>`` (re-check) or ``e:<waiter_id>:<why>`` (can never be granted). The
:class:`Dispatcher` routes each to the mailbox of the waiter that waits for it. The grant can
arrive before ``pggcl.acquire`` has returned the waiter id to its caller, so events for unknown
waiters are kept for a while and handed over when the waiter registers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Generic, Literal, Protocol, TypeVar

GRANTED: Final = "g"
RECHECK: Final = "r"
REJECTED: Final = "e"
LOST: Final = "lost"
CLOSED: Final = "closed"  # the client was closed: its session, and this request, are gone
EventKind = Literal["g", "r", "e", "lost", "closed"]

# A payload the client sends to its own channel to wake its listener (closing, self-test).
PING: Final = "p"


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a waiter; ``detail`` explains a rejection or a loss."""

    kind: EventKind
    detail: str = ""


def parse_payload(payload: str) -> tuple[int, Event] | None:
    """The waiter id and event of a notification payload, or None for anything else."""
    kind, _, rest = payload.partition(":")
    if kind not in (GRANTED, RECHECK, REJECTED):
        return None
    ident, _, detail = rest.partition(":")
    if not ident.isdigit():
        return None
    if kind == GRANTED:
        return int(ident), Event(GRANTED)
    if kind == RECHECK:
        return int(ident), Event(RECHECK)
    return int(ident), Event(REJECTED, detail)


class Mailbox(Protocol):
    """Where a waiter receives its events (a thread's condition, a task's event)."""

    def push(self, event: Event) -> None: ...


M = TypeVar("M", bound=Mailbox)


class Dispatcher(Generic[M]):
    """Routes events to waiters by id. Not thread-safe: the sync client holds a lock around it.

    ``epoch`` grows on every :meth:`broadcast`. A waiter registering with an older epoch than the
    current one may have missed that broadcast (it was sent while its acquire was in flight) and
    is told to re-check.
    """

    def __init__(self, keep_seconds: float = 60.0) -> None:
        self._boxes: dict[int, M] = {}
        self._early: dict[int, tuple[float, list[Event]]] = {}
        self._finished: dict[int, None] = {}  # recent waiters: their late events are dropped
        self._keep = keep_seconds
        self.epoch = 0

    def __len__(self) -> int:
        """Number of registered waiters."""
        return len(self._boxes)

    def waiter_ids(self) -> list[int]:
        """The registered waiters (those waiting now), oldest first."""
        return sorted(self._boxes)

    def register(self, waiter_id: int, box: M, epoch: int, now: float) -> None:
        """Route events for ``waiter_id`` to ``box``, first those that came early."""
        self._boxes[waiter_id] = box
        early = self._early.pop(waiter_id, None)
        if early is not None:
            for event in early[1]:
                box.push(event)
        if epoch != self.epoch:
            box.push(Event(RECHECK))
        self._prune(now)

    def box(self, waiter_id: int) -> M | None:
        """The mailbox registered for ``waiter_id``, if any."""
        return self._boxes.get(waiter_id)

    def unregister(self, waiter_id: int) -> None:
        """Stop routing events for ``waiter_id``; later ones are dropped."""
        if self._boxes.pop(waiter_id, None) is not None:
            self._finished[waiter_id] = None
            if len(self._finished) > 4096:
                del self._finished[next(iter(self._finished))]

    def deliver(self, waiter_id: int, event: Event, now: float) -> None:
        """Hand ``event`` to its waiter, or keep it until the waiter registers."""
        box = self._boxes.get(waiter_id)
        if box is not None:
            box.push(event)
            return
        if waiter_id in self._finished:
            return
        self._prune(now)
        self._early.setdefault(waiter_id, (now, []))[1].append(event)

    def broadcast(self, event: Event) -> None:
        """Tell every registered waiter (after a reconnect: re-check; after a loss: lost)."""
        self.epoch += 1
        for box in self._boxes.values():
            box.push(event)

    def _prune(self, now: float) -> None:
        # Early events for waiters that never register (they were cancelled, or belong to a
        # request this process gave up on) must not pile up. Dicts keep insertion order.
        for waiter_id, (since, _) in list(self._early.items()):
            if now - since < self._keep:
                break
            del self._early[waiter_id]
