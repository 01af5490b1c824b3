"""What differs between the worlds in the behaviour suite, async side (see ``_compat.py``).

``tests/client/test_behaviour_async.py`` imports these names; ``tools/async_to_sync.py`` maps
the module to ``tests/client/_compat.py``, which exports the same names for threads. A
concurrent caller is a task here; cancelling it is ``task.cancel()``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

# What a caller interrupted while it waits raises.
Cancelled = asyncio.CancelledError

# What a call of the client API gives before it is awaited; a call to be made later.
Pending = Awaitable[object]
Call = Callable[[], Pending]

# A condition to poll: plain, or asking the database.
Predicate = Callable[[], bool | Awaitable[bool]]

POLL_SECONDS = 0.005


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def run_blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking test plumbing (psycopg, subprocesses) without stalling the clients."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def _holds(predicate: Predicate) -> bool:
    value = predicate()
    return await value if inspect.isawaitable(value) else value


async def until(predicate: Predicate, what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await _holds(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(POLL_SECONDS)


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark the task's exception as seen: a task abandoned by a failed test is otherwise
    logged when it is garbage-collected ("Task exception was never retrieved"), and that log
    record's traceback, formatted inside a collection that may run while pytest parses a
    source file, crashes pytest on Python 3.11 (SystemError: AST constructor recursion depth
    mismatch: the formatter's own ast.parse clobbers the outer one's depth, CPython
    gh-106905)."""
    if not task.cancelled():
        task.exception()


class Event:
    """An event to wait for, at most ``timeout`` seconds (then AssertionError)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"the event was not set within {timeout} s") from None


class Worker(Generic[T]):
    """A call running concurrently with the test: a task."""

    def __init__(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self._task = asyncio.get_running_loop().create_task(fn())
        self._task.add_done_callback(_retrieved)

    def done(self) -> bool:
        return self._task.done()

    async def result(self, timeout: float = 10.0) -> T:
        """The call's value or exception; AssertionError if it is still running after
        ``timeout`` seconds (it is then cancelled)."""
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            raise AssertionError(f"the worker did not finish within {timeout} s")
        return self._task.result()


def spawn(fn: Callable[[], Coroutine[Any, Any, T]]) -> Worker[T]:
    """Start ``fn()`` concurrently with the caller."""
    return Worker(fn)


async def cancel_when(
    fn: Callable[[], Coroutine[Any, Any, T]], ready: Predicate, what: str, timeout: float = 10.0
) -> T:
    """Run ``fn()`` and cancel it once ``ready`` holds: raises :data:`Cancelled` (or whatever
    ``fn`` ended with, if it ended first)."""
    task = asyncio.get_running_loop().create_task(fn())
    deadline = time.monotonic() + timeout
    try:
        while not task.done() and not await _holds(ready):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting until {what}")
            await asyncio.sleep(POLL_SECONDS)
    finally:
        task.cancel()
    return await task
