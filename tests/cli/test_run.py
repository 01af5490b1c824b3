"""`pggcl run`: slots held while a command runs, its exit status, and signals passed to it.

The commands are small Python scripts that record what they saw in files; the tests wait for
those files (events), never for fixed durations.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pggcl
from pggcl.testing import find_client_binary
from tests.cli.conftest import (
    PGGCL,
    as_json,
    assert_one_line_error,
    cli,
    env_with,
    pggcl_subprocess,
    wait_for,
)

Psql = Callable[..., str]
PY = sys.executable

# Records what the holders view shows while it runs (so, that it ran), then exits with $2.
RECORDER = f"""
{find_client_binary("psql")!r} -XAtc 'SELECT json_agg(h) FROM pggcl.holders h' "$PGGCL_DSN" > "$1"
exit "$2"
"""

# Says it is ready, then waits for a signal; records it and exits 3, or dies of it (argv[2]).
SLEEPER = """
import pathlib, signal, sys, time
d = pathlib.Path(sys.argv[1])
def record(signum, frame):
    (d / "got").write_text(signal.Signals(signum).name)
    sys.exit(3)
if sys.argv[2] == "handle":
    signal.signal(signal.SIGTERM, record)
    signal.signal(signal.SIGINT, record)
(d / "ready").write_text("")
while True:
    time.sleep(60)
"""


@pytest.fixture
def client(pggcl_dsn: str) -> Iterator[pggcl.Client]:
    with pggcl.Client(pggcl_dsn) as c:
        yield c


@pytest.fixture
def recorder(tmp_path: Path) -> Path:
    script = tmp_path / "recorder.sh"
    script.write_text(RECORDER)
    return script


def held_count(psql: Psql, dsn: str) -> int:
    return int(psql("SELECT count(*) FROM pggcl.holders", dsn))


def queued_count(psql: Psql, dsn: str) -> int:
    return int(psql("SELECT count(*) FROM pggcl.queue", dsn))


def test_holds_the_slot_while_the_command_runs(
    pggcl_dsn: str, client: pggcl.Client, recorder: Path, tmp_path: Path
) -> None:
    client.create_limit("db", 2)
    out = tmp_path / "seen.json"
    proc = pggcl_subprocess("run", "db", "--", "sh", str(recorder), str(out), "0", dsn=pggcl_dsn)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    [holder] = json.loads(out.read_text())
    assert (holder["name"], holder["slots"]) == ("db", 1)
    assert holder["holder"].endswith(f"sh {recorder} {out} 0")  # host:pid COMMAND
    assert client.holders() == []


def test_several_limits_and_occupy_without_double_dash(
    pggcl_dsn: str, client: pggcl.Client, recorder: Path, tmp_path: Path
) -> None:
    client.create_limit("db", 3)
    client.create_limit("gpu", 2)
    out = tmp_path / "seen.json"
    proc = pggcl_subprocess(
        "run", "gpu,db", "--occupy", "2", "sh", str(recorder), str(out), "0", dsn=pggcl_dsn
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(out.read_text())
    assert sorted((h["name"], h["slots"]) for h in seen) == [("db", 2), ("gpu", 2)]
    assert len({h["lease_id"] for h in seen}) == 1  # one lease over both limits
    assert client.holders() == []


def test_a_lease_released_by_hand_meanwhile_is_reported(
    pggcl_dsn: str, client: pggcl.Client, psql: Psql
) -> None:
    client.create_limit("db", 1)
    psql_program = find_client_binary("psql")
    releases_its_own_lease = f"""
import subprocess
query = "SELECT lease_id FROM pggcl.holders"
lease = subprocess.check_output([{psql_program!r}, "-XAtc", query, {pggcl_dsn!r}], text=True)
subprocess.check_call([{str(PGGCL)!r}, "release", lease.strip()])
"""
    result = cli("run", "db", "--", PY, "-c", releases_its_own_lease, dsn=pggcl_dsn)
    assert result.exit_code == 0
    # The release at the block's end finds the lease gone and says so; the lease renewer may
    # have found it gone first (it races COMMAND's exit), and then says so as well.
    *before, last = result.stderr.splitlines()
    assert last.startswith("Error: lease ") and "reclaimed" in last, result.stderr
    assert all("gone when renewed" in line for line in before) and len(before) <= 1, before
    assert held_count(psql, pggcl_dsn) == 0


def test_exit_status_passes_through(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 1)
    result = cli("run", "db", "--", PY, "-c", "import sys; sys.exit(7)", dsn=pggcl_dsn)
    assert (result.exit_code, result.stderr) == (7, "")
    assert client.holders() == []


def test_command_options_are_not_taken_for_pggcls(pggcl_dsn: str, client: pggcl.Client) -> None:
    client.create_limit("db", 1)
    code = "import sys; sys.exit(0 if sys.argv[1:] == ['--timeout', '-x'] else 9)"
    result = cli("run", "db", PY, "-c", code, "--timeout", "-x", dsn=pggcl_dsn)
    assert (result.exit_code, result.stderr) == (0, "")


def test_rate_takes_a_decaying_slot_and_holds_nothing(
    pggcl_dsn: str, client: pggcl.Client, recorder: Path, tmp_path: Path
) -> None:
    client.create_limit("api", 5, slot_decay_per_second=0.001)
    out = tmp_path / "seen.json"
    proc = pggcl_subprocess(
        "run",
        "api",
        "--rate",
        "--occupy",
        "2",
        "--",
        "sh",
        str(recorder),
        str(out),
        "5",
        dsn=pggcl_dsn,
    )
    assert proc.returncode == 5, proc.stderr
    assert out.read_text().strip() == ""  # no row: json_agg over nothing is NULL
    limit = client.read_limit("api")
    assert limit.held_slots == 0 and 1.9 < limit.decaying_slots <= 2


def test_rate_on_a_limit_without_decay_fails(
    pggcl_dsn: str, client: pggcl.Client, tmp_path: Path
) -> None:
    client.create_limit("db", 5)
    marker = tmp_path / "ran"
    result = cli("run", "db", "--rate", "--", "touch", str(marker), dsn=pggcl_dsn)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr)
    assert not marker.exists()


def test_occupy_above_the_limit_fails(pggcl_dsn: str, client: pggcl.Client, tmp_path: Path) -> None:
    client.create_limit("db", 2)
    marker = tmp_path / "ran"
    result = cli("run", "db", "--occupy", "3", "--", "touch", str(marker), dsn=pggcl_dsn)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr)
    assert not marker.exists()


def test_timeout_while_the_limit_is_full(
    pggcl_dsn: str, client: pggcl.Client, tmp_path: Path
) -> None:
    client.create_limit("db", 1)
    marker = tmp_path / "ran"
    with client.concurrency("db", holder="backup"):
        (lease,) = client.holders("db")
        result = cli("run", "db", "--timeout", "0.2", "--", "touch", str(marker), dsn=pggcl_dsn)
    assert (result.exit_code, result.stdout) == (1, "")
    since = lease.since.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert result.stderr == (  # and why: who held the slot, how many were ahead (issue #16.3)
        "Error: timed out after 0.2 seconds waiting for 1 slot on 'db': 1 of 1 slots held by"
        f" 1 lease (oldest: backup since {since}), nobody ahead\n"
    )
    assert not marker.exists()
    assert client.queue() == []


def test_missing_limit_warns_and_strict_refuses(pggcl_dsn: str, client: pggcl.Client) -> None:
    result = cli("run", "new", "--", "true", dsn=pggcl_dsn)
    assert result.exit_code == 0
    assert result.stderr.startswith("Warning: ") and result.stderr.count("\n") == 1
    assert "'new'" in result.stderr and "inactive" in result.stderr
    assert client.read_limit("new").active is False
    result = cli("run", "other", "--strict", "--", "true", dsn=pggcl_dsn)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "other")
    with pytest.raises(pggcl.LimitNotFoundError):
        client.read_limit("other")


@pytest.mark.parametrize(
    ("command", "status", "message"),
    [
        (["no-such-command-here"], 127, "Error: command not found: no-such-command-here\n"),
        (["/dev/null"], 126, "Error: cannot run /dev/null: Permission denied\n"),
    ],
    ids=["not-found", "not-executable"],
)
def test_command_that_cannot_start(
    pggcl_dsn: str, client: pggcl.Client, command: list[str], status: int, message: str
) -> None:
    client.create_limit("db", 1)
    result = cli("run", "db", "--", *command, dsn=pggcl_dsn)
    assert (result.exit_code, result.stderr) == (status, message)
    assert client.holders() == []


@pytest.mark.parametrize(
    "args", [["db"], [], ["db", "--occupy"], ["db", "--occupy", "x", "--", "true"]]
)
def test_usage_errors(shared_dsn: str, args: list[str]) -> None:
    result = cli("run", *args, dsn=shared_dsn)
    assert result.exit_code == 2
    assert "Error:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a,,b"], "Error: invalid limit names 'a,,b': a name is empty\n"),
        (
            ["db", "--timeout", "-1"],
            "Error: invalid --timeout: -1; it must be a finite number of seconds, 0 or more\n",
        ),
        (
            ["db", "--occupy", str(2**31)],
            "Error: invalid --occupy: 2147483648; at most 2147483647 slots\n",
        ),
    ],
    ids=["empty-name", "negative-timeout", "huge-occupy"],
)
def test_bad_values_are_refused_before_waiting(
    shared_dsn: str, args: list[str], message: str, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    result = cli("run", *args, "--", "touch", str(marker), dsn=shared_dsn)
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", message)
    assert not marker.exists()


def test_occupy_below_one_is_refused(shared_dsn: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = cli(
        "run", "db", "--strict", "--occupy", "0", "--", "touch", str(marker), dsn=shared_dsn
    )
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "occupy")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("sig", "child", "status"),
    [
        (signal.SIGTERM, "handle", 3),
        (signal.SIGINT, "handle", 3),
        (signal.SIGTERM, "die", 128 + signal.SIGTERM),
    ],
    ids=["term-handled", "int-handled", "term-kills"],
)
def test_signal_reaches_the_command_and_the_slot_is_released(
    pggcl_dsn: str,
    client: pggcl.Client,
    psql: Psql,
    tmp_path: Path,
    sig: signal.Signals,
    child: str,
    status: int,
) -> None:
    client.create_limit("db", 1)
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    proc = subprocess.Popen(
        [str(PGGCL), "run", "db", "--", PY, str(script), str(tmp_path), child],
        env=env_with(pggcl_dsn),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # no terminal: the signal reaches the command only through pggcl
    )
    try:
        wait_for(lambda: (tmp_path / "ready").exists(), "the command runs")
        assert held_count(psql, pggcl_dsn) == 1
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, stderr
    if child == "handle":
        assert (tmp_path / "got").read_text() == sig.name
    assert held_count(psql, pggcl_dsn) == 0


def test_signal_while_waiting_gives_up_the_request(
    pggcl_dsn: str, client: pggcl.Client, psql: Psql, tmp_path: Path
) -> None:
    client.create_limit("db", 1)
    marker = tmp_path / "ran"
    with client.concurrency("db"):
        proc = subprocess.Popen(
            [str(PGGCL), "run", "db", "--", "touch", str(marker)],
            env=env_with(pggcl_dsn),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            wait_for(lambda: queued_count(psql, pggcl_dsn) == 1, "pggcl run queues")
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 128 + signal.SIGTERM
        assert stderr == "Error: interrupted by SIGTERM while waiting for slots\n"
        assert queued_count(psql, pggcl_dsn) == 0
    assert not marker.exists()
    assert as_json(cli("holders", "-o", "json", dsn=pggcl_dsn).stdout)["holders"] == []


def test_priority_puts_a_run_ahead_and_holders_shows_it(
    pggcl_dsn: str, client: pggcl.Client, psql: Psql
) -> None:
    client.create_limit("db", 1)
    runs = []
    with client.concurrency("db"):
        for priority in ("0", "30"):
            runs.append(
                subprocess.Popen(
                    [str(PGGCL), "run", "db", "--priority", priority, "--", PY, "-c", "pass"],
                    env=env_with(pggcl_dsn),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            wait_for(lambda: queued_count(psql, pggcl_dsn) == len(runs), "the run queues")
        shown = as_json(cli("holders", "-o", "json", dsn=pggcl_dsn).stdout)["queue"]
        assert [(w["position"], w["priority"]) for w in shown] == [(1, 30.0), (2, 0.0)]
        table = cli("holders", dsn=pggcl_dsn).stdout
        assert "PRIORITY" in table and "+30 s" in table
    for run in runs:
        assert run.wait(timeout=60) == 0, run.communicate()
    bad = cli("run", "db", "--priority", "1e9", "--", PY, "-c", "pass", dsn=pggcl_dsn)
    assert bad.exit_code == 1 and "priority" in bad.stderr, bad.stderr
