"""create, inspect, ls, update, enable, disable, delete: the `prefect gcl` verbs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

import pggcl
from tests.cli.conftest import as_json, assert_one_line_error, cli, pggcl_subprocess

Psql = Callable[..., str]


@pytest.fixture
def client(pggcl_dsn: str) -> Iterator[pggcl.Client]:
    with pggcl.Client(pggcl_dsn) as c:
        yield c


def limits_json(dsn: str) -> dict[str, dict[str, Any]]:
    result = cli("ls", "--output", "json", dsn=dsn)
    assert result.exit_code == 0, result.stderr
    return {row["name"]: row for row in as_json(result.stdout)}


# --- the whole life of a limit, through the installed console script -----------------------


def test_life_of_a_limit_through_the_console_script(pggcl_dsn: str) -> None:
    def ok(*args: str) -> str:
        proc = pggcl_subprocess(*args, dsn=pggcl_dsn)
        assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
        return str(proc.stdout)

    assert ok("ls") == "No global concurrency limits found.\n"
    assert ok("create", "my-limit", "--limit", "5", "--slot-decay-per-second", "1.0") == (
        "Created global concurrency limit with name 'my-limit'.\n"
    )
    assert ok("update", "my-limit", "--limit", "10", "--disable") == (
        "Updated global concurrency limit with name 'my-limit'.\n"
    )
    shown = as_json(ok("inspect", "my-limit", "--output", "json"))
    assert (shown["limit"], shown["active"], shown["slot_decay_per_second"]) == (10, False, 1.0)
    assert ok("delete", "my-limit", "--yes") == (
        "Deleted global concurrency limit with name 'my-limit'.\n"
    )


# --- create --------------------------------------------------------------------------------


def test_create(pggcl_dsn: str) -> None:
    result = cli("create", "db", "--limit", "5", dsn=pggcl_dsn)
    assert (result.exit_code, result.stdout) == (
        0,
        "Created global concurrency limit with name 'db'.\n",
    )
    row = limits_json(pggcl_dsn)["db"]
    assert (row["limit"], row["active"], row["slot_decay_per_second"]) == (5, True, 0.0)


def test_create_with_decay_and_disabled(pggcl_dsn: str) -> None:
    args = ("create", "api", "--limit", "2", "--slot-decay-per-second", "0.5", "--disable")
    assert cli(*args, dsn=pggcl_dsn).exit_code == 0
    row = limits_json(pggcl_dsn)["api"]
    assert (row["limit"], row["active"], row["slot_decay_per_second"]) == (2, False, 0.5)


def test_create_zero_limit_is_allowed(pggcl_dsn: str) -> None:
    assert cli("create", "closed", "--limit", "0", dsn=pggcl_dsn).exit_code == 0


def test_create_existing_name(pggcl_dsn: str) -> None:
    assert cli("create", "db", "--limit", "5", dsn=pggcl_dsn).exit_code == 0
    result = cli("create", "db", "--limit", "7", dsn=pggcl_dsn)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "Error: global concurrency limit 'db' already exists\n"
    assert limits_json(pggcl_dsn)["db"]["limit"] == 5


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["a/b", "--limit", "1"], ["invalid limit name", "a/b"]),
        (["a&b", "--limit", "1"], ["invalid limit name"]),
        (["", "--limit", "1"], ["invalid limit name"]),
        (["x" * 300, "--limit", "1"], ["invalid limit name", "255"]),
        (["neg", "--limit", "-1"], ["invalid limit", "-1"]),
        (["neg", "--limit", "1", "--slot-decay-per-second", "-0.5"], ["slot_decay_per_second"]),
        (["nan", "--limit", "1", "--slot-decay-per-second", "nan"], ["slot_decay_per_second"]),
        (["big", "--limit", str(2**31)], ["invalid --limit: 2147483648"]),
    ],
    ids=["slash", "ampersand", "empty", "too-long", "neg-limit", "neg-decay", "nan", "huge"],
)
def test_create_refuses_bad_input(shared_dsn: str, args: list[str], fragments: list[str]) -> None:
    result = cli("create", *args, dsn=shared_dsn)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert_one_line_error(result.stderr, *fragments)
    assert limits_json(shared_dsn) == {}


@pytest.mark.parametrize(
    "args",
    [["db"], ["--limit", "3"], ["db", "--limit", "many"], ["db", "--limit", "1", "--bogus"]],
    ids=["no-limit", "no-name", "not-a-number", "unknown-option"],
)
def test_create_usage_errors_exit_2(shared_dsn: str, args: list[str]) -> None:
    result = cli("create", *args, dsn=shared_dsn)
    assert result.exit_code == 2
    assert "Error:" in result.stderr and "Traceback" not in result.stderr


# --- inspect -------------------------------------------------------------------------------


def test_inspect_shows_occupancy_holders_and_waiters(
    pggcl_dsn: str, client: pggcl.Client, psql: Psql
) -> None:
    client.create_limit("db", 2, slot_decay_per_second=0.25)
    with client.concurrency("db", occupy=2, holder="nightly-backup"):
        result = cli("inspect", "db", dsn=pggcl_dsn)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name:", "db"]
    assert "active slots (now):" in result.stdout and "(held 2, decaying 0)" in result.stdout
    assert "slot decay per second: 0.25" in " ".join(result.stdout.split())
    assert "holders (1):" in lines
    assert any("nightly-backup" in line for line in lines)
    assert "waiting (0):" in lines


def test_inspect_json(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 3)
    with client.concurrency("db", occupy=2, holder="job-1"):
        result = cli("inspect", "db", "--output", "json", dsn=pggcl_dsn)
    assert result.exit_code == 0, result.stderr
    data = as_json(result.stdout)
    assert list(data) == [
        "name",
        "limit",
        "active",
        "active_slots",
        "slot_decay_per_second",
        "waiting",
        "created",
        "updated",
        "held_slots",
        "decaying_slots",
        "grants",
        "enqueued",
        "denied",
        "gave_up",
        "rejected",
        "reclaimed_slots",
        "wait_seconds_count",
        "wait_seconds_sum",
        "wait_seconds_buckets",
        "hold_seconds_count",
        "hold_seconds_sum",
        "hold_seconds_buckets",
        "template",
        "customized",
        "holders",
        "queue",
    ]
    assert (data["name"], data["limit"], data["active"]) == ("db", 3, True)
    assert data["active_slots"] == 2 and data["held_slots"] == 2 and data["waiting"] == 0
    assert isinstance(data["active_slots"], float | int)
    assert datetime.fromisoformat(data["created"]).utcoffset() == timedelta(0)  # in UTC
    [holder] = data["holders"]
    assert list(holder) == ["lease_id", "name", "slots", "holder", "session_id", "since", "expires"]
    assert (holder["name"], holder["slots"], holder["holder"]) == ("db", 2, "job-1")
    assert datetime.fromisoformat(holder["since"]).tzinfo is not None
    assert data["queue"] == []
    # The same through -o, and stable: the same fields for an idle limit.
    idle = as_json(cli("inspect", "db", "-o", "json", dsn=pggcl_dsn).stdout)
    assert list(idle) == list(data) and idle["holders"] == [] and idle["active_slots"] == 0


def test_times_are_utc_whatever_the_sessions_time_zone(
    pggcl_dsn: str, client: pggcl.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.create_limit("db", 1)
    monkeypatch.setenv("PGTZ", "Asia/Kolkata")  # libpq: the session's TimeZone, +05:30
    table = cli("inspect", "db", dsn=pggcl_dsn).stdout
    [created] = [line.split()[1] for line in table.splitlines() if line.startswith("created:")]
    assert created.endswith("Z") and datetime.fromisoformat(created).utcoffset() == timedelta(0)
    data = as_json(cli("inspect", "db", "-o", "json", dsn=pggcl_dsn).stdout)
    assert datetime.fromisoformat(data["created"]).utcoffset() == timedelta(0)
    assert abs(datetime.fromisoformat(data["created"]) - datetime.fromisoformat(created)) < (
        timedelta(seconds=1)
    )


def test_inspect_missing(shared_dsn: str) -> None:
    result = cli("inspect", "nope", dsn=shared_dsn)
    assert result.exit_code == 1
    assert result.stderr == "Error: global concurrency limit 'nope' not found\n"


def test_inspect_bad_output_format_is_a_usage_error(shared_dsn: str) -> None:
    result = cli("inspect", "db", "--output", "xml", dsn=shared_dsn)
    assert result.exit_code == 2
    assert "xml" in result.stderr


# --- ls ------------------------------------------------------------------------------------


def test_ls_empty(shared_dsn: str) -> None:
    result = cli("ls", dsn=shared_dsn)
    assert (result.exit_code, result.stdout) == (0, "No global concurrency limits found.\n")


def test_ls_table_sorted_by_name_with_live_occupancy(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("zeta", 1)
    client.create_limit("alpha", 4, slot_decay_per_second=2.5, active=False)
    client.create_limit("mid", 3)
    with client.concurrency("mid", occupy=2):
        result = cli("ls", dsn=pggcl_dsn)
    assert result.exit_code == 0, result.stderr
    header, *rows = [line.split() for line in result.stdout.splitlines()]
    assert header == ["NAME", "LIMIT", "ACTIVE", "ACTIVE", "SLOTS", "SLOT", "DECAY/S", "WAITING"]
    assert rows == [
        ["alpha", "4", "no", "0", "2.5", "0"],
        ["mid", "3", "yes", "2", "0", "0"],
        ["zeta", "1", "yes", "0", "0", "0"],
    ]


def test_ls_has_no_row_cap(pggcl_dsn: str, psql: Psql) -> None:
    psql("SELECT pggcl.create_limit(format('l%s', i), 1) FROM generate_series(1, 150) i", pggcl_dsn)
    table = cli("ls", dsn=pggcl_dsn)
    assert table.exit_code == 0
    assert len(table.stdout.splitlines()) == 151
    names = [row["name"] for row in as_json(cli("ls", "-o", "json", dsn=pggcl_dsn).stdout)]
    assert len(names) == 150 and names == sorted(names)


def test_ls_json_fields(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("api", 2, slot_decay_per_second=0.001)
    client.rate_limit("api")
    [row] = as_json(cli("ls", "--output", "json", dsn=pggcl_dsn).stdout)
    assert row["name"] == "api" and row["limit"] == 2 and row["held_slots"] == 0
    assert 0.9 < row["active_slots"] <= 1 and row["decaying_slots"] == row["active_slots"]
    assert row["slot_decay_per_second"] == 0.001
    assert "holders" not in row


# --- update, enable, disable -----------------------------------------------------------------


def test_update(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 5)
    result = cli("update", "db", "--limit", "10", "--slot-decay-per-second", "2", dsn=pggcl_dsn)
    assert (result.exit_code, result.stdout) == (
        0,
        "Updated global concurrency limit with name 'db'.\n",
    )
    limit = client.read_limit("db")
    assert (limit.limit, limit.slot_decay_per_second, limit.active) == (10, 2.0, True)
    assert cli("update", "db", "--disable", dsn=pggcl_dsn).exit_code == 0
    assert client.read_limit("db").active is False
    assert cli("update", "db", "--enable", dsn=pggcl_dsn).exit_code == 0
    limit = client.read_limit("db")
    assert (limit.limit, limit.slot_decay_per_second, limit.active) == (10, 2.0, True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [],
            "Error: nothing to update: give --limit, --slot-decay-per-second, --enable, --disable"
            " or --idle-seconds\n",
        ),
        (
            ["--enable", "--disable"],
            "Error: --enable and --disable exclude each other: give one\n",
        ),
    ],
    ids=["no-option", "enable-and-disable"],
)
def test_update_needs_one_consistent_change(
    pggcl_dsn: str, client: pggcl.Client, args: list[str], message: str
) -> None:
    client.create_limit("db", 5)
    result = cli("update", "db", *args, dsn=pggcl_dsn)
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", message)
    assert client.read_limit("db").active is True


def test_update_missing(shared_dsn: str) -> None:
    result = cli("update", "nope", "--limit", "3", dsn=shared_dsn)
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: global concurrency limit 'nope' not found\n",
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--limit", "-3"], "invalid limit"), (["--slot-decay-per-second", "-1"], "slot_decay")],
)
def test_update_refuses_negative_values(
    pggcl_dsn: str, client: pggcl.Client, args: list[str], fragment: str
) -> None:
    client.create_limit("db", 5)
    result = cli("update", "db", *args, dsn=pggcl_dsn)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, fragment)
    assert client.read_limit("db").limit == 5


def test_enable_and_disable(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 5, active=False)
    result = cli("enable", "db", dsn=pggcl_dsn)
    assert (result.exit_code, result.stdout) == (
        0,
        "Enabled global concurrency limit with name 'db'.\n",
    )
    assert client.read_limit("db").active is True
    assert cli("enable", "db", dsn=pggcl_dsn).exit_code == 0  # idempotent
    result = cli("disable", "db", dsn=pggcl_dsn)
    assert (result.exit_code, result.stdout) == (
        0,
        "Disabled global concurrency limit with name 'db'.\n",
    )
    assert client.read_limit("db").active is False


@pytest.mark.parametrize("verb", ["enable", "disable"])
def test_enable_disable_missing(shared_dsn: str, verb: str) -> None:
    result = cli(verb, "nope", dsn=shared_dsn)
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: global concurrency limit 'nope' not found\n",
    )


# --- delete --------------------------------------------------------------------------------

PROMPT = "Are you sure you want to delete global concurrency limit 'db'? [y/N]: "


def test_delete_asks_and_deletes_on_yes(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 5)
    result = cli("delete", "db", dsn=pggcl_dsn, input="y\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == PROMPT + "y\nDeleted global concurrency limit with name 'db'.\n"
    assert client.list_limits() == []


@pytest.mark.parametrize("answer", ["n\n", "\n"], ids=["no", "default"])
def test_delete_declined_changes_nothing(pggcl_dsn: str, client: pggcl.Client, answer: str) -> None:
    client.create_limit("db", 5)
    result = cli("delete", "db", dsn=pggcl_dsn, input=answer)
    assert result.exit_code == 1
    assert result.stdout.startswith(PROMPT)
    assert result.stderr == "Error: deletion aborted; nothing was changed\n"
    assert client.read_limit("db").limit == 5


def test_delete_yes_skips_the_question(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 5)
    result = cli("delete", "db", "-y", dsn=pggcl_dsn)
    assert (result.exit_code, result.stdout) == (
        0,
        "Deleted global concurrency limit with name 'db'.\n",
    )


def test_delete_missing_fails_before_asking(shared_dsn: str) -> None:
    result = cli("delete", "nope", dsn=shared_dsn, input="y\n")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1,
        "",
        "Error: global concurrency limit 'nope' not found\n",
    )


def test_delete_without_a_terminal_answer_aborts(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 5)
    proc = pggcl_subprocess("delete", "db", dsn=pggcl_dsn)  # stdin is empty: no answer
    assert proc.returncode == 1
    assert proc.stderr == "Error: no answer, so nothing was deleted (--yes skips the question)\n"
    assert client.read_limit("db").limit == 5
