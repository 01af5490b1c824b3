"""`pggcl db ...`: schema management from the command line."""

from __future__ import annotations

from click.testing import CliRunner

from pggcl import __version__, schema
from pggcl.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env={"PGGCL_DSN": "", **(env or {})})
    return result.exit_code, result.stdout, result.stderr


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0
    assert __version__ in out


def test_sql_prints_the_fresh_install_script() -> None:
    code, out, _ = run("db", "sql")
    assert code == 0
    assert out == schema.install_sql()


def test_missing_dsn_is_one_line_on_stderr() -> None:
    code, out, err = run("db", "current")
    assert code == 1
    assert out == ""
    assert err == "Error: no database given: pass --dsn or set PGGCL_DSN\n"


def test_unreachable_database_is_one_line_without_traceback() -> None:
    code, _, err = run("--dsn", "postgresql://nobody@127.0.0.1:1/none", "db", "current")
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_upgrade_current_downgrade(empty_dsn: str) -> None:
    assert run("db", "current", env={"PGGCL_DSN": empty_dsn})[:2] == (0, "base\n")
    code, out, _ = run("--dsn", empty_dsn, "db", "upgrade")
    assert code == 0
    head = schema.current(empty_dsn)
    assert head is not None and head in out
    assert run("--dsn", empty_dsn, "db", "current")[:2] == (0, f"{head}\n")
    code, _, _ = run("--dsn", empty_dsn, "db", "downgrade", "base")
    assert code == 0
    assert schema.current(empty_dsn) is None
