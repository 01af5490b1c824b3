"""The examples of Prefect's global concurrency limits page, run inside real Prefect 3 flows
and tasks (issue #14, point 3), with ``prefect.concurrency`` replaced by ``pggcl``.

Each body also records when it held its slots (``spans``) and lasts a little, so that the
test can prove the limit held: the most bodies seen at once equals the limit, never more;
afterwards nothing is held or queued. Loop counts are shortened. One change the seed needs in
Prefect 3 itself: a ``PrefectFuture`` is not awaitable there, so the async flows submit, then
wait for their futures (``await process_data.submit(x, y)`` raises TypeError in Prefect 3,
with Prefect's own concurrency too).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import pggcl

pytest.importorskip("prefect", reason="Prefect is not installed: pip install '.[prefect]'")

from prefect import flow, task
from prefect.futures import wait

HOLD = 0.3  # seconds each body holds its slots


class Spans:
    """When each body held its slots, and who pggcl said held them meanwhile."""

    def __init__(self, dsn: str) -> None:
        self._lock = threading.Lock()
        self.spans: list[tuple[float, float]] = []
        self.holders: set[str] = set()
        self._dsn = dsn

    @contextlib.contextmanager
    def held(self, name: str | None = None) -> Iterator[None]:
        start = time.monotonic()
        if name is not None:
            with pggcl.Client(self._dsn) as c:
                seen = {h.holder or "" for h in c.holders(name)}
            with self._lock:
                self.holders |= seen
        time.sleep(HOLD)
        with self._lock:
            self.spans.append((start, time.monotonic()))
        yield

    def max_overlap(self) -> int:
        edges = sorted([(s, 1) for s, _ in self.spans] + [(e, -1) for _, e in self.spans])
        best = now = 0
        for _, step in edges:
            now += step
            best = max(best, now)
        return best


def _nothing_left(dsn: str) -> None:
    with pggcl.Client(dsn) as c:
        assert c.holders() == [] and c.queue() == []


def _create(dsn: str, name: str, limit: int, decay: float = 0.0) -> None:
    with pggcl.Client(dsn) as c:
        c.create_limit(name, limit, slot_decay_per_second=decay)


def test_concurrency_sync(prefect_api: str, env_dsn: str) -> None:
    from pggcl.sync import concurrency

    _create(env_dsn, "database", 2)
    spans = Spans(env_dsn)

    @task
    def process_data(x: int, y: int) -> int:
        with concurrency("database", occupy=1), spans.held("database"):
            return x + y

    @flow
    def my_flow() -> None:
        for x, y in [(1, 2), (2, 3), (3, 4), (4, 5)]:
            process_data.submit(x, y)

    my_flow()
    _wait_for(lambda: len(spans.spans) == 4)
    assert spans.max_overlap() == 2
    # The holder pggcl shows is the Prefect task run that holds the slots.
    assert spans.holders and all(h.startswith("task_run:") for h in spans.holders), spans.holders
    _nothing_left(env_dsn)


def test_concurrency_async(prefect_api: str, env_dsn: str) -> None:
    from pggcl.asyncio import concurrency

    _create(env_dsn, "database", 2)
    spans = Spans(env_dsn)

    @task
    async def process_data(x: int, y: int) -> int:
        async with concurrency("database", occupy=1):
            await asyncio.to_thread(_hold, spans, "database")
            return x + y

    @flow
    async def my_flow() -> list[int]:
        pairs = [(1, 2), (2, 3), (3, 4), (4, 5)]
        futures: list[Any] = [process_data.submit(x, y) for x, y in pairs]
        wait(futures)
        return [f.result() for f in futures]

    assert asyncio.run(my_flow()) == [3, 5, 7, 9]
    assert spans.max_overlap() == 2
    assert all(h.startswith("task_run:") for h in spans.holders), spans.holders
    _nothing_left(env_dsn)


def _hold(spans: Spans, name: str) -> None:
    with spans.held(name):
        pass


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _at_most_rate(times: list[float], limit: int, decay: float) -> None:
    """Never more calls in a window than the bucket allows: limit + decay * its length."""
    times = sorted(times)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= limit + decay * (times[j] - start) + 1e-6 + 1, (i, j)


def test_rate_limit_sync(
    prefect_api: str, env_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pggcl.sync import rate_limit

    _create(env_dsn, "rate-limited-api", 2, decay=10.0)
    times: list[float] = []

    @task
    def make_http_request() -> None:
        rate_limit("rate-limited-api")
        times.append(time.monotonic())
        print("Making an HTTP request...")

    @flow
    def my_flow() -> None:
        for _ in range(10):
            make_http_request.submit()

    started = time.monotonic()
    my_flow()
    _wait_for(lambda: len(times) == 10)
    assert max(times) - started >= (10 - 2) / 10.0 - 0.05  # 8 of them waited for the decay
    _at_most_rate(times, 2, 10.0)
    _nothing_left(env_dsn)


def test_rate_limit_async(prefect_api: str, env_dsn: str) -> None:
    from pggcl.asyncio import rate_limit

    _create(env_dsn, "rate-limited-api", 2, decay=10.0)
    times: list[float] = []

    @task
    async def make_http_request() -> None:
        await rate_limit("rate-limited-api")
        times.append(time.monotonic())
        print("Making an HTTP request...")

    @flow
    async def my_flow() -> None:
        wait([make_http_request.submit() for _ in range(10)])

    started = time.monotonic()
    asyncio.run(my_flow())
    assert len(times) == 10
    assert max(times) - started >= (10 - 2) / 10.0 - 0.05
    _at_most_rate(times, 2, 10.0)
    _nothing_left(env_dsn)


def test_throttling_task_submission(prefect_api: str, env_dsn: str) -> None:
    from pggcl.sync import rate_limit

    _create(env_dsn, "slow-my-flow", 1, decay=20.0)
    times: list[float] = []

    @task
    def my_task(i: int) -> int:
        return i

    @flow
    def my_flow() -> None:
        for _ in range(10):
            rate_limit("slow-my-flow", occupy=1)
            times.append(time.monotonic())
            my_task.submit(1)

    my_flow()
    assert len(times) == 10 and times[-1] - times[0] >= 9 / 20.0 - 0.02
    _nothing_left(env_dsn)


def test_manage_database_connections(prefect_api: str, env_dsn: str) -> None:
    import psycopg

    from pggcl import concurrency  # the seed: from prefect import flow, task, concurrency

    _create(env_dsn, "database", 2)
    spans = Spans(env_dsn)

    @task
    def database_query(query: str) -> list[tuple[Any, ...]]:
        with concurrency("database", occupy=1), spans.held():
            connection = psycopg.connect(env_dsn)
            cursor = connection.cursor()
            cursor.execute(query)
            result = cursor.fetchall()
            connection.close()
            return result

    @flow
    def my_flow() -> list[Any]:
        queries = ["SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4"]
        futures = [database_query.submit(query) for query in queries]
        return [f.result() for f in futures]

    assert my_flow() == [[(1,)], [(2,)], [(3,)], [(4,)]]
    assert spans.max_overlap() == 2
    _nothing_left(env_dsn)


def test_parallel_data_processing(prefect_api: str, env_dsn: str) -> None:
    from pggcl.sync import concurrency

    _create(env_dsn, "data-processing", 5)
    spans = Spans(env_dsn)

    async def process_data(data: int) -> str:
        await asyncio.sleep(0.01)
        return f"Processed: {data}"

    @task
    async def main() -> list[str]:
        data_items = list(range(20))
        processed_data: list[str] = []
        while data_items:
            with concurrency("data-processing", occupy=5):
                chunk = [data_items.pop() for _ in range(5)]
                await asyncio.to_thread(_hold, spans, "data-processing")
                processed_data += await asyncio.gather(*[process_data(item) for item in chunk])
        return processed_data

    @flow
    def my_flow() -> list[list[str]]:
        futures: list[Any] = [main.submit(), main.submit()]  # two of them share the limit
        return [f.result() for f in futures]

    results = my_flow()
    assert [len(r) for r in results] == [20, 20]
    assert spans.max_overlap() == 1  # occupy=5 of 5: one chunk at a time
    _nothing_left(env_dsn)
