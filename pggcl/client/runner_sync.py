"""GENERATED from ``pggcl/client/runner_async.py`` by ``tools/async_to_sync.py``: do not
edit; change the async source (it says what this module is for) and run the tool.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from pggcl.client._compat import shielded
from pggcl.core.notifications import Event
from pggcl.core.ops import Call, Defer, Flow, OpenSession, Row, Sleep, Wait

T = TypeVar("T")


class Port(Protocol):
    @property
    def epoch(self) -> int: ...

    def call(self, sql: str, args: tuple[Any, ...]) -> list[Row]: ...

    def wait(self, waiter_id: int, timeout: float | None, epoch: int) -> Event | None: ...

    def forget(self, waiter_id: int) -> None: ...

    def session_id(self) -> int: ...

    def sleep(self, seconds: float) -> None: ...

    def defer(self, calls: tuple[Call, ...]) -> None: ...


def run(flow: Flow[T], port: Port) -> T:
    """Drive ``flow`` to its end in this task."""
    epoch, waited = (port.epoch, set[int]())
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
                    value = shielded(call) if unwinding else call
                elif isinstance(op, Wait):
                    waited.add(op.waiter_id)
                    value = port.wait(op.waiter_id, op.timeout, epoch)
                elif isinstance(op, OpenSession):
                    value = port.session_id()
                elif isinstance(op, Sleep):
                    port.sleep(op.seconds)
                elif isinstance(op, Defer):
                    port.defer(op.calls)
            except BaseException as exc:  # KeyboardInterrupt too: the flow cleans up
                error, unwinding = (exc, True)
    finally:
        for waiter_id in waited:
            port.forget(waiter_id)
