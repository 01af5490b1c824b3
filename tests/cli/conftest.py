"""Driving the `pggcl` command: through click's runner, and as the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pggcl.cli import main
from pggcl.testing import temporary_database

#: The console script that `pip install` puts next to the interpreter.
PGGCL = Path(sys.executable).parent / "pggcl"
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"


def cli(*args: str, dsn: str | None = None, input: str | None = None) -> Result:
    """`pggcl ARGS` through click's runner; stdout and stderr apart. No DSN unless given."""
    return CliRunner().invoke(main, list(args), env={"PGGCL_DSN": dsn}, input=input)


def env_with(dsn: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PGGCL_DSN"}
    if dsn is not None:
        env["PGGCL_DSN"] = dsn
    return env


def pggcl_subprocess(
    *args: str, dsn: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`pggcl ARGS` as a subprocess of the installed entry point."""
    return subprocess.run(
        [str(PGGCL), *args],
        env=env_with(dsn),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def as_json(text: str) -> Any:
    return json.loads(text)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll until `condition` holds (an event the code under test causes), or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert stderr.startswith("Error: "), stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


@pytest.fixture(autouse=True, scope="session")
def _console_script() -> Iterator[None]:
    if not PGGCL.exists():
        pytest.fail(f"{PGGCL} is missing: pip install -e '.[dev]'", pytrace=False)
    yield


@pytest.fixture(scope="module")
def shared_dsn(pggcl_server_dsn: str, pggcl_template: str) -> Iterator[str]:
    """A database with pggcl, shared by the tests of a module that leave nothing behind
    (refusals, usage errors): one CREATE DATABASE instead of one per test."""
    with temporary_database(pggcl_server_dsn, "t_cli_", template=pggcl_template) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def shared_empty_dsn(pggcl_server_dsn: str) -> Iterator[str]:
    """A database without pggcl, shared by the tests of a module."""
    with temporary_database(pggcl_server_dsn, "t_cli_") as dsn:
        yield dsn
