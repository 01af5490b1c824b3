"""A server older than pggcl supports is refused where the schema is installed (issue #18).

No server older than 15 runs here, so the oldest supported version is raised above the real
server's instead (pggcl.core.versions.MIN_SERVER_VERSION_NUM): the refusal then happens against
a real server, on the real paths, naming the real version.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from click.testing import CliRunner

from pggcl import schema
from pggcl.cli import main
from pggcl.core import versions
from pggcl.core.versions import UnsupportedServerVersionError
from pggcl.testing import PsqlError


def real_version(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    return str(row[0]).split()[0]  # Debian's "15.18 (Debian 15.18-0+deb12u1)"


def has_schema(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT to_regnamespace('pggcl') IS NOT NULL").fetchone()
    return bool(row and row[0])


@pytest.fixture
def too_old(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions, "MIN_SERVER_VERSION_NUM", 990000)


REFUSAL = "which pggcl does not support: it needs PostgreSQL 99 or newer (tested: 15 and 18)"


def test_db_upgrade_refuses_an_old_server_naming_both_versions(
    too_old: None, empty_dsn: str
) -> None:
    result = CliRunner().invoke(main, ["db", "upgrade"], env={"PGGCL_DSN": empty_dsn})
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: the database server runs PostgreSQL {real_version(empty_dsn)}, {REFUSAL}\n"
    )
    assert not has_schema(empty_dsn)  # refused before anything changed


def test_schema_upgrade_raises_the_pggcl_error(too_old: None, empty_dsn: str) -> None:
    with pytest.raises(UnsupportedServerVersionError, match=REFUSAL.replace("(", r"\(")[:40]):
        schema.upgrade(empty_dsn)
    assert not has_schema(empty_dsn)


def test_the_install_script_refuses_an_old_server_too(
    too_old: None, empty_dsn: str, psql: Callable[..., str]
) -> None:
    with pytest.raises(PsqlError) as caught:
        psql(schema.install_sql(), empty_dsn, "--single-transaction")
    version = real_version(empty_dsn)
    assert f"the database server runs PostgreSQL {version}" in str(caught.value)
    assert REFUSAL in str(caught.value)
    assert not has_schema(empty_dsn)


def test_a_supported_server_installs(empty_dsn: str, psql: Callable[..., str]) -> None:
    psql(schema.install_sql(), empty_dsn, "--single-transaction")
    assert has_schema(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        versions.check_server_version(conn.info.server_version)  # what a client would call
