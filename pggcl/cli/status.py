"""`pggcl run`'s status line: while it waits, say why, so that a wait never looks like a hang.

On a terminal, once the wait has lasted more than a moment, one line on stderr says for how
long it has waited, how full each limit is and who holds it, and the request's place in each
queue; it is kept current, and erased when COMMAND starts (or the wait ends otherwise). On a
pipe or in cron nothing is printed, unless asked (``--verbose``): then the same line is printed
now and then, one line each time, for a log.

The line is read from the public views (the limit, its holders, its queue), about once a
second on a terminal: a display for a person watching, not how the wait learns of its grant
(that is a notification).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

import pggcl
from pggcl.errors import PggclError
from pggcl.formatting import moment, ordinal, printable, slots
from pggcl.models import ConcurrencyLimit, Holder, Waiter

# How long a wait lasts before the line appears, and how often it is redrawn.
FIRST_AFTER = 1.0
TERMINAL_EVERY = 1.0
LOG_EVERY = 10.0
# Holders named per limit; the rest are counted.
_NAMED_HOLDERS = 1

_ERASE = "\r\x1b[K"


def ours(holder: str | None) -> bool:
    """Whether a queued request's holder text is this process's (``host:pid`` first)."""
    mine = f"{socket.gethostname()}:{os.getpid()}"
    return holder is not None and (holder == mine or holder.startswith((mine + " ", mine + ":")))


def describe(limit: ConcurrencyLimit, holders: Sequence[Holder], queue: Sequence[Waiter]) -> str:
    """One limit's part of the line: how full it is, who holds it, our place in its queue."""
    parts = [f"'{printable(limit.name)}' {slots(limit.active_slots)}/{limit.limit} in use"]
    if not limit.active:
        parts[0] += " (inactive)"
    if holders:
        oldest = sorted(holders, key=lambda h: h.since)
        named = ", ".join(
            f"{printable(h.holder or '?')} since {moment(h.since)}" for h in oldest[:_NAMED_HOLDERS]
        )
        more = len(oldest) - _NAMED_HOLDERS
        parts.append(f"held by {named}" + (f" and {more} more" if more > 0 else ""))
    place = next((w.position for w in queue if ours(w.holder)), None)
    if place is not None:
        ahead = place - 1
        parts.append(f"{ordinal(place)} in queue ({ahead} ahead)")
    return ", ".join(parts)


def status_line(client: pggcl.Client, names: Sequence[str], waited: float) -> str:
    pieces = []
    for name in names:
        try:
            limit = client.read_limit(name)
        except PggclError:
            continue  # missing (it is being created), or the database is away: say less
        pieces.append(describe(limit, client.holders(name), client.queue(name)))
    return f"pggcl: waiting {waited:.0f}s: " + ("; ".join(pieces) or "(no limit to show)")


class WaitStatus:
    """The status line of one wait: started before the acquire, stopped before COMMAND."""

    def __init__(
        self, client: pggcl.Client, names: Sequence[str], stream: TextIO, terminal: bool
    ) -> None:
        self._client, self._names, self._stream = client, list(names), stream
        self._terminal = terminal
        self._every = TERMINAL_EVERY if terminal else LOG_EVERY
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._shown = False
        self._thread = threading.Thread(target=self._run, name="pggcl-status", daemon=True)

    @classmethod
    def for_run(
        cls, client: pggcl.Client, names: Sequence[str], verbose: bool
    ) -> WaitStatus | None:
        """The status of ``pggcl run``'s wait: on a terminal, or on a pipe when verbose."""
        terminal = sys.stderr.isatty()
        if not (terminal or verbose):
            return None
        return cls(client, names, sys.stderr, terminal)

    def start(self) -> WaitStatus:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop redrawing and erase the line; nothing is written after this returns."""
        with self._lock:
            self._stopped.set()
            if self._shown and self._terminal:
                self._stream.write(_ERASE)
                self._stream.flush()
            self._shown = False

    def _run(self) -> None:
        if self._stopped.wait(FIRST_AFTER):
            return
        while True:
            try:
                line = status_line(self._client, self._names, time.monotonic() - self._started)
            except PggclError:
                line = None  # the database is away; the client rides it out, and so do we
            with self._lock:
                if self._stopped.is_set():
                    return
                if line is not None:
                    self._show(line)
            if self._stopped.wait(self._every):
                return

    def _show(self, line: str) -> None:
        if self._terminal:
            width = shutil.get_terminal_size().columns - 1
            self._stream.write(_ERASE + line[:width])
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
        self._shown = True
