"""Fixtures of the web UI tests: a UI server in a thread, and Debian's Chromium via Playwright.

The browser is the system's (`/usr/bin/chromium`, Debian's `chromium` package, which
scripts/bootstrap.sh installs); Playwright never downloads one here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytest.importorskip("starlette", reason="the ui extra is not installed (pip install -e '.[ui]')")

from starlette.applications import Starlette

from pggcl.ui import create_app
from pggcl.ui.server import make_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PGGCL = Path(sys.executable).parent / "pggcl"
_ROOT = Path(__file__).resolve().parents[2]
# The README's pictures are refreshed on request (PGGCL_UPDATE_SCREENSHOTS=1); an ordinary run
# writes them under build/, so that running the tests leaves the work tree clean.
SCREENSHOTS = (
    _ROOT / "docs"
    if os.environ.get("PGGCL_UPDATE_SCREENSHOTS") == "1"
    else _ROOT / "build" / "screenshots"
)


@dataclass
class RunningUi:
    url: str
    app: Starlette


@contextlib.contextmanager
def serve_ui(dsn: str, **options: Any) -> Iterator[RunningUi]:
    """`create_app(dsn, **options)` served by uvicorn in a thread, on a free loopback port.

    The socket listens before the thread starts, so requests queue until uvicorn accepts
    them: nothing to wait for."""
    app = create_app(dsn, **options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = make_server(app, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield RunningUi(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture
def ui(pggcl_dsn: str) -> Iterator[RunningUi]:
    with serve_ui(pggcl_dsn) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Not for the whole session: Playwright's sync API keeps
    its own event loop running in this thread, which async tests run later could not share."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"no system Chromium at {CHROMIUM}: install Debian's package"
            " (apt-get install -y chromium; scripts/bootstrap.sh does)"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        sync_api.expect.set_options(timeout=10_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any, ui: RunningUi) -> Iterator[Any]:
    """A fresh browser page (its own cookies), closed before the UI server stops. The test
    fails if the page's script throws or the browser reports an error (a CSP violation, say)."""
    context = browser.new_context(viewport={"width": 1180, "height": 760})
    context.set_default_timeout(10_000)
    page = context.new_page()
    problems: list[str] = []

    def on_console(msg: Any) -> None:
        # A form sent back with its errors answers 422 by design; Chromium logs that.
        if msg.type == "error" and "status of 422" not in msg.text:
            problems.append(f"console {msg.type}: {msg.text}")

    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on("console", on_console)
    try:
        yield page
    finally:
        context.close()
    assert not problems, problems


class HolderProcess:
    """`pggcl run NAME -- python -c 'read stdin'`: another process that holds (or waits for)
    slots of a limit until its stdin is closed."""

    def __init__(self, dsn: str, name: str, *options: str) -> None:
        env = {**os.environ, "PGGCL_DSN": dsn}
        script = "import sys; sys.stdin.read()"
        self.proc = subprocess.Popen(
            [str(PGGCL), "run", name, *options, "--", sys.executable, "-c", script],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def finish(self) -> int:
        """Let the command end (once granted, it runs until its stdin closes); its status."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=20)

    def stop(self) -> None:
        """SIGTERM: withdraws a request still waiting, or ends the command (pggcl passes it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        if self.proc.stdin is not None:
            self.proc.stdin.close()


@pytest.fixture
def holders() -> Iterator[list[HolderProcess]]:
    """Start HolderProcess objects by appending them; all are finished after the test."""
    started: list[HolderProcess] = []
    yield started
    for holder in started:
        holder.stop()


def take(dsn: str, name: str, slots: int, holder: str, mode: str = "concurrency") -> uuid.UUID:
    """Take slots from plain SQL, as any client may: a lease with a TTL, owned by nobody."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT granted, lease_id FROM pggcl.try_acquire(ARRAY[%s], %s, %s, false, 600, %s)",
            (name, slots, mode, holder),
        ).fetchone()
    assert row is not None and row[0], f"{slots} slots of {name} were not granted"
    return uuid.UUID(str(row[1])) if row[1] else uuid.UUID(int=0)
