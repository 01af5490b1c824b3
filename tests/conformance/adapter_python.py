"""The conformance adapter of the Python sync client (see tests/conformance/README.md).

Reads one JSON command per line on stdin, writes one JSON event per line on stdout:

    {"cmd": "acquire", "tag": T, "names": [...], "occupy": 1, "mode": "concurrency",
     "timeout": null, "max_retries": null}
                           -> {"event": "granted", "tag": T, "lease": ..., "elapsed": s}
                           | {"event": "timeout" | "error", "tag": T, "class": ..., ...}
    {"cmd": "release", "tag": T}  -> {"event": "released", "tag": T}
    {"cmd": "cancel", "tag": T}   -> {"event": "cancelled", "tag": T}
    {"cmd": "quit"}

Arguments: DSN GRACE_SECONDS HEARTBEAT_SECONDS.

The sync world's only interruption of a waiting call is KeyboardInterrupt (a Ctrl-C), which
a signal raises in the main thread alone. Acquires run in threads here, so ``cancel`` raises
KeyboardInterrupt in the acquire's thread (``PyThreadState_SetAsyncExc``) and wakes that
thread (a re-check for every waiter of the client, as after a reconnect) so that it lands now,
not when the wait ends: what the client then does is what it does on a Ctrl-C.
"""

from __future__ import annotations

import ctypes
import json
import sys
import threading
import time
from typing import Any

import pggcl
from pggcl.core.notifications import RECHECK, Event

_out = threading.Lock()


def emit(**event: Any) -> None:
    with _out:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def interrupt(client: pggcl.Client, thread: threading.Thread) -> None:
    """Raise KeyboardInterrupt in ``thread``, which waits in ``client``, as a Ctrl-C would."""
    assert thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt)
    )
    session = client._port.session  # test-only: wake the waiting threads
    with session._lock:
        session._dispatch.broadcast(Event(RECHECK))


def main() -> None:
    dsn, grace, heartbeat = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    client = pggcl.Client(dsn, grace_seconds=grace, heartbeat_seconds=heartbeat)
    releases: dict[str, threading.Event] = {}
    threads: dict[str, threading.Thread] = {}

    def acquire(cmd: dict[str, Any]) -> None:
        tag = cmd["tag"]
        started = time.monotonic()
        try:
            if cmd.get("mode", "concurrency") == "rate_limit":
                client.rate_limit(cmd["names"], occupy=cmd.get("occupy", 1),
                                  timeout_seconds=cmd.get("timeout"))  # fmt: skip
                emit(event="granted", tag=tag, lease=None, elapsed=time.monotonic() - started)
                return
            done = releases.setdefault(tag, threading.Event())
            with client.concurrency(cmd["names"], occupy=cmd.get("occupy", 1),
                                    timeout_seconds=cmd.get("timeout"),
                                    max_retries=cmd.get("max_retries")) as grant:  # fmt: skip
                lease = None if grant.lease_id is None else str(grant.lease_id)
                emit(event="granted", tag=tag, lease=lease, elapsed=time.monotonic() - started)
                done.wait()
            emit(event="released", tag=tag)
        except KeyboardInterrupt:
            emit(event="cancelled", tag=tag)
        except pggcl.AcquireConcurrencySlotTimeoutError:
            emit(event="timeout", tag=tag, elapsed=time.monotonic() - started)
        except pggcl.PggclError as exc:
            emit(event="error", tag=tag, **{"class": type(exc).__name__}, sqlstate=exc.sqlstate)

    emit(event="ready")
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "acquire":
            thread = threading.Thread(target=acquire, args=(cmd,), daemon=True)
            threads[cmd["tag"]] = thread
            thread.start()
        elif cmd["cmd"] == "release":
            releases.setdefault(cmd["tag"], threading.Event()).set()
        elif cmd["cmd"] == "cancel":
            interrupt(client, threads[cmd["tag"]])
        elif cmd["cmd"] == "quit":
            break
    client.close()


if __name__ == "__main__":
    main()
