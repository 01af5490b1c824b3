"""A throwaway PostgreSQL server and database helpers, for tests and demos.

    from pggcl.testing import TempPostgres

    with TempPostgres() as pg:          # initdb + pg_ctl on a free loopback port
        client = pggcl.Client(pg.dsn)

The server runs from local PostgreSQL binaries (`apt-get install postgresql` on
Debian/Ubuntu) in a temporary directory, with durability switched off for speed; it is
removed on `stop()`. As root, the server runs as the `postgres` OS user (initdb refuses
root). pytest users get the same through the fixtures in `pggcl.pytest_plugin`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

__all__ = [
    "PostgresNotFound",
    "PsqlError",
    "TempPostgres",
    "create_database",
    "drop_database",
    "find_client_binary",
    "find_server_binaries",
    "psql",
    "random_database_name",
    "temporary_database",
    "with_database",
]

_INSTALL_HINT = (
    "install the PostgreSQL server (Debian/Ubuntu: `apt-get install postgresql`), "
    "put its bin directory on PATH, or point PGGCL_TEST_DSN at a running server"
)
_INITDB = ("initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C")
_SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries (initdb, pg_ctl) were found."""


class PsqlError(subprocess.CalledProcessError):
    """psql exited non-zero; `stderr` holds its message."""

    def __str__(self) -> str:
        return f"psql failed ({self.returncode}): {(self.stderr or '').strip()}"


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: sort 16 above 9.6, numerically.
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def find_server_binaries() -> Path:
    """The bin directory holding `initdb` and `pg_ctl`: PATH first, then the newest
    `/usr/lib/postgresql/*/bin`. Raises PostgresNotFound, saying how to install."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        # Resolve symlinks so that psql/pg_dump are taken from the same installation.
        return Path(os.path.realpath(initdb)).parent
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True):
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresNotFound(f"no PostgreSQL server binaries (initdb, pg_ctl) found: {_INSTALL_HINT}")


def find_client_binary(name: str) -> str:
    """Path of a client program (psql, pg_dump), preferring the server's installation."""
    try:
        candidate = find_server_binaries() / name
        if candidate.is_file():
            return str(candidate)
    except PostgresNotFound:
        pass
    found = shutil.which(name)
    if found is None:
        raise PostgresNotFound(f"{name} not found: {_INSTALL_HINT}")
    return found


def psql(query: str, dsn: str, *args: str, check: bool = True) -> str:
    """Run `query` through psql (`-X -q -v ON_ERROR_STOP=1 -At`) and return its stdout.

    The text goes in on stdin, so it may hold several statements and psql meta-commands.
    Raises PsqlError when psql fails and `check` is true.
    """
    cmd = [find_client_binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", *args]
    cmd += ["-d", dsn, "-f", "-"]
    proc = subprocess.run(cmd, input=query, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise PsqlError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc.stdout


def random_database_name(prefix: str = "t_") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def with_database(dsn: str, dbname: str) -> str:
    """The same connection string, pointing at database `dbname`."""
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urllib.parse.urlsplit(dsn)
        return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(dbname)))
    return make_conninfo(dsn, dbname=dbname)


def with_user(dsn: str, user: str) -> str:
    """The same connection string, logging in as `user` (no password)."""
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urllib.parse.urlsplit(dsn)
        host = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{urllib.parse.quote(user)}@{host}"))
    return make_conninfo(dsn, user=user)


def create_login_role(admin_dsn: str, member_of: str) -> str:
    """CREATE ROLE with LOGIN, a member of `member_of` (e.g. pggcl_user); returns its name."""
    name = f"u_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                sql.Identifier(name), sql.Identifier(member_of)
            )
        )
    return name


def drop_role(admin_dsn: str, name: str) -> None:
    """DROP OWNED BY and DROP ROLE, in the database of `admin_dsn`."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def create_database(admin_dsn: str, dbname: str, template: str | None = None) -> str:
    """CREATE DATABASE `dbname` (optionally from `template`); returns its DSN."""
    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname))
    if template is not None:
        stmt += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(stmt)
    return with_database(admin_dsn, dbname)


def drop_database(admin_dsn: str, dbname: str) -> None:
    """DROP DATABASE IF EXISTS `dbname`, disconnecting its sessions (also for templates)."""
    name = sql.Identifier(dbname)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT datistemplate FROM pg_database WHERE datname = %s", (dbname,)
        ).fetchone()
        if row is None:
            return
        if row[0]:
            conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(name))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


@contextlib.contextmanager
def temporary_database(
    admin_dsn: str, prefix: str = "t_", template: str | None = None
) -> Iterator[str]:
    """A new database (named `prefix` + random, optionally from `template`), dropped on exit;
    yields its DSN."""
    name = random_database_name(prefix)
    dsn = create_database(admin_dsn, name, template=template)
    try:
        yield dsn
    finally:
        drop_database(admin_dsn, name)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TempPostgres:
    """A PostgreSQL server in a temporary directory, for tests and demos only.

    Use as a context manager, or call `start()` and `stop()`. `dsn` connects as the
    superuser `postgres` (trust authentication, loopback only) to database `postgres`.
    """

    def __init__(self, bindir: Path | None = None, settings: dict[str, str] | None = None):
        self.bindir = bindir or find_server_binaries()
        self.settings = {**_SERVER_SETTINGS, **(settings or {})}
        self.port: int | None = None
        self.tmpdir: Path | None = None
        self._as_postgres = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        if self.port is None:
            raise RuntimeError("TempPostgres is not started")
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def datadir(self) -> Path:
        if self.tmpdir is None:
            raise RuntimeError("TempPostgres is not started")
        return self.tmpdir / "data"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, cwd=self.tmpdir, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log = self.tmpdir / "server.log" if self.tmpdir else None
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(
                f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}".rstrip()
            )

    def start(self) -> TempPostgres:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="pggcl-pg-"))
        if self._as_postgres:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresNotFound(
                    "running as root needs a `postgres` OS user to run the server as"
                ) from None
            os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
        try:
            self._run(*_INITDB, "-D", str(self.datadir))
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_server(self) -> None:
        assert self.tmpdir is not None
        # A port can be taken between choosing and binding it: try a few.
        for attempt in range(3):
            self.port = _free_port()
            conf = {
                **self.settings,
                "listen_addresses": "'127.0.0.1'",
                "port": str(self.port),
                "unix_socket_directories": f"'{self.tmpdir}'",
            }
            with open(self.datadir / "postgresql.auto.conf", "w") as f:
                f.writelines(f"{k} = {v}\n" for k, v in conf.items())
            try:
                log = str(self.tmpdir / "server.log")
                self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir), "-l", log)
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def stop(self) -> None:
        """Stop the server at once (no checkpoint) and remove its directory."""
        if self.tmpdir is None:
            return
        try:
            if (self.datadir / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.datadir))
        finally:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
            self.port = None

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
