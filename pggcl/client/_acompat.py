"""What differs between the async and the sync world, async side (see ``_compat``).

``tools/async_to_sync.py`` maps this module to ``_compat``: the two export the same names,
with the same meaning in their own world. The async client serves the tasks of one event loop,
so its state needs no lock: ``Lock`` is a no-op there and a real lock in the sync world.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from pggcl.core.notifications import Event as Notice

# Re-exported: its sync twin is _compat.shielded.
from pggcl.drivers._aio import shielded as shielded

T = TypeVar("T")
Worker = asyncio.Task[None]


def Lock() -> contextlib.AbstractContextManager[None]:
    """Mutual exclusion between threads: none is needed between the tasks of one loop."""
    return contextlib.nullcontext()


def Turn() -> asyncio.Lock:
    """One at a time across awaits: the statements of a connection that tasks take turns on."""
    return asyncio.Lock()


class Event:
    """A flag that can be awaited with a timeout."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        """True once set; False when ``timeout`` seconds passed first."""
        if self._event.is_set():
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


class Signal:
    """Wakes whoever waits for a condition on some state to become true."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """The state changed: every waiter looks at its condition again."""
        self._event.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for ``predicate()``; its last value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            self._event.clear()  # no other task runs between the check and the wait
            try:
                async with asyncio.timeout_at(deadline):
                    await self._event.wait()
            except TimeoutError:
                return predicate()
        return True


class Mailbox:
    """A waiting task's events, pushed by the session's listener."""

    def __init__(self) -> None:
        self._events: deque[Notice] = deque()
        self._ready = asyncio.Event()

    def push(self, event: Notice) -> None:
        self._events.append(event)
        self._ready.set()

    async def get(self, timeout: float | None) -> Notice | None:
        """The next event, or None when ``timeout`` seconds passed first."""
        if not self._events:
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return None
        return self._events.popleft() if self._events else None


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def spawn(target: Callable[[], Coroutine[Any, Any, None]], name: str) -> Worker:
    """Run ``target`` concurrently: a task of the running loop."""
    return asyncio.get_running_loop().create_task(target(), name=name)


async def join(worker: Worker, timeout: float) -> bool:
    """Wait at most ``timeout`` seconds for ``worker`` to end; True when it has."""
    await asyncio.wait({worker}, timeout=timeout)
    return worker.done()


def cancel(worker: Worker) -> None:
    """Stop a worker that did not end when asked (a thread cannot be stopped: it is a daemon)."""
    worker.cancel()


def worker_name() -> str | None:
    """The name of the running task: the holder text of its leases shows it."""
    task = asyncio.current_task()
    return task.get_name() if task is not None else None
