"""The examples of Prefect's global concurrency limits page, with ``prefect.concurrency``
replaced by ``pggcl``. Prefect's @flow/@task are dropped: tasks run in threads (sync) or as
asyncio tasks (async). Only the sleeps and loop counts are shortened."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pggcl


def submit_all(fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[Any]:
    """What Prefect's ``task.submit`` does for these examples: run each call in a thread."""
    results: list[Any] = [None] * len(args)

    def run(i: int) -> None:
        results[i] = fn(*args[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrency_sync(env_dsn: str) -> None:
    from pggcl.sync import concurrency

    def process_data(x: int, y: int) -> int:
        with concurrency("database", occupy=1):
            return x + y

    def my_flow() -> list[int]:
        return submit_all(process_data, [(1, 2), (2, 3), (3, 4), (4, 5)])

    assert my_flow() == [3, 5, 7, 9]


async def test_concurrency_async(env_dsn: str) -> None:
    from pggcl.asyncio import concurrency

    async def process_data(x: int, y: int) -> int:
        async with concurrency("database", occupy=1):
            return x + y

    async def my_flow() -> list[int]:
        results = []
        for x, y in [(1, 2), (2, 3), (3, 4), (4, 5)]:
            results.append(await process_data(x, y))
        return results

    assert await my_flow() == [3, 5, 7, 9]


@pytest.fixture
def rate_limited_api(env_dsn: str) -> None:
    with pggcl.Client(env_dsn) as c:
        c.create_limit("rate-limited-api", limit=5, slot_decay_per_second=200.0)


def test_rate_limit_sync(rate_limited_api: None, capsys: pytest.CaptureFixture[str]) -> None:
    from pggcl.sync import rate_limit

    def make_http_request() -> None:
        rate_limit("rate-limited-api")
        print("Making an HTTP request...")

    submit_all(make_http_request, [() for _ in range(10)])
    assert capsys.readouterr().out.count("Making an HTTP request...") == 10


async def test_rate_limit_async(rate_limited_api: None, capsys: pytest.CaptureFixture[str]) -> None:
    from pggcl.asyncio import rate_limit

    async def make_http_request() -> None:
        await rate_limit("rate-limited-api")
        print("Making an HTTP request...")

    await asyncio.gather(*(make_http_request() for _ in range(10)))
    assert capsys.readouterr().out.count("Making an HTTP request...") == 10


def test_outside_a_flow(rate_limited_api: None, capsys: pytest.CaptureFixture[str]) -> None:
    from pggcl.asyncio import rate_limit

    async def main() -> None:
        for _ in range(10):
            await rate_limit("rate-limited-api")
            print("Making an HTTP request...")

    asyncio.run(main())  # a loop of its own, as the example runs it
    assert capsys.readouterr().out.count("Making an HTTP request...") == 10


def test_throttling_task_submission(env_dsn: str) -> None:
    from pggcl.sync import rate_limit

    with pggcl.Client(env_dsn) as c:
        c.create_limit("slow-my-flow", limit=10, slot_decay_per_second=1000.0)

    def my_task(i: int) -> int:
        return i

    submitted = []
    for _ in range(100):
        rate_limit("slow-my-flow", occupy=1)
        submitted.append(my_task(1))
    assert len(submitted) == 100


def test_database_connections(env_dsn: str) -> None:
    from pggcl.sync import concurrency

    with pggcl.Client(env_dsn) as c:
        c.create_limit("database", limit=2)

    def database_query(query: str) -> list[tuple[Any, ...]]:
        with concurrency("database", occupy=1):
            connection = psycopg.connect(env_dsn)
            cursor = connection.cursor()
            cursor.execute(query)
            result = cursor.fetchall()
            connection.close()
            return result

    queries = ["SELECT 1", "SELECT 2", "SELECT 3"]
    assert submit_all(database_query, [(q,) for q in queries]) == [[(1,)], [(2,)], [(3,)]]


async def test_parallel_data_processing(env_dsn: str) -> None:
    from pggcl.sync import concurrency

    with pggcl.Client(env_dsn) as c:
        c.create_limit("data-processing", limit=5)

    async def process_data(data: int) -> str:
        print(f"Processing: {data}")
        await asyncio.sleep(0.001)
        return f"Processed: {data}"

    async def main() -> list[str]:
        data_items = list(range(100))
        processed_data: list[str] = []

        while data_items:
            with concurrency("data-processing", occupy=5):
                chunk = [data_items.pop() for _ in range(5)]
                processed_data += await asyncio.gather(*[process_data(item) for item in chunk])

        print(processed_data)
        return processed_data

    assert sorted(await main()) == sorted(f"Processed: {i}" for i in range(100))
