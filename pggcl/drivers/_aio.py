"""An asyncio helper the asyncpg driver and the async I/O layer share."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def shielded(call: Awaitable[T]) -> T:
    """``call``'s result, whatever cancellations arrive meanwhile. For a caller that is already
    handling one cancellation and re-raises it when this is done."""
    task = asyncio.ensure_future(call)
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
    return task.result()
