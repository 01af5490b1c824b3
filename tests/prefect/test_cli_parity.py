"""Every flag of `prefect gcl create/update/inspect/ls/enable/disable/delete` (Prefect 3.9.1)
is accepted by the matching `pggcl` verb (issue #14, point 5). No Prefect needed."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import pggcl
from pggcl.cli import main

# prefect/cli/global_concurrency_limit.py of Prefect 3.9.1: each verb's options.
PREFECT_GCL_FLAGS = {
    "create": ["--limit", "-l", "--disable", "--active-slots", "--slot-decay-per-second"],
    "update": [
        "--enable", "--disable", "--limit", "-l", "--active-slots", "--slot-decay-per-second",
    ],
    "inspect": ["--output", "-o", "--file", "-f"],
    "ls": ["--output", "-o"],
    "enable": [],
    "disable": [],
    "delete": [],
}  # fmt: skip


@pytest.mark.parametrize("verb", sorted(PREFECT_GCL_FLAGS))
def test_every_prefect_flag_is_an_option_here(verb: str) -> None:
    command = main.get_command(click.Context(main), verb)
    assert command is not None
    ours = {opt for param in command.params for opt in param.opts}
    assert set(PREFECT_GCL_FLAGS[verb]) <= ours


def _cli(dsn: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--dsn", dsn, *args])


def test_the_flags_at_work(pggcl_dsn: str, tmp_path: Path) -> None:
    created = _cli(pggcl_dsn, "create", "db", "-l", "5", "--active-slots", "2")
    assert created.exit_code == 0, created.output
    assert "--active-slots is ignored" in created.stderr
    updated = _cli(pggcl_dsn, "update", "db", "-l", "7", "--active-slots", "0")
    assert updated.exit_code == 0, updated.output
    only_slots = _cli(pggcl_dsn, "update", "db", "--active-slots", "0")
    assert only_slots.exit_code == 0 and "Nothing to update" in only_slots.stdout
    with pggcl.Client(pggcl_dsn) as c:
        limit = c.read_limit("db")
    assert (limit.limit, limit.active_slots) == (7, 0)

    out = tmp_path / "db.json"
    inspected = _cli(pggcl_dsn, "inspect", "db", "-o", "json", "-f", str(out))
    assert inspected.exit_code == 0, inspected.output
    data = json.loads(out.read_text())
    assert (data["name"], data["limit"], data["holders"]) == ("db", 7, [])
    needs_output = _cli(pggcl_dsn, "inspect", "db", "--file", str(out))
    assert needs_output.exit_code == 1 and "--output json" in needs_output.stderr
