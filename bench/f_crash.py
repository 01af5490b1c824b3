"""F: crash. A process holding the only slot of a limit is killed with SIGKILL while this
process waits for the slot; how long until this process has it?

Nothing tells the waiter that the holder died: its client's heartbeat (every
``heartbeat_seconds`` while it has waiters) finds the holder's session connection gone, and the
engine hands the slot over once the holder's ``grace_seconds`` have passed (a grace lets a
client that merely lost its connection resume). So the bound is about grace + one heartbeat
interval: the baseline. Defaults: grace 5 s, heartbeat 2 s; --quick shortens both.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from multiprocessing.connection import Connection

import pggcl
from bench._common import Env, Figure, median, processes, progress, wait_for, waiting

ID = "F"
TITLE = "crash: the holder of a 1-slot limit is killed with SIGKILL"
TARGET = 10.0


def run(env: Env) -> list[Figure]:
    reps = env.count(3, 1)
    grace, heartbeat = env.size(5.0, 0.3), env.size(2.0, 0.2)
    recoveries = [_once(env, grace, heartbeat) for _ in range(reps)]
    value, bound = median(recoveries), grace + heartbeat
    return [
        Figure(
            ID, f"kill -> another process holds the slot (median of {reps})", value, "s",
            bound, f"grace {grace:g} s + heartbeat {heartbeat:g} s", value / bound,
            f"max <= {TARGET:g} s", max(recoveries) <= TARGET, runs=recoveries,
        ),
    ]  # fmt: skip


def _once(env: Env, grace: float, heartbeat: float) -> float:
    name = env.create_limit("f", 1)
    ours, theirs = processes().Pipe()
    holder = processes().Process(target=_holder, args=(env.dsn, name, grace, theirs), daemon=True)
    holder.start()
    assert ours.recv() == "holding"
    granted: list[float] = []
    with pggcl.Client(env.dsn, heartbeat_seconds=heartbeat) as client:

        def wait() -> None:
            with client.concurrency(name, timeout_seconds=60):
                granted.append(time.monotonic())

        waiter = threading.Thread(target=wait)
        waiter.start()
        wait_for(lambda: waiting(env, name) == 1, "this process waits for the slot")
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        waiter.join(60)
    holder.join(10)
    assert granted, "the slot was not handed over within 60 s"
    progress(f"F: acquired {granted[0] - killed:.2f} s after the kill")
    return granted[0] - killed


def _holder(dsn: str, name: str, grace: float, pipe: Connection) -> None:
    client = pggcl.Client(dsn, grace_seconds=grace)
    with client.concurrency(name):
        pipe.send("holding")
        time.sleep(3600)  # until killed
