"""Dead sessions are not shown by the CLI, the UI nor /metrics (issue #12.4), with nobody
else acting: a SIGKILLed waiter (a `pggcl run` still queued) is left out at once, and a
SIGKILLed holder's slot once its grace has passed, by `pggcl ls`, `pggcl inspect`, `pggcl
holders`, the UI's page and its live JSON (`pggcl ui`), and /metrics (the UI's and `pggcl
metrics`'), all real processes reading the same database. No client acquires, heartbeats
or reclaims meanwhile: the dead rows are still in the tables at the end, only left out."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import (
    PGGCL,
    Problems,
    Workers,
    queued_count,
    sql,
    wait_until,
)

httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[dev]')")
pytest.importorskip("starlette", reason="the ui extra is not installed (pip install -e '.[ui]')")

GRACE = 1.0  # the killed holder's
LIMIT = "db"

#: surface -> (held, waiting) as it shows them for LIMIT
Shown = dict[str, tuple[int, int]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`pggcl ui` or `pggcl metrics` in a process of its own, stopped afterwards."""

    def __init__(self, dsn: str, log: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PGGCL_SESSION_DSN"}
        env["PGGCL_DSN"] = dsn
        self.log = log
        with open(log, "wb") as stderr:
            self.proc = subprocess.Popen(
                [str(PGGCL), *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def address(self, pattern: str) -> str:
        """The address the server printed (a match of `pattern` in its stderr)."""
        found: list[str] = []

        def printed() -> bool:
            assert self.proc.poll() is None, f"exited: {self.log.read_text()}"
            found[:] = re.findall(pattern, self.log.read_text())
            return bool(found)

        wait_until(printed, f"the server logging to {self.log.name} says where it serves")
        return found[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def servers(dsn: str, directory: Path) -> Iterator[tuple[str, str]]:
    """(the UI's base URL, `pggcl metrics`' /metrics URL), both answering."""
    port = _free_port()
    ui = Server(dsn, directory / "ui.stderr", "ui", "--port", str(port))
    metrics = Server(dsn, directory / "metrics.stderr", "metrics", "--port", "0")
    try:
        ui_url = ui.address(rf"http://127\.0\.0\.1:{port}")
        metrics_url = metrics.address(r"http://127\.0\.0\.1:\d+/metrics")

        def answers() -> bool:
            assert ui.proc.poll() is None, f"pggcl ui exited: {ui.log.read_text()}"
            try:
                return bool(httpx.get(f"{ui_url}/", timeout=5).status_code == 200)
            except httpx.TransportError:
                return False

        wait_until(answers, "pggcl ui answers")
        yield ui_url, metrics_url
    finally:
        ui.stop()
        metrics.stop()


def _cli(dsn: str, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "PGGCL_SESSION_DSN"}
    env["PGGCL_DSN"] = dsn
    done = subprocess.run(
        [str(PGGCL), *args, "--output", "json"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"pggcl {' '.join(args)}: {done.stderr}"
    return json.loads(done.stdout)


def _ui_live(ui_url: str, params: dict[str, str], wanted: str) -> Any:
    """The first `wanted` event of a page's event stream (sampled after it opened)."""
    with httpx.stream("GET", f"{ui_url}/events", params=params, timeout=10) as r:
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == wanted:
                return json.loads(line.removeprefix("data: "))
    raise AssertionError(f"the UI's event stream ended without a {wanted} event")


def _gauges(text: str) -> tuple[int, int]:
    def gauge(family: str) -> int:
        found = re.search(rf'^{family}{{name="{LIMIT}"}} (\S+)$', text, re.M)
        assert found, f"no {family} for {LIMIT} in:\n{text}"
        return int(float(found.group(1)))

    return gauge("pggcl_active_slots"), gauge("pggcl_waiting")


def shown(dsn: str, ui_url: str, metrics_url: str) -> Shown:
    """What each surface shows of LIMIT now: (held, waiting)."""
    [listed] = [lim for lim in _cli(dsn, "ls") if lim["name"] == LIMIT]
    inspected = _cli(dsn, "inspect", LIMIT)
    holders = _cli(dsn, "holders")
    live = _ui_live(ui_url, {"limit": LIMIT}, "limit")  # the limit's page
    [row] = [lim for lim in _ui_live(ui_url, {}, "limits") if lim["name"] == LIMIT]  # the list
    page = httpx.get(f"{ui_url}/limit", params={"name": LIMIT}, timeout=10).text
    counts = dict(re.findall(r'data-count="(holders|queue)">(\d+)<', page))
    return {
        "pggcl ls": (listed["held_slots"], listed["waiting"]),
        "pggcl inspect": (inspected["held_slots"], inspected["waiting"]),
        "pggcl inspect (rows)": (len(inspected["holders"]), len(inspected["queue"])),
        "pggcl holders": (
            len([h for h in holders["holders"] if h["name"] == LIMIT]),
            len([w for w in holders["queue"] if w["name"] == LIMIT]),
        ),
        "ui live JSON": (live["limit"]["held"], live["limit"]["waiting"]),
        "ui live JSON (rows)": (len(live["holders"]), len(live["queue"])),
        "ui live JSON (limits page)": (row["held"], row["waiting"]),
        "ui page": (int(counts.get("holders", -1)), int(counts.get("queue", -1))),
        "ui /metrics": _gauges(httpx.get(f"{ui_url}/metrics", timeout=10).text),
        "pggcl metrics": _gauges(httpx.get(metrics_url, timeout=10).text),
    }


def wait_shown(
    seen: Problems, read: Any, expected: tuple[int, int], what: str, timeout: float
) -> None:
    """Wait until every surface shows `expected`; note the last reading if they never do."""
    last: list[Shown] = [{}]

    def all_show() -> bool:
        last[0] = read()
        return all(value == expected for value in last[0].values())

    try:
        wait_until(all_show, what, timeout=timeout)
    except AssertionError as exc:
        wrong = {k: v for k, v in last[0].items() if v != expected}
        seen.found.append(f"{exc}; (held, waiting) shown instead of {expected}: {wrong}")


def test_dead_waiter_and_dead_holder_are_not_shown_by_the_cli_the_ui_nor_metrics(
    dsn: str, workers: Workers, tmp_path: Path
) -> None:
    sql(dsn, "SELECT pggcl.create_limit(%s, 1)", LIMIT)
    seen = Problems()
    holder = workers.start("sync", "holder", dsn, names=LIMIT, grace=GRACE)  # it only holds
    holder.wait("entered")
    waiter = workers.start("cli", "waiter", dsn, names=LIMIT, timeout=60)
    wait_until(lambda: queued_count(dsn) == 1, "the waiter is queued")

    with servers(dsn, tmp_path) as (ui_url, metrics_url):

        def read() -> Shown:
            return shown(dsn, ui_url, metrics_url)

        # Every surface shows the live holder and waiter (what it must stop showing).
        wait_shown(seen, read, (1, 1), "every surface shows the holder and the waiter", 20)

        waiter.kill_group()  # `pggcl run` SIGKILLed while it waits
        wait_shown(seen, read, (1, 0), "no surface shows the killed waiter", 20)

        holder.kill_group()
        started = time.monotonic()
        wait_shown(seen, read, (0, 0), "no surface shows the killed holder's slot", GRACE + 20)
        # The slot is left out only after the grace, counted from the first reading after the
        # kill at the earliest: never at once.
        seen.check(
            time.monotonic() - started >= GRACE,
            "the killed holder's slot was left out before its grace had passed",
        )

    # Nothing reclaimed them: the surfaces left the dead rows out by reading alone.
    [(leases,)] = sql(dsn, "SELECT count(*) FROM pggcl.leases")
    [(waiters,)] = sql(dsn, "SELECT count(*) FROM pggcl.waiters")
    seen.check(
        (leases, waiters) == (1, 1),
        f"the dead rows were reclaimed by someone ({leases} leases, {waiters} waiters left): "
        "the test did not show that reading alone is enough",
    )
    seen.assert_none()
