"""The live-update hub: one sampler per UI server, pushing what changed to the open pages.

The engine does not announce acquires and releases: a NOTIFY on each would slow the hot path
and serialise commits. Instead, while at least one page listens, one task here reads the public
views through the client about once per second (every plain limit, each template's busiest
few instances and the limits whose page is open: ``busiest_limits``, bounded however many
instances there are; the templates' totals while the limits page is open; plus holders and
queue when a limit page is open, and why its queued requests wait when it has any:
``explain_queue``, one read, at most ``max_holders`` holders per limit): the same few queries
however many browsers are open, and plain reads that take no lock an acquire or a release
waits for. It keeps the last minutes of each limit in memory for the charts (occupancy, and
grants per second and mean wait, from the counters the engine keeps on the same rows: no other
read) and hands each subscriber what changed for its page; the page's stream sends it.
The sampler stops a few seconds (``linger``) after the last page closed, so that moving from one
page to another keeps the chart's history, and forgets that history when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pggcl.models import ConcurrencyLimit, Explanation, Holder, TemplateTotals, Waiter
from pggcl.ui.per_template import SHOWN, overview
from pggcl.ui.present import WHY_HOLDERS, by_waiter, holder_view, limit_view, waiter_view

log = logging.getLogger("pggcl.ui")

#: One chart point: (time in epoch seconds, held slots, decaying slots, limit, grants per second,
#: mean wait in seconds). The last two are over the interval since the previous sample, from
#: the limit's counters (``grants``, ``wait_seconds_sum`` / ``wait_seconds_count``): None for
#: the first sample of a limit (nothing to count from) and after its counters went back (the
#: limit was deleted and made again); the mean wait is None when nothing was granted meanwhile.
Sample = tuple[float, int, float, int, float | None, float | None]

#: What a sample counts from: (time, grants, wait_seconds_count, wait_seconds_sum).
_Counts = tuple[float, int, int, float]


class Reader(Protocol):
    """What the hub reads: a subset of :class:`pggcl.AsyncClient`."""

    async def busiest_limits(
        self, per_template: int = 10, also: Sequence[str] = ()
    ) -> list[ConcurrencyLimit]: ...
    async def template_totals(self) -> list[TemplateTotals]: ...
    async def holders(self, name: str | None = None) -> list[Holder]: ...
    async def queue(self, name: str | None = None) -> list[Waiter]: ...
    async def explain_queue(
        self, name: str | None = None, max_holders: int | None = None
    ) -> list[Explanation]: ...


@dataclass(frozen=True, slots=True)
class LimitsTopic:
    """The limits page, with its name filter."""

    query: str = ""


@dataclass(frozen=True, slots=True)
class LimitTopic:
    """One limit's page: the limit, its holders and queue, and its chart."""

    name: str


Topic = LimitsTopic | LimitTopic


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Subscriber:
    """One open page's mailbox: the latest data of each event, sent when it changed.

    A slow browser never makes the hub wait or queue: a newer value replaces an unsent one.
    """

    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        self.closed = False
        self._pending: dict[str, str] = {}
        self._sent: dict[str, str] = {}
        self._wake = asyncio.Event()

    def offer(self, event: str, data: str, *, always: bool = False) -> None:
        """Queue ``data`` as ``event``, unless it equals what was last offered (or ``always``)."""
        if not always and self._sent.get(event) == data:
            return
        self._sent[event] = data
        self._pending.pop(event, None)  # re-inserted last: events keep their order of change
        self._pending[event] = data
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next(self, timeout: float) -> list[tuple[str, str]]:
        """The events pending now, waiting up to ``timeout`` seconds for one; [] on timeout."""
        if not self._pending and not self.closed:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
        batch = list(self._pending.items())
        self._pending.clear()
        return batch


class Hub:
    """Samples the limits while pages listen and fans the results out to them.

    ``interval`` seconds between samples; ``window`` seconds of chart history kept;
    ``linger`` seconds the sampler keeps running after the last page closed;
    ``max_holders``: holders listed per limit on a queued row.
    """

    def __init__(
        self,
        reader: Reader,
        *,
        interval: float = 1.0,
        window: float = 300.0,
        linger: float = 5.0,
        max_holders: int = WHY_HOLDERS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reader = reader
        self.max_holders = max_holders
        self.interval, self.window, self._linger, self._clock = interval, window, linger, clock
        self._subs: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._history: dict[str, deque[Sample]] = {}
        self._counts: dict[str, _Counts] = {}
        self._since: float | None = None
        #: Samples taken since this hub was made (each is one round of reads).
        self.ticks = 0

    @property
    def running(self) -> bool:
        return self._task is not None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(self, topic: Topic) -> Subscriber:
        """A mailbox for ``topic``; starts the sampler if it is not running."""
        sub = Subscriber(topic)
        self._subs.add(sub)
        if isinstance(topic, LimitTopic):
            sub.offer("history", _json(self._history_of(topic.name)))
        if self._task is None:
            self._since = self._clock()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="pggcl-ui-sampler"
            )
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.close()
        self._subs.discard(sub)

    def end_streams(self) -> None:
        """Close every open stream (the server is shutting down)."""
        for sub in list(self._subs):
            self.unsubscribe(sub)

    async def close(self) -> None:
        self.end_streams()
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- The sampler --------------------------------------------------------------------------

    async def _run(self) -> None:
        idle_since: float | None = None
        try:
            while True:
                started = time.monotonic()
                await self._tick()
                if self._subs:
                    idle_since = None
                elif idle_since is None:
                    idle_since = started
                if idle_since is not None and started - idle_since >= self._linger:
                    return
                # Pacing, not synchronisation: the next sample is due one interval later.
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            # No await between the last check of _subs and here: a subscribe either saw the
            # task running or starts a new one.
            self._task, self._since = None, None
            self._history.clear()
            self._counts.clear()

    async def _tick(self) -> None:
        watched = {s.topic.name for s in self._subs if isinstance(s.topic, LimitTopic)}
        holders: list[Holder] = []
        queue: list[Waiter] = []
        why: list[Explanation] = []
        totals: list[TemplateTotals] = []
        try:
            # The plain limits, each template's busiest few and the watched limits: bounded
            # however many instances the templates have (chosen in the database).
            limits = await self._reader.busiest_limits(SHOWN, sorted(watched))
            if any(isinstance(s.topic, LimitsTopic) for s in self._subs):
                totals = await self._reader.template_totals()
            if watched:
                only = next(iter(watched)) if len(watched) == 1 else None
                # Why its requests wait: one more read, only while a watched limit has some.
                busy = {lim.name for lim in limits if lim.name in watched and lim.waiting}
                if busy:
                    holders, queue, why = await asyncio.gather(
                        self._reader.holders(only),
                        self._reader.queue(only),
                        self._reader.explain_queue(
                            next(iter(busy)) if len(busy) == 1 else None, self.max_holders
                        ),
                    )
                else:
                    holders, queue = await asyncio.gather(
                        self._reader.holders(only), self._reader.queue(only)
                    )
        except Exception as exc:  # the sampler must outlive a database outage
            log.warning("pggcl ui: sampling failed: %s", exc)
            status = _json({"error": str(exc) or type(exc).__name__})
            for sub in list(self._subs):
                sub.offer("status", status)
            return
        now = self._clock()
        self.ticks += 1
        samples = self._record(now, limits)
        self._fan_out(limits, holders, queue, by_waiter(why), samples, totals)

    def _rates(self, now: float, limit: ConcurrencyLimit) -> tuple[float | None, float | None]:
        """Grants per second and their mean wait since this limit's previous sample."""
        last = self._counts.get(limit.name)
        counts = (now, limit.grants, limit.wait_seconds_count, limit.wait_seconds_sum)
        self._counts[limit.name] = counts
        if last is None:
            return None, None
        seconds, grants, waited = now - last[0], limit.grants - last[1], counts[2] - last[2]
        if seconds <= 0 or grants < 0 or waited < 0:
            return None, None
        mean = round((counts[3] - last[3]) / waited, 6) if waited else None
        return round(grants / seconds, 3), mean

    def _record(self, now: float, limits: list[ConcurrencyLimit]) -> dict[str, Sample]:
        """Each limit's sample now, kept as a point when it changed; what left the window is
        dropped, so a limit's history holds at most one point per sample of the window."""
        cutoff = now - self.window
        samples: dict[str, Sample] = {}
        for limit in limits:
            sample: Sample = (
                now,
                limit.held_slots,
                round(limit.decaying_slots, 3),
                limit.limit,
                *self._rates(now, limit),
            )
            samples[limit.name] = sample
            points = self._history.setdefault(limit.name, deque())
            if not points or points[-1][1:] != sample[1:]:
                points.append(sample)
            # Keep the last point before the window: it is the value at the window's start.
            while len(points) >= 2 and points[1][0] <= cutoff:
                points.popleft()
        for gone in self._history.keys() - samples.keys():
            del self._history[gone]
        for gone in self._counts.keys() - samples.keys():
            del self._counts[gone]
        return samples

    def _history_of(self, name: str) -> dict[str, Any]:
        now = self._clock()
        since = self._since if self._since is not None else now
        return {
            "since": max(since, now - self.window),
            "window": self.window,
            "interval": self.interval,
            "samples": list(self._history.get(name, ())),
        }

    def _fan_out(
        self,
        limits: list[ConcurrencyLimit],
        holders: list[Holder],
        queue: list[Waiter],
        why: dict[int, list[Explanation]],
        samples: dict[str, Sample],
        totals: Sequence[TemplateTotals],
    ) -> None:
        ok = _json({"error": None})
        by_name = {limit.name: limit for limit in limits}
        encoded: dict[Topic, str] = {}  # pages showing the same thing share one encoding
        pages: dict[LimitsTopic, tuple[str, str]] = {}
        for sub in list(self._subs):
            sub.offer("status", ok)
            topic = sub.topic
            if isinstance(topic, LimitsTopic):
                if topic not in pages:
                    # The plain limits as rows; the templates apart, with their busiest few.
                    plain, templates = overview(limits, totals, topic.query)
                    pages[topic] = (_json(plain), _json(templates))
                sub.offer("limits", pages[topic][0])
                sub.offer("templates", pages[topic][1])
                continue
            limit = by_name.get(topic.name)
            if topic not in encoded:
                encoded[topic] = _json(
                    {
                        "limit": limit_view(limit) if limit else None,
                        "holders": [holder_view(h) for h in holders if h.name == topic.name],
                        "queue": [
                            waiter_view(w, why.get(w.waiter_id, ()))
                            for w in queue
                            if w.name == topic.name
                        ],
                    }
                )
            sub.offer("limit", encoded[topic])
            if limit is not None:
                sub.offer("sample", _json(samples[topic.name]), always=True)
