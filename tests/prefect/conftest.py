"""One real Prefect server for the whole run (issue #14, points 3 and 4).

Prefect 3 from PyPI (the `prefect` extra), its server started once per test session on
loopback with a temporary SQLite database (``prefect.testing.utilities.prefect_test_harness``
runs it as a subprocess, as ``prefect server start`` does). Telemetry is off and nothing
leaves the machine. The tests skip, saying why, when Prefect is not installed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

import pggcl.sync

_HOME = tempfile.mkdtemp(prefix="pggcl-prefect-home-")
# Before Prefect is first imported: its settings are read from the environment.
for key, value in {
    "PREFECT_HOME": _HOME,
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}.items():
    os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """The API URL of a Prefect server on loopback, for the whole session."""
    pytest.importorskip("prefect", reason="Prefect is not installed: pip install '.[prefect]'")
    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        url = prefect.settings.PREFECT_API_URL.value()
        assert url and url.startswith("http://127.0.0.1:"), url
        yield str(url)
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture
def env_dsn(pggcl_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """PGGCL_DSN set for the module-level functions; their clients closed afterwards."""
    monkeypatch.setenv("PGGCL_DSN", pggcl_dsn)
    yield pggcl_dsn
    pggcl.sync._close_all()
