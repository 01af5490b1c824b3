"""The scenes of `pggcl demo`: the use cases of Prefect's global concurrency limit docs, live.

Each scene creates its own `demo-` limit, runs real threads through one `pggcl.Client`, prints
what happens as it happens, checks the promise it shows, and returns an Outcome for the
summary. `pace` scales every duration (1.0 as shown to people; the tests run faster).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import click

import pggcl

DATABASE = "demo-database"
API = "demo-api"
BATCH = "demo-data-processing"
NAMES = (DATABASE, API, BATCH)


@dataclass(frozen=True)
class Outcome:
    """What a scene showed, for the summary."""

    ok: bool
    summary: str


class Stage:
    """Timestamped, thread-safe printing for one demo run."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        with self._lock:
            click.echo(f"  [{self.elapsed():5.2f}s] {text}")

    def header(self, title: str, *lines: str) -> None:
        with self._lock:
            click.echo()
            click.secho(title, bold=True)
            for line in lines:
                click.echo(f"  {line}")


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll the views until `condition` holds: the demo waits on state, not on guessed sleeps."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo: gave up waiting until {what}")
        time.sleep(0.01)


def _start(target: Callable[..., None], *args: object, **kwargs: object) -> threading.Thread:
    # Daemon threads: Ctrl-C ends the demo even while workers wait for slots.
    thread = threading.Thread(target=target, args=args, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def concurrency_scene(client: pggcl.Client, stage: Stage, pace: float = 1.0) -> Outcome:
    """Workers under a concurrency limit: never more than `limit` at once."""
    workers, limit, hold = 9, 3, round(0.4 * pace, 3)
    client.create_limit(DATABASE, limit)
    stage.header(
        f"1. A concurrency limit: {workers} workers share {limit} database connections",
        f"pggcl create {DATABASE} --limit {limit}",
        f'each worker: with client.concurrency("{DATABASE}"): <work {hold} s>',
    )
    lock = threading.Lock()
    running = peak = 0
    full = threading.Event()

    def worker(i: int) -> None:
        nonlocal running, peak
        with client.concurrency(DATABASE, holder=f"worker {i}"):
            with lock:
                running += 1
                peak = max(peak, running)
                stage.say(f"worker {i} starts   running {'#' * running:<{limit}} {running}/{limit}")
                if running == limit:
                    full.set()
            time.sleep(hold)
            with lock:
                running -= 1
                stage.say(f"worker {i} is done  running {'#' * running:<{limit}} {running}/{limit}")

    threads = [_start(worker, i) for i in range(1, workers + 1)]
    if full.wait(timeout=15):
        held, waiting = client.holders(DATABASE), client.queue(DATABASE)
        stage.say(
            f"pggcl holders {DATABASE}: {len(held)} leases hold "
            f"{sum(h.slots for h in held)} slots, {len(waiting)} workers wait in line"
        )
    for thread in threads:
        thread.join()
    return Outcome(
        peak <= limit,
        f"concurrency: {workers} workers on limit {limit}, at most {peak} ran at once",
    )


def rate_scene(client: pggcl.Client, stage: Stage, pace: float = 1.0) -> Outcome:
    """A rate limit pacing calls: a slot decays every 1/per_second seconds."""
    calls, per_second = 10, round(5.0 / pace, 3)
    client.create_limit(API, 1, slot_decay_per_second=per_second)
    stage.header(
        f"2. A rate limit: {calls} API calls, all at once, paced to {per_second:g} per second",
        f"pggcl create {API} --limit 1 --slot-decay-per-second {per_second:g}",
        f'each call: rate_limit("{API}"); <call the API>',
    )
    lock = threading.Lock()
    times: list[float] = []

    def call(i: int) -> None:
        client.rate_limit(API)
        with lock:
            times.append(stage.elapsed())
            stage.say(f"call {i} goes out")

    threads = [_start(call, i) for i in range(1, calls + 1)]
    for thread in threads:
        thread.join()
    span = max(times) - min(times)
    achieved = (calls - 1) / span if span > 0 else float("inf")
    return Outcome(
        # Times are taken in this process after each call returns, so allow for its jitter.
        achieved <= per_second * 1.5,
        f"rate limit: {calls} calls in {span:.2f} s, {achieved:.1f} per second "
        f"(slot_decay_per_second {per_second:g})",
    )


def fifo_scene(client: pggcl.Client, stage: Stage, pace: float = 1.0) -> Outcome:
    """A large request (occupy=limit) is served in turn among small ones, not starved."""
    limit, hold = 5, round(0.5 * pace, 3)
    client.create_limit(BATCH, limit)
    stage.header(
        f"3. Fair turns: a batch that needs all {limit} slots, among small jobs",
        f"pggcl create {BATCH} --limit {limit}",
        f'batch: with client.concurrency("{BATCH}", occupy={limit}); small jobs: occupy=1',
    )
    lock = threading.Lock()
    order: list[str] = []
    # The first small jobs hold their slots until everyone has arrived, so the scene always
    # plays in the same order, however slow the machine.
    everyone_queued = threading.Event()

    def job(label: str, occupy: int, first: bool = False) -> None:
        with client.concurrency(BATCH, occupy=occupy, holder=label):
            with lock:
                order.append(label)
            stage.say(f"{label} starts ({occupy} slot{'s' if occupy > 1 else ''})")
            if first:
                everyone_queued.wait(timeout=15)
            time.sleep(hold)
        stage.say(f"{label} is done")

    def queued(count: int) -> Callable[[], bool]:
        return lambda: len(client.queue(BATCH)) == count

    threads = [_start(job, f"small-{n}", 1, first=True) for n in (1, 2, 3)]
    _wait_until(lambda: len(client.holders(BATCH)) == 3, "3 small jobs hold slots")
    threads.append(_start(job, "BATCH", limit))
    _wait_until(queued(1), "the batch is queued")
    stage.say(f"BATCH waits: it needs {limit} slots, {limit - 3} are free")
    for n in (4, 5, 6):
        threads.append(_start(job, f"small-{n}", 1))
        _wait_until(queued(n - 2), f"small-{n} is queued")
        stage.say(f"small-{n} arrives and queues behind BATCH, though slots are free")
    everyone_queued.set()
    for thread in threads:
        thread.join()
    served_in_turn = order.index("BATCH") == 3
    return Outcome(
        served_in_turn,
        f"fair turns: the occupy={limit} batch ran in its turn (order: {', '.join(order)})",
    )


SCENES = (concurrency_scene, rate_scene, fifo_scene)
