"""What differs between the async and the sync world, sync side (see ``pggcl/_acompat.py``)."""

from __future__ import annotations

import threading


def worker_name() -> str | None:
    """The name of the running thread: the holder text of its leases shows it."""
    return threading.current_thread().name
