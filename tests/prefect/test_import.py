"""`pggcl import prefect` against a real Prefect 3 server on loopback (issue #14, point 4)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from click.testing import CliRunner, Result

import pggcl
from pggcl.cli import main


def _api(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url.rstrip("/") + path, data=data, method=method,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


def _import(dsn: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--dsn", dsn, "import", "prefect", *args])


def _here(dsn: str) -> list[tuple[str, int, float, bool]]:
    with pggcl.Client(dsn) as c:
        return [(x.name, x.limit, x.slot_decay_per_second, x.active) for x in c.list_limits()]


def test_import_prefect(prefect_api: str, pggcl_dsn: str) -> None:
    for name, limit, decay, active in [
        ("database", 5, 0.0, True),
        ("rate-limited-api", 10, 2.0, True),
        ("paused", 3, 0.0, False),
        ("too-big", 2**40, 0.0, True),  # Prefect takes it; a PostgreSQL integer cannot
    ]:
        _api(prefect_api, "POST", "/v2/concurrency_limits/", {
            "name": name, "limit": limit, "slot_decay_per_second": decay, "active": active,
        })  # fmt: skip
    with pggcl.Client(pggcl_dsn) as c:
        c.create_limit("database", 1)  # here already, with another limit

    dry = _import(pggcl_dsn, "--api-url", prefect_api, "--dry-run")
    assert dry.exit_code == 1, dry.output
    assert "'database': would be updated" in dry.stdout
    assert "'paused': would be created" in dry.stdout
    assert "'too-big': skipped: invalid limit" in dry.stderr
    assert _here(pggcl_dsn) == [("database", 1, 0.0, True)]  # nothing changed

    first = _import(pggcl_dsn, "--api-url", prefect_api)
    assert first.exit_code == 1, first.output  # one limit could not be taken
    assert "'database': updated" in first.stdout
    assert "'rate-limited-api': created" in first.stdout
    assert "3 of 4 limit(s)" in first.stdout
    assert _here(pggcl_dsn) == [
        ("database", 5, 0.0, True),
        ("paused", 3, 0.0, False),
        ("rate-limited-api", 10, 2.0, True),
    ]

    again = _import(pggcl_dsn, "--api-url", prefect_api)
    assert again.stdout.count("unchanged") == 3, again.stdout
    assert _here(pggcl_dsn) == [
        ("database", 5, 0.0, True),
        ("paused", 3, 0.0, False),
        ("rate-limited-api", 10, 2.0, True),
    ]
    for name in ("database", "rate-limited-api", "paused", "too-big"):
        _api(prefect_api, "DELETE", f"/v2/concurrency_limits/{name}")


def test_import_from_an_unreachable_api(pggcl_dsn: str) -> None:
    result = _import(pggcl_dsn, "--api-url", "http://127.0.0.1:9/api")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: could not read the Prefect API"), result.stderr


def test_import_needs_an_api_url(pggcl_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = _import(pggcl_dsn)
    assert result.exit_code == 1 and "PREFECT_API_URL" in result.stderr
