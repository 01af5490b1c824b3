"""The Patroni + etcd failover example (examples/patroni/run.sh) runs and its checks hold: a
holder and two queued waiters (sync client, async client, ``pggcl run``) on a multi-host DSN
ride through the loss of the leader node and Patroni's promotion of the synchronous standby
(issue #12.3). The script installs Debian's ``patroni`` and ``etcd-server`` when root and
missing; it exits 77 (skipped here) when neither is possible."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "examples" / "patroni" / "run.sh"
#: About a minute on an idle machine (etcd and two nodes up: ~20 s; the failover: Patroni's
#: ttl of 10 s; the clean-up: a few s); past this it is stopped (and cleans up after itself).
TIMEOUT = 240


def _sweep(work: Path) -> None:
    """What run.sh leaves only when it was itself SIGKILLed (its trap removes the directory
    otherwise): Patroni starts PostgreSQL in a session of its own, so stop each node's server
    and kill every process named in a pid file."""
    if not work.exists():
        return
    for pidfile in work.glob("*.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError, OSError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
    for postmaster in work.glob("*/data/postmaster.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError, OSError, IndexError):
            os.kill(int(postmaster.read_text().split()[0]), signal.SIGKILL)
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.timeout(TIMEOUT + 60)
def test_patroni_failover_example() -> None:
    work = Path(tempfile.gettempdir()) / f"pggcl-patroni-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "PGGCL_PYTHON": sys.executable, "PGGCL_PATRONI_WORK": str(work)}
    env.pop("PGGCL_DSN", None)
    try:
        _run(env)
    finally:
        _sweep(work)


def _run(env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        ["bash", str(RUN)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: everything it started, on failure
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # run.sh's trap stops etcd, Patroni, PostgreSQL
        try:
            out, _ = proc.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"run.sh did not finish in {TIMEOUT} s:\n{out.decode(errors='replace')}")
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = out.decode(errors="replace")
    if proc.returncode == 77:
        pytest.skip(text.strip().splitlines()[-1])
    steps = [line for line in text.splitlines() if line.startswith(("run.sh:", "check:"))]
    report = "\n".join(steps) + "\n--- the last of its output:\n" + text[-3000:]
    assert proc.returncode == 0, report
    assert "check: OK" in text, report
