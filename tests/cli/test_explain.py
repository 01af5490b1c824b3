"""`pggcl explain`: why queued requests wait (issue #16.3)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import datetime

import pytest

import pggcl
from tests.cli.conftest import (
    as_json,
    assert_one_line_error,
    cli,
    pggcl_subprocess,
    wait_for,
)

MOMENT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def client(pggcl_dsn: str) -> Iterator[pggcl.Client]:
    with pggcl.Client(pggcl_dsn) as c:
        yield c


def _queue(
    client: pggcl.Client, names: list[str], holder: str, occupy: int = 1, rate: bool = False
) -> threading.Thread:
    """A thread whose request waits in line; it ends once it got (and gave back) its slots."""

    def wait_in_line() -> None:
        if rate:
            client.rate_limit(names, occupy, timeout_seconds=60)
            return
        with client.concurrency(names, occupy, holder=holder, timeout_seconds=60):
            pass

    before = len({w.waiter_id for w in client.queue()})
    thread = threading.Thread(target=wait_in_line, daemon=True)
    thread.start()
    wait_for(lambda: len({w.waiter_id for w in client.queue()}) > before, f"{holder} queues")
    return thread


T = "YYYY-MM-DDThh:mm:ssZ"  # a moment, as wide as one


def _plain(text: str) -> str:
    return MOMENT.sub(T, text)


def test_nobody_waiting(shared_dsn: str) -> None:
    result = cli("explain", dsn=shared_dsn)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "Nobody is waiting.\n", "")
    result = cli("explain", "--output", "json", dsn=shared_dsn)
    assert (result.exit_code, as_json(result.stdout)) == (0, [])


def test_explain_says_who_blocks_each_request(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 2)
    client.create_limit("gpu", 4)
    with (
        client.concurrency("db", holder="backup", lease_duration=None),
        client.concurrency("db", holder="web1:42 pg_dump", lease_duration=None),
        client.concurrency("gpu", holder="trainer", lease_duration=None),
    ):
        big = _queue(client, ["db"], "report", occupy=2)
        both = _queue(client, ["db", "gpu"], "etl")
        first, second = sorted({w.waiter_id for w in client.queue()})
        result = cli("explain", dsn=pggcl_dsn)
        only_gpu = cli("explain", "gpu", "--max-holders", "1", dsn=pggcl_dsn)
        one = cli("explain", "--waiter", str(second), "--max-holders", "0", dsn=pggcl_dsn)
    big.join(timeout=30)
    both.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    assert _plain(result.stdout) == (
        f"Waiter {first} (report): 2 slots, concurrency, queued since {T}\n"
        "  'db': BLOCKING, 1st in queue (0 ahead), 2/2 in use, held by 2 leases\n"
        "    HOLDER           SLOTS  SINCE                 EXPIRES\n"
        f"    backup               1  {T}  -\n"
        f"    web1:42 pg_dump      1  {T}  -\n"
        "\n"
        f"Waiter {second} (etl): 1 slot, concurrency, queued since {T}\n"
        "  'db': BLOCKING, 2nd in queue (1 ahead), 2/2 in use, held by 2 leases\n"
        "    HOLDER           SLOTS  SINCE                 EXPIRES\n"
        f"    backup               1  {T}  -\n"
        f"    web1:42 pg_dump      1  {T}  -\n"
        "  'gpu': not blocking, 1st in queue (0 ahead), 1/4 in use, held by 1 lease\n"
        "    HOLDER   SLOTS  SINCE                 EXPIRES\n"
        f"    trainer      1  {T}  -\n"
    )
    # NAME: the requests queued there, on every limit they wait on; at most N holders each.
    assert only_gpu.exit_code == 0, only_gpu.stderr
    assert _plain(only_gpu.stdout).splitlines()[:5] == [
        f"Waiter {second} (etl): 1 slot, concurrency, queued since {T}",
        "  'db': BLOCKING, 2nd in queue (1 ahead), 2/2 in use, held by 2 leases",
        "    HOLDER  SLOTS  SINCE                 EXPIRES",
        f"    backup      1  {T}  -",
        "    ... and 1 more lease",
    ]
    assert one.exit_code == 0, one.stderr
    assert _plain(one.stdout) == (
        f"Waiter {second} (etl): 1 slot, concurrency, queued since {T}\n"
        "  'db': BLOCKING, 2nd in queue (1 ahead), 2/2 in use, held by 2 leases\n"
        "  'gpu': not blocking, 1st in queue (0 ahead), 1/4 in use, held by 1 lease\n"
    )


def test_explain_as_json(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 1)
    with client.concurrency("db", holder="backup", lease_duration=None):
        waiter = _queue(client, ["db"], "report")
        result = cli("explain", "db", "-o", "json", dsn=pggcl_dsn)
        (lease,) = client.holders("db")
    waiter.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    [row] = as_json(result.stdout)
    assert list(row) == [
        "waiter_id", "name", "blocking", "position", "occupy", "mode", "limit", "active",
        "held_slots", "active_slots", "leases", "holders", "seconds_until_room", "since",
    ]  # fmt: skip
    assert (row["name"], row["blocking"], row["position"], row["occupy"]) == ("db", True, 1, 1)
    assert (row["held_slots"], row["active_slots"], row["leases"]) == (1, 1, 1)
    assert row["seconds_until_room"] is None and isinstance(row["waiter_id"], int)
    assert row["holders"] == [
        {"holder": "backup", "slots": 1, "since": lease.since.isoformat(), "expires": None}
    ]
    assert datetime.fromisoformat(row["since"]).utcoffset() is not None
    assert str(lease.lease_id) not in result.stdout  # no lease ids


def test_explain_a_rate_limit_says_when_there_will_be_room(
    pggcl_dsn: str, client: pggcl.Client
) -> None:
    client.create_limit("api", 2, slot_decay_per_second=0.01)
    client.rate_limit("api", occupy=2)
    waiter = _queue(client, ["api"], "caller", rate=True)
    result = cli("explain", "api", dsn=pggcl_dsn)
    client.delete_limit("api")  # its waiter goes ahead
    waiter.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    line = result.stdout.splitlines()[1]
    assert re.fullmatch(
        r"  'api': BLOCKING, 1st in queue \(0 ahead\), 2/2 in use \(0 held, 2 decaying\),"
        r" room in \d+\.\d s",
        line,
    ), line


def test_explain_errors(shared_dsn: str) -> None:
    missing = cli("explain", "nope", dsn=shared_dsn)
    assert (missing.exit_code, missing.stdout) == (1, "")
    assert missing.stderr == "Error: global concurrency limit 'nope' not found\n"
    gone = cli("explain", "--waiter", "123456789", dsn=shared_dsn)
    assert (gone.exit_code, gone.stdout) == (1, "")
    assert_one_line_error(gone.stderr, "waiter 123456789 is not queued")
    both = cli("explain", "db", "--waiter", "1", dsn=shared_dsn)
    assert both.exit_code == 2 and "not both" in both.stderr
    negative = cli("explain", "--max-holders", "-1", dsn=shared_dsn)
    assert negative.exit_code == 2
    huge = cli("explain", "--waiter", str(2**64), dsn=shared_dsn)
    assert (huge.exit_code, huge.stdout) == (1, "")
    assert_one_line_error(huge.stderr, "waiter_id")


def test_explain_from_the_console_script(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 1)
    with client.concurrency("db", holder="backup", lease_duration=None):
        waiter = _queue(client, ["db"], "report")
        proc = pggcl_subprocess("explain", "db", dsn=pggcl_dsn)
    waiter.join(timeout=30)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert "'db': BLOCKING, 1st in queue (0 ahead), 1/1 in use, held by 1 lease" in proc.stdout
    help_text = pggcl_subprocess("explain", "--help")
    assert help_text.returncode == 0 and "--waiter WAITER_ID" in help_text.stdout
