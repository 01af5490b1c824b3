"""What differs between the async and the sync world, async side (see ``pggcl/_compat.py``).

``tools/async_to_sync.py`` maps this module to ``_compat``: the two export the same names.
"""

from __future__ import annotations

import asyncio


def worker_name() -> str | None:
    """The name of the running task: the holder text of its leases shows it."""
    task = asyncio.current_task()
    return task.get_name() if task is not None else None
