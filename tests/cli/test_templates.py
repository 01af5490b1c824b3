"""Templates through the CLI (issue #15): create, ls, inspect, update, delete, by the console
script as a user runs them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import pggcl
from tests.cli.conftest import as_json, pggcl_subprocess


@pytest.fixture
def client(pggcl_dsn: str) -> Iterator[pggcl.Client]:
    with pggcl.Client(pggcl_dsn) as c:
        yield c


def test_life_of_a_template_through_the_console_script(
    pggcl_dsn: str, client: pggcl.Client
) -> None:
    def ok(*args: str) -> str:
        proc = pggcl_subprocess(*args, dsn=pggcl_dsn)
        assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
        return str(proc.stdout)

    assert ok("create", "tenant:*", "--limit", "2", "--idle-seconds", "600") == (
        "Created template with name 'tenant:*'.\n"
    )
    with client.concurrency("tenant:acme", timeout_seconds=5):  # made on first use, no warning
        listed = ok("ls")
        assert "tenant:acme" in listed and "TEMPLATE" in listed
        lines = listed.splitlines()
        template_row = next(line for line in lines if line.startswith("tenant:*"))
        assert template_row.split()[-1] == "1"  # one instance
        assert "10m" in template_row  # its idle time
        instances = as_json(ok("ls", "tenant:*", "--output", "json"))
        assert [(r["name"], r["limit"], r["held_slots"], r["template"]) for r in instances] == [
            ("tenant:acme", 2, 1, "tenant:*")
        ]
        shown = ok("inspect", "tenant:acme")
        assert "template:" in shown and "tenant:* (follows it)" in shown

    assert ok("update", "tenant:*", "--limit", "3") == "Updated template with name 'tenant:*'.\n"
    assert client.read_limit("tenant:acme").limit == 3
    ok("update", "tenant:acme", "--limit", "5")
    assert "keeps its own values" in ok("inspect", "tenant:acme")
    [template] = as_json(ok("ls", "--templates", "--output", "json"))
    assert (template["name"], template["limit"], template["instances"]) == ("tenant:*", 3, 1)
    assert template["idle_seconds"] == 600
    shown = ok("inspect", "tenant:*")
    assert "idle time:" in shown and "instances:" in shown
    assert ok("delete", "tenant:*", "--yes").startswith("Deleted")
    assert ok("ls", "--templates") == "No templates found.\n"
    assert as_json(ok("ls", "--output", "json"))[0]["template"] is None  # a plain limit now


def test_template_errors_are_one_line_naming_what_is_wrong(pggcl_dsn: str) -> None:
    assert pggcl_subprocess("create", "t:*", "--limit", "1", dsn=pggcl_dsn).returncode == 0
    cases = [
        (["create", "t:*", "--limit", "1"], "already exists"),
        (["create", "plain", "--limit", "1", "--idle-seconds", "5"], "idle_seconds"),
        (["create", "q:*", "--limit", "1", "--idle-seconds", "0"], "idle_seconds"),
        (["ls", "nope:*"], "template 'nope:*' not found"),
        (["update", "nope:*", "--limit", "2"], "not found"),
    ]
    for args, fragment in cases:
        proc = pggcl_subprocess(*args, dsn=pggcl_dsn)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert fragment in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
