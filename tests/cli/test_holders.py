"""`pggcl holders` (who holds, who waits) and `pggcl release` (give back a stuck lease)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

import pggcl
from tests.cli.conftest import as_json, assert_one_line_error, cli, wait_for

Psql = Callable[..., str]


@pytest.fixture
def client(pggcl_dsn: str) -> Iterator[pggcl.Client]:
    with pggcl.Client(pggcl_dsn) as c:
        yield c


def _queue_behind(client: pggcl.Client, name: str, holder: str) -> threading.Thread:
    """A thread whose request on `name` waits in line; it ends once it got and gave back."""

    def wait_in_line() -> None:
        with client.concurrency(name, holder=holder, timeout_seconds=30):
            pass

    thread = threading.Thread(target=wait_in_line, daemon=True)
    thread.start()
    wait_for(lambda: any(w.holder == holder for w in client.queue(name)), f"{holder} queues")
    return thread


def test_holders_when_nothing_is_held(shared_dsn: str) -> None:
    result = cli("holders", dsn=shared_dsn)
    assert (result.exit_code, result.stdout) == (0, "No slots are held.\n\nNobody is waiting.\n")
    result = cli("holders", "--output", "json", dsn=shared_dsn)
    assert as_json(result.stdout) == {"holders": [], "queue": []}


def test_holders_table_shows_who_holds_and_who_waits(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 1)
    client.create_limit("gpu", 5)
    with client.concurrency("db", holder="backup"), client.concurrency("gpu", occupy=2):
        waiter = _queue_behind(client, "db", "report")
        result = cli("holders", dsn=pggcl_dsn)
        leases = {h.name: h.lease_id for h in client.holders()}
    waiter.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    held, waiting = result.stdout.split("\n\n")
    header, *rows = [line.split() for line in held.splitlines()]
    assert header == ["LEASE", "LIMIT", "SLOTS", "HOLDER", "SINCE", "EXPIRES"]
    assert sorted((row[:3] for row in rows), key=lambda row: row[1]) == [
        [str(leases["db"]), "db", "1"],
        [str(leases["gpu"]), "gpu", "2"],
    ]
    by_limit = {row[1]: row for row in rows}
    assert by_limit["db"][3] == "backup"
    assert by_limit["db"][-1] == "-"  # held by a live session, no expiry
    # Times in UTC, ISO 8601 to the second, as the UI shows them, wherever the command runs.
    since = by_limit["db"][4]
    assert since.endswith("Z") and datetime.fromisoformat(since).tzinfo == UTC
    assert abs(datetime.now(UTC) - datetime.fromisoformat(since)) < timedelta(minutes=5)
    header, *rows = [line.split() for line in waiting.splitlines()]
    assert header == ["POSITION", "LIMIT", "OCCUPY", "MODE", "HOLDER", "SINCE"]
    assert [row[:5] for row in rows] == [["1", "db", "1", "concurrency", "report"]]


def test_holders_of_one_limit_as_json(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 1)
    client.create_limit("gpu", 5)
    with (
        client.concurrency("db", holder="backup", lease_duration=None),
        client.concurrency("gpu", occupy=2),
    ):
        waiter = _queue_behind(client, "db", "report")
        result = cli("holders", "db", "-o", "json", dsn=pggcl_dsn)
    waiter.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    data = as_json(result.stdout)
    assert list(data) == ["holders", "queue"]
    [holder] = data["holders"]
    assert (holder["name"], holder["slots"], holder["holder"]) == ("db", 1, "backup")
    uuid.UUID(holder["lease_id"])
    assert holder["expires"] is None and isinstance(holder["session_id"], int)
    [waiting] = data["queue"]
    assert list(waiting) == [
        "waiter_id",
        "name",
        "position",
        "occupy",
        "mode",
        "holder",
        "session_id",
        "since",
        "priority",
    ]
    assert (waiting["name"], waiting["position"], waiting["occupy"]) == ("db", 1, 1)
    assert (waiting["mode"], waiting["holder"]) == ("concurrency", "report")
    assert datetime.fromisoformat(waiting["since"]).tzinfo is not None


def test_holders_of_a_missing_limit(shared_dsn: str) -> None:
    result = cli("holders", "nope", dsn=shared_dsn)
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        "Error: global concurrency limit 'nope' not found\n",
    )


def test_release_a_stuck_lease_lets_the_next_one_in(
    pggcl_dsn: str, client: pggcl.Client, psql: Psql
) -> None:
    client.create_limit("db", 1)
    # A lease taken by plain SQL with a long TTL, by a process that then went away.
    lease = psql(
        "SELECT lease_id FROM pggcl.try_acquire('{db}', ttl_seconds => 600, holder => 'cron')",
        pggcl_dsn,
    ).strip()
    held = as_json(cli("holders", "-o", "json", dsn=pggcl_dsn).stdout)["holders"]
    assert [(h["lease_id"], h["holder"]) for h in held] == [(lease, "cron")]
    assert datetime.fromisoformat(held[0]["expires"]).tzinfo is not None
    waiter = _queue_behind(client, "db", "next")

    result = cli("release", lease, dsn=pggcl_dsn)
    assert (result.exit_code, result.stdout) == (0, f"Released lease {lease}.\n")
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert client.holders("db") == []

    again = cli("release", lease, dsn=pggcl_dsn)
    assert (again.exit_code, again.stdout) == (1, "")
    assert again.stderr == (
        f"Error: lease {lease} is not held (it was released or reclaimed already)\n"
    )


def test_release_unknown_lease(shared_dsn: str) -> None:
    lease = uuid.uuid4()
    result = cli("release", str(lease), dsn=shared_dsn)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, str(lease), "not held")


def test_release_needs_a_uuid(shared_dsn: str) -> None:
    result = cli("release", "not-a-uuid", dsn=shared_dsn)
    assert result.exit_code == 2
    assert "not-a-uuid" in result.stderr and "Traceback" not in result.stderr
