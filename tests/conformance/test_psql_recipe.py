"""scripts/pggcl-run.sh, the psql-only recipe (docs/psql-recipe.md): it holds a slot while its
command runs, shares the limit with Python clients both ways, passes the command's exit status
on, gives up at its timeout leaving nothing queued, a killed run's slot comes back, and it
refuses a transaction pooler at once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import psycopg
import pytest

import pggcl
from pggcl.testing import PgBouncerNotFound, TempPgBouncer, find_client_binary, find_pgbouncer

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pggcl-run.sh"


def _env(dsn: str, **extra: str) -> dict[str, str]:
    psql_dir = str(Path(find_client_binary("psql")).parent)
    return {**os.environ, "PGGCL_DSN": dsn, "PATH": f"{psql_dir}:{os.environ['PATH']}", **extra}


def _holders(dsn: str, name: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pggcl.holders WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def test_holds_a_slot_while_the_command_runs(pggcl_dsn: str) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("sh-hold", limit=1)
    count = "SELECT count(*) FROM pggcl.holders WHERE name = 'sh-hold'"
    probe = f'psql -XAtc "{count}" "$PGGCL_DSN"'
    done = subprocess.run(
        [str(SCRIPT), "sh-hold", "--", "sh", "-c", f"{probe}; exit 3"],
        env=_env(pggcl_dsn),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == "1"
    assert _holders(pggcl_dsn, "sh-hold") == 0


def test_waits_for_a_python_holder_and_times_out_cleanly(pggcl_dsn: str) -> None:
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("sh-wait", limit=1)
        with client.concurrency("sh-wait"):
            timed_out = subprocess.run(
                [str(SCRIPT), "sh-wait", "--", "true"],
                env=_env(pggcl_dsn, PGGCL_TIMEOUT="1"),
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert timed_out.returncode == 75, timed_out.stderr
            assert client.queue("sh-wait") == []
            waiting = subprocess.Popen([str(SCRIPT), "sh-wait", "--", "true"], env=_env(pggcl_dsn))
            time.sleep(1.0)
            assert waiting.poll() is None
        assert waiting.wait(10) == 0


def test_a_python_waiter_gets_the_slot_of_a_killed_run(pggcl_dsn: str) -> None:
    with pggcl.Client(pggcl_dsn, heartbeat_seconds=0.5) as client:
        client.create_limit("sh-killed", limit=1)
        run = subprocess.Popen(
            [str(SCRIPT), "sh-killed", "--", "sleep", "60"],
            env=_env(pggcl_dsn, PGGCL_GRACE="0.5"),
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 10
            while _holders(pggcl_dsn, "sh-killed") == 0:
                assert time.monotonic() < deadline, "the run never held its slot"
                time.sleep(0.05)
            run.send_signal(signal.SIGKILL)
            run.wait(5)
            started = time.monotonic()
            with client.concurrency("sh-killed", timeout_seconds=10):
                pass
            assert time.monotonic() - started < 6
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)  # the orphaned `sleep 60`


def test_refuses_a_transaction_pooler_at_once(pggcl_dsn: str, tmp_path: Path) -> None:
    """Behind PgBouncer in transaction mode with one server connection, a second run meets the
    first run's session in its server session: it refuses at once (78), naming the fix, and
    runs nothing; the first run goes on."""
    try:
        find_pgbouncer()
    except PgBouncerNotFound:
        pytest.skip("pgbouncer is not installed (scripts/bootstrap.sh)")
    with pggcl.Client(pggcl_dsn) as client:
        client.create_limit("sh-pooler", limit=2)
    port = urllib.parse.urlsplit(pggcl_dsn).port
    assert port is not None
    bouncer = TempPgBouncer(port, pool_mode="transaction", settings={"default_pool_size": "1"})
    bouncer.start()
    try:
        through = bouncer.through(pggcl_dsn)
        gate = tmp_path / "gate"
        first = subprocess.Popen(
            [str(SCRIPT), "sh-pooler", "--", "sh", "-c", f"touch {gate}.held; cat {gate}"],
            env=_env(through),
        )
        os.mkfifo(gate)
        deadline = time.monotonic() + 20
        while not (tmp_path / "gate.held").exists():
            assert first.poll() is None, "the first run ended early"
            assert time.monotonic() < deadline, "the first run never held its slot"
            time.sleep(0.05)
        second = subprocess.run(
            [str(SCRIPT), "sh-pooler", "--", "touch", str(tmp_path / "ran")],
            env=_env(through),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 78, second.stderr
        assert "direct connection" in second.stderr and "pool_mode = session" in second.stderr
        assert not (tmp_path / "ran").exists()
        gate.write_text("")  # let the first run's command end
        assert first.wait(20) == 0
    finally:
        bouncer.stop()
