"""The conformance adapter of the Python async client, pggcl.AsyncClient (see
tests/conformance/README.md): the commands and events of adapter_python.py, each acquire a
task of one event loop; ``cancel`` cancels the acquire's task, as asyncio code would.

Arguments: DSN GRACE_SECONDS HEARTBEAT_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import pggcl


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def main() -> None:
    dsn, grace, heartbeat = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    client = pggcl.AsyncClient(dsn, grace_seconds=grace, heartbeat_seconds=heartbeat)
    releases: dict[str, asyncio.Event] = {}
    tasks: dict[str, asyncio.Task[None]] = {}

    async def acquire(cmd: dict[str, Any]) -> None:
        tag = cmd["tag"]
        started = time.monotonic()
        try:
            if cmd.get("mode", "concurrency") == "rate_limit":
                await client.rate_limit(cmd["names"], occupy=cmd.get("occupy", 1),
                                        timeout_seconds=cmd.get("timeout"))  # fmt: skip
                emit(event="granted", tag=tag, lease=None, elapsed=time.monotonic() - started)
                return
            done = releases.setdefault(tag, asyncio.Event())
            async with client.concurrency(cmd["names"], occupy=cmd.get("occupy", 1),
                                          timeout_seconds=cmd.get("timeout"),
                                          max_retries=cmd.get("max_retries")) as grant:  # fmt: skip
                lease = None if grant.lease_id is None else str(grant.lease_id)
                emit(event="granted", tag=tag, lease=lease, elapsed=time.monotonic() - started)
                await done.wait()
            emit(event="released", tag=tag)
        except asyncio.CancelledError:
            emit(event="cancelled", tag=tag)
        except pggcl.AcquireConcurrencySlotTimeoutError:
            emit(event="timeout", tag=tag, elapsed=time.monotonic() - started)
        except pggcl.PggclError as exc:
            emit(event="error", tag=tag, **{"class": type(exc).__name__}, sqlstate=exc.sqlstate)

    loop = asyncio.get_running_loop()
    emit(event="ready")
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        cmd = json.loads(line)
        if cmd["cmd"] == "acquire":
            tasks[cmd["tag"]] = asyncio.create_task(acquire(cmd))
        elif cmd["cmd"] == "release":
            releases.setdefault(cmd["tag"], asyncio.Event()).set()
        elif cmd["cmd"] == "cancel":
            tasks[cmd["tag"]].cancel()
        elif cmd["cmd"] == "quit":
            break
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
