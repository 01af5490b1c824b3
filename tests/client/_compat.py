"""What differs between the worlds in the behaviour suite, sync side (see ``_acompat.py``).

A concurrent caller is a thread. A thread cannot be cancelled from outside, so the caller to
interrupt runs in the main thread, and a helper thread interrupts it with SIGINT: the
``KeyboardInterrupt`` (Ctrl-C) that the sync client promises to clean up after, as asyncio's
cancellation is for the async one.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

Cancelled = KeyboardInterrupt

Pending = object
Call = Callable[[], Pending]

Predicate = Callable[[], bool]

POLL_SECONDS = 0.005


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def run_blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    return fn(*args, **kwargs)


def until(predicate: Predicate, what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(POLL_SECONDS)


class Event:
    """An event to wait for, at most ``timeout`` seconds (then AssertionError)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float = 10.0) -> None:
        if not self._event.wait(timeout):
            raise AssertionError(f"the event was not set within {timeout} s")


class Worker(Generic[T]):
    """A call running concurrently with the test: a daemon thread."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # handed to whoever asks for the result
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float = 10.0) -> T:
        """The call's value or exception; AssertionError if it is still running after
        ``timeout`` seconds."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the worker did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def spawn(fn: Callable[[], T]) -> Worker[T]:
    """Start ``fn()`` concurrently with the caller."""
    return Worker(fn)


def cancel_when(fn: Callable[[], T], ready: Predicate, what: str, timeout: float = 10.0) -> T:
    """Run ``fn()`` in this (the main) thread and interrupt it with SIGINT once ``ready``
    holds: raises :data:`Cancelled` (or whatever ``fn`` ended with, if it ended first)."""
    main = threading.main_thread()
    if threading.current_thread() is not main or main.ident is None:
        raise RuntimeError("cancel_when runs in the main thread: SIGINT interrupts only that")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        raise RuntimeError("SIGINT does not raise KeyboardInterrupt here")
    main_id = main.ident
    lock = threading.Lock()
    finished = False
    problems: list[BaseException] = []

    def interrupt() -> None:
        deadline = time.monotonic() + timeout
        try:
            while not finished and not ready():
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out waiting until {what}")
                time.sleep(POLL_SECONDS)
        except BaseException as exc:  # reported by the main thread; it must not hang
            problems.append(exc)
        with lock:
            if not finished:
                signal.pthread_kill(main_id, signal.SIGINT)

    helper = threading.Thread(target=interrupt, daemon=True)
    helper.start()
    try:
        return fn()
    except KeyboardInterrupt:
        if problems:
            raise problems[0] from None
        raise
    finally:
        with lock:  # no SIGINT is sent after this
            finished = True
        helper.join()
