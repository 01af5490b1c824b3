"""What differs between the async and the sync world, sync side (see ``_acompat``)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from pggcl.core.notifications import Event as Notice

T = TypeVar("T")
Worker = threading.Thread
Lock = threading.RLock
Turn = threading.Lock
Event = threading.Event


class Signal:
    """Wakes whoever waits for a condition on some state to become true."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())

    def notify(self) -> None:
        """The state changed: every waiter looks at its condition again."""
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for ``predicate()``; its last value."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)


class Mailbox:
    """A waiting thread's events. A SimpleQueue: the put wakes the waiting thread, which then
    needs no lock the listener might still hold (a Condition's, here, cost a second wake-up)."""

    def __init__(self) -> None:
        self._events: queue.SimpleQueue[Notice] = queue.SimpleQueue()

    def push(self, event: Notice) -> None:
        self._events.put(event)

    def get(self, timeout: float | None) -> Notice | None:
        """The next event, or None when ``timeout`` seconds passed first."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None


def shielded(value: T) -> T:
    """A call in the sync world cannot be cut short by a cancellation: nothing to shield."""
    return value


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def spawn(target: Callable[[], None], name: str) -> Worker:
    """Run ``target`` concurrently: a daemon thread."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def join(worker: Worker, timeout: float) -> bool:
    """Wait at most ``timeout`` seconds for ``worker`` to end; True when it has."""
    worker.join(timeout)
    return not worker.is_alive()


def cancel(worker: Worker) -> None:
    """A thread cannot be stopped; it is a daemon and ends with the process."""


def worker_name() -> str | None:
    """The name of the running thread: the holder text of its leases shows it."""
    return threading.current_thread().name
