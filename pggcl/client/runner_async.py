"""The loop that carries out a flow (see ``pggcl.core.flows``) against a port, async source
of ``runner_sync``.

A call interrupted mid-statement (task cancelled, KeyboardInterrupt) returns only once the
statement has settled on the server, and the interruption is thrown into the flow at that call:
every flow can find out what an interrupted call did (by the request id it chose, or by
repeating an idempotent release). Once the flow is unwinding, calls run shielded: a further
cancellation waits for the call's result and is thrown into the flow at its next yield, so
clean-up is never cut short. (In the sync world nothing can cut a call short.)
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from pggcl.client._acompat import shielded
from pggcl.core.notifications import Event
from pggcl.core.ops import Call, Defer, Flow, OpenSession, Row, Sleep, Wait

T = TypeVar("T")


class Port(Protocol):
    @property
    def epoch(self) -> int: ...

    async def call(self, sql: str, args: tuple[Any, ...]) -> list[Row]: ...
    async def wait(self, waiter_id: int, timeout: float | None, epoch: int) -> Event | None: ...
    def forget(self, waiter_id: int) -> None: ...
    async def session_id(self) -> int: ...
    async def sleep(self, seconds: float) -> None: ...
    def defer(self, calls: tuple[Call, ...]) -> None: ...


async def run(flow: Flow[T], port: Port) -> T:
    """Drive ``flow`` to its end in this task."""
    epoch, waited = port.epoch, set[int]()
    value: Any = None
    error: BaseException | None = None
    unwinding = False  # an exception was thrown into the flow: its clean-up runs shielded
    try:
        while True:
            try:
                op = flow.send(value) if error is None else flow.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value = error = None
            try:
                if isinstance(op, Call):
                    call = port.call(op.sql, op.args)
                    value = await (shielded(call) if unwinding else call)
                elif isinstance(op, Wait):
                    waited.add(op.waiter_id)
                    value = await port.wait(op.waiter_id, op.timeout, epoch)
                elif isinstance(op, OpenSession):
                    value = await port.session_id()
                elif isinstance(op, Sleep):
                    await port.sleep(op.seconds)
                elif isinstance(op, Defer):
                    port.defer(op.calls)
            except BaseException as exc:  # KeyboardInterrupt too: the flow cleans up
                error, unwinding = exc, True
    finally:
        for waiter_id in waited:
            port.forget(waiter_id)
