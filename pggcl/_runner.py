"""The two loops that carry out a flow (see ``pggcl._core``) against a driver port.

They are the only code written twice, once per world. The async loop runs every call shielded:
a cancellation that arrives while a statement is in flight waits for its result (which the flow
must see, or a lease could be lost) and is then thrown into the flow at its next yield.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, TypeVar

from pggcl._core import Call, Flow, Row, Wait
from pggcl._events import Event

T = TypeVar("T")


class SyncPort(Protocol):
    @property
    def epoch(self) -> int: ...

    def call(self, sql: str, args: tuple[Any, ...]) -> list[Row]: ...
    def wait(self, waiter_id: int, timeout: float | None, epoch: int) -> Event | None: ...
    def forget(self, waiter_id: int) -> None: ...


class AsyncPort(Protocol):
    @property
    def epoch(self) -> int: ...

    async def call(self, sql: str, args: tuple[Any, ...]) -> list[Row]: ...
    async def wait(self, waiter_id: int, timeout: float | None, epoch: int) -> Event | None: ...
    def forget(self, waiter_id: int) -> None: ...


def run_sync(flow: Flow[T], port: SyncPort) -> T:
    """Drive ``flow`` to its end in this thread."""
    epoch, waited = port.epoch, set[int]()
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                op = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value = error = None
            try:
                if isinstance(op, Call):
                    value = port.call(op.sql, op.args)
                elif isinstance(op, Wait):
                    waited.add(op.waiter_id)
                    value = port.wait(op.waiter_id, op.timeout, epoch)
            except BaseException as exc:  # KeyboardInterrupt too: the flow cleans up
                error = exc
    finally:
        for waiter_id in waited:
            port.forget(waiter_id)


async def run_async(flow: Flow[T], port: AsyncPort) -> T:
    """Drive ``flow`` to its end in this task."""
    epoch, waited = port.epoch, set[int]()
    value: Any = None
    error: BaseException | None = None
    deferred: BaseException | None = None  # a cancellation that arrived during a call
    unwinding = False  # an exception was thrown into the flow: do not throw another
    try:
        while True:
            try:
                op = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                if deferred is not None:
                    raise deferred from None
                return stop.value  # type: ignore[no-any-return]
            except BaseException as exc:
                if deferred is not None:
                    raise deferred from exc
                raise
            value = error = None
            if deferred is not None and not unwinding:
                error, deferred, unwinding = deferred, None, True
                continue
            try:
                if isinstance(op, Call):
                    task = asyncio.ensure_future(port.call(op.sql, op.args))
                    while not task.done():
                        try:
                            await asyncio.shield(task)
                        except asyncio.CancelledError as exc:
                            if deferred is None and not unwinding:
                                deferred = exc
                    value = task.result()
                elif isinstance(op, Wait):
                    waited.add(op.waiter_id)
                    value = await port.wait(op.waiter_id, op.timeout, epoch)
            except BaseException as exc:
                error, unwinding = exc, True
    finally:
        for waiter_id in waited:
            port.forget(waiter_id)
