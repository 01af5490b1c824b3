"""Expected failures of every command: one line on stderr, exit 1, no traceback."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.cli.conftest import UNREACHABLE, assert_one_line_error, cli, pggcl_subprocess

LEASE = "00000000-0000-4000-8000-000000000001"  # fixed: test ids must agree across workers

# Every command that talks to the database, with valid arguments.
DATABASE_COMMANDS = [
    ["create", "db", "--limit", "1"],
    ["inspect", "db"],
    ["inspect", "db", "--output", "json"],
    ["ls"],
    ["ls", "--output", "json"],
    ["update", "db", "--limit", "2"],
    ["enable", "db"],
    ["disable", "db"],
    ["delete", "db", "--yes"],
    ["holders"],
    ["holders", "db", "--output", "json"],
    ["explain"],
    ["explain", "db", "--output", "json"],
    ["release", LEASE],
    ["run", "db", "--", "true"],
    ["run", "db", "--rate", "--", "true"],
    ["db", "current"],
    ["db", "upgrade"],
    ["db", "downgrade", "base"],
]
IDS = [" ".join(args[:2]) + (" json" if "json" in args else "") for args in DATABASE_COMMANDS]
IDS = [f"{i}-{name}" for i, name in enumerate(IDS)]


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=IDS)
def test_no_database_given(args: list[str]) -> None:
    result = cli(*args)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "Error: no database given: pass --dsn or set PGGCL_DSN\n"


@pytest.mark.parametrize("args", DATABASE_COMMANDS, ids=IDS)
def test_unreachable_database(args: list[str]) -> None:
    result = cli("--dsn", UNREACHABLE, *args)
    assert (result.exit_code, result.stdout) == (1, "")
    assert_one_line_error(result.stderr)


def test_unreachable_database_from_the_console_script() -> None:
    proc = pggcl_subprocess("ls", dsn=UNREACHABLE)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert_one_line_error(proc.stderr)


@pytest.mark.parametrize("args", DATABASE_COMMANDS[:16], ids=IDS[:16])
def test_database_without_the_schema(shared_empty_dsn: str, args: list[str]) -> None:
    result = cli(*args, dsn=shared_empty_dsn)
    assert (result.exit_code, result.stdout) == (1, "")
    assert_one_line_error(
        result.stderr, "pggcl is not installed in this database", "run `pggcl db upgrade`"
    )


def test_a_role_without_the_grant_is_told_which_role_it_needs(
    pggcl_role_dsn: Callable[[str], str],
) -> None:
    result = cli("create", "db", "--limit", "1", dsn=pggcl_role_dsn("pggcl_user"))
    assert (result.exit_code, result.stdout) == (1, "")
    assert_one_line_error(result.stderr, "permission denied", "pggcl_admin to manage limits")


def test_help_everywhere() -> None:
    top = cli("--help")
    assert top.exit_code == 0 and "pggcl demo" in top.stdout
    commands = [
        "create", "inspect", "ls", "update", "enable", "disable", "delete",
        "holders", "explain", "release", "run", "demo", "db",
    ]  # fmt: skip
    for command in commands:
        assert command in top.stdout
        result = cli(command, "--help")
        assert result.exit_code == 0, command
        assert result.stdout.startswith(f"Usage: main {command}") or "Usage:" in result.stdout
    for sub in ["upgrade", "downgrade", "current", "sql"]:
        assert cli("db", sub, "--help").exit_code == 0


def test_version_from_the_console_script() -> None:
    from pggcl import __version__

    proc = pggcl_subprocess("--version")
    assert (proc.returncode, proc.stdout) == (0, f"pggcl, version {__version__}\n")


def test_unknown_command_is_a_usage_error() -> None:
    result = cli("gcl", "ls")
    assert result.exit_code == 2
    assert "No such command 'gcl'" in result.stderr
