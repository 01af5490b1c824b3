"""Processes: the module-level functions across fork(), and the limit across processes."""

from __future__ import annotations

import multiprocessing
import os
import time
from multiprocessing.queues import Queue
from typing import Any

import pggcl
from pggcl.sync import concurrency
from tests.client.conftest import max_overlap

_fork = multiprocessing.get_context("fork")


def _worker(out: Queue[tuple[float, float]], entries: Any, full: Any) -> None:
    for _ in range(8):
        with concurrency("db"):
            start = time.time()  # a clock shared by the processes
            with entries.get_lock():
                entries.value += 1
                first_wave = entries.value <= 2
                if entries.value == 2:
                    full.set()
            if first_wave:  # the first 2 holders stay until both are in: the peak is reached
                assert full.wait(10), "the limit of 2 was never reached"
            time.sleep(0.01)
            out.put((start, time.time()))


def test_max_overlap_of_4_processes_never_exceeds_the_limit(env_dsn: str) -> None:
    with pggcl.Client(env_dsn) as c:
        c.create_limit("db", 2)
    with concurrency("db"):  # the parent's process-wide client exists before the fork
        pass
    out: Queue[tuple[float, float]] = _fork.Queue()
    entries, full = _fork.Value("i", 0), _fork.Event()
    procs = [_fork.Process(target=_worker, args=(out, entries, full)) for _ in range(4)]
    for p in procs:
        p.start()
    intervals = [out.get(timeout=60) for _ in range(32)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert max_overlap(intervals) == 2
    with concurrency("db", occupy=2, timeout_seconds=10):  # the parent's client still works
        pass


def test_fork_while_holding_gives_the_child_its_own_session(env_dsn: str) -> None:
    with pggcl.Client(env_dsn) as c:
        c.create_limit("db", 2)
        with concurrency("db"):
            pid = os.fork()
            if pid == 0:  # the child: its own session, never the parent's sockets
                code = 1
                try:
                    with concurrency("db", timeout_seconds=10):
                        code = 0 if len(c.holders("db")) == 2 else 2
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert len(c.holders("db")) == 1  # the parent's lease survived the child's exit
        assert c.holders() == []
