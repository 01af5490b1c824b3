"""Streaming replication for the failover tests: a standby built from a TempPostgres primary
with ``pg_basebackup``, made synchronous or not, and promoted with ``pg_ctl promote``.

Built on TempPostgres's public API only: the standby is a TempPostgres started from a base
backup (``datadir_from``) that carries ``standby.signal``, with ``primary_conninfo`` among its
settings. Everything listens on 127.0.0.1; both servers go away on ``stop()`` (and, through
TempPostgres's watchdog, when the test process dies).

    with ReplicatedPair(datadir_from=..., synchronous=True) as pair:
        dsn = pair.dsn_for("mydb")       # both hosts, target_session_attrs=read-write
        pair.crash_primary()             # pg_ctl stop -m immediate
        pair.promote()                   # pg_ctl promote, waits until it takes writes
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from pggcl.testing import TempPostgres

#: The standby's name for the primary (`application_name`, `synchronous_standby_names`).
STANDBY_NAME = "standby1"

#: What replication needs on the primary (PostgreSQL 15's defaults, spelled out), and a
#: checkpoint per backup that does not wait for the next one.
PRIMARY_SETTINGS = {"wal_level": "replica", "max_wal_senders": "5", "hot_standby": "on"}


def _as_server_user() -> list[str]:
    """The prefix that runs a server program as `postgres` when we are root (as TempPostgres
    does: initdb and the server refuse root)."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.02)


def query(dsn: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(sql.encode(), args)
        return cur.fetchall() if cur.description is not None else []


def base_backup(primary: TempPostgres, dest: Path) -> Path:
    """`pg_basebackup` of `primary` into `dest` (a new directory), as a standby of it:
    `standby.signal` written, WAL streamed during the backup (``-X stream``)."""
    assert primary.port is not None
    parent = dest.parent
    if os.geteuid() == 0:  # the backup must belong to the server user
        pw = pwd.getpwnam("postgres")
        os.chown(parent, pw.pw_uid, pw.pw_gid)
    cmd = [
        *_as_server_user(),
        str(primary.bindir / "pg_basebackup"),
        "-h",
        "127.0.0.1",
        "-p",
        str(primary.port),
        "-U",
        "postgres",
        "-D",
        str(dest),
        "-X",
        "stream",
        "-c",
        "fast",
        "--no-sync",
    ]
    _run(cmd, "pg_basebackup")
    # Written by hand, not by -R: TempPostgres writes postgresql.auto.conf itself, so
    # primary_conninfo goes in with the standby's settings instead.
    (dest / "standby.signal").write_text("")
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(dest / "standby.signal", pw.pw_uid, pw.pw_gid)
    return dest


def postmaster_pid(server: TempPostgres) -> int:
    return int((server.datadir / "postmaster.pid").read_text().split()[0])


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a postmaster's backends and auxiliaries)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def process_title(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode().strip()
    except OSError:
        return ""


class ReplicatedPair:
    """A primary and one streaming standby on 127.0.0.1, for failover tests.

    `synchronous`: the primary names the standby in `synchronous_standby_names` with
    `synchronous_commit = on`, so a commit returns only once the standby has flushed its WAL.
    Otherwise replication is asynchronous (commits return at once). `datadir_from` is as for
    TempPostgres (a cluster with pggcl's template database, say).
    """

    def __init__(self, *, datadir_from: Path | None = None, synchronous: bool = True) -> None:
        self.synchronous = synchronous
        self.primary = TempPostgres(
            settings={**PRIMARY_SETTINGS, "synchronous_commit": "on"}, datadir_from=datadir_from
        )
        self.standby: TempPostgres | None = None
        self._backup_dir: Path | None = None
        self.promoted = False
        self.paused = False

    # --- set-up -----------------------------------------------------------------------

    def start(self) -> ReplicatedPair:
        try:
            self.primary.start()
            self.start_standby()
        except BaseException:
            self.stop()
            raise
        return self

    def start_standby(self) -> None:
        """Base backup of the primary as it is now, started as a streaming standby; with
        `synchronous`, the primary then waits for it on every commit. Returns once the
        standby streams (and, synchronous, once the primary counts it as its sync standby)."""
        assert self.primary.port is not None
        self._backup_dir = Path(tempfile.mkdtemp(prefix="pggcl-basebackup-"))
        backup = base_backup(self.primary, self._backup_dir / "data")
        conninfo = (
            f"host=127.0.0.1 port={self.primary.port} user=postgres application_name={STANDBY_NAME}"
        )
        self.standby = TempPostgres(
            settings={
                "hot_standby": "on",
                "primary_conninfo": f"'{conninfo}'",
                "synchronous_commit": "on",
                "wal_receiver_status_interval": "1",
            },
            datadir_from=backup,
        )
        self.standby.start()
        shutil.rmtree(self._backup_dir, ignore_errors=True)
        self._backup_dir = None
        wait_for(lambda: self.replication_state() == "streaming", "the standby streams")
        self.set_synchronous(self.synchronous)

    def set_synchronous(self, synchronous: bool) -> None:
        """Name the standby in the primary's `synchronous_standby_names` (reloaded), or
        name none; returns once the primary counts it as it says."""
        self.synchronous = synchronous
        names = f"'{STANDBY_NAME}'" if synchronous else "''"
        self.primary.configure({"synchronous_standby_names": names})
        want = "sync" if synchronous else "async"
        wait_for(lambda: self.sync_state() == want, f"the primary counts the standby as {want}")

    def rebuild(self) -> None:
        """After a promotion: the promoted standby is the primary from now on, the old
        primary is removed, and a new standby is made from a base backup of the new primary
        (cheaper than a new pair: one server copy less)."""
        assert self.promoted and self.standby is not None
        old, self.primary, self.standby = self.primary, self.standby, None
        old.stop()
        self.promoted = False
        self.start_standby()

    @property
    def healthy(self) -> bool:
        """Both servers up, the standby streaming, nothing paused: fit for another test."""
        if self.promoted or self.paused or self.standby is None:
            return False
        if not (self.primary.running and self.standby.running):
            return False
        try:
            return self.replication_state() == "streaming"
        except psycopg.Error:
            return False

    def replication_state(self) -> str | None:
        rows = query(
            self.primary.dsn,
            "SELECT state FROM pg_stat_replication WHERE application_name = %s",
            STANDBY_NAME,
        )
        return str(rows[0][0]) if rows else None

    def sync_state(self) -> str | None:
        rows = query(
            self.primary.dsn,
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
            STANDBY_NAME,
        )
        return str(rows[0][0]) if rows else None

    def wait_caught_up(self) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        assert self.standby is not None
        standby = self.standby
        target = query(self.primary.dsn, "SELECT pg_current_wal_lsn()::text")[0][0]

        def replayed() -> bool:
            rows = query(standby.dsn, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", target)
            return rows[0][0] is True

        wait_for(replayed, f"the standby replayed the primary's WAL up to {target}")

    # --- addresses --------------------------------------------------------------------

    def dsn_for(self, dbname: str) -> str:
        """Both servers in one URI, the writable one chosen at each connect: what psycopg
        (libpq) and asyncpg both take (asyncpg reads no `host=a,b port=p,q` key-value form)."""
        assert self.standby is not None
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/{dbname}?target_session_attrs=read-write"

    # --- faults -----------------------------------------------------------------------

    def crash_primary(self) -> None:
        """`pg_ctl stop -m immediate` on the primary: every process ends at once, no
        checkpoint (what the standby has is what it has). It stays down."""
        self.primary.stop("immediate")

    def kill_primary_host(self) -> float:
        """The primary's machine gone: SIGKILL to its postmaster and every child at once
        (even one stopped by `pause_wal_sender`), no shutdown of any kind; WAL senders first,
        so that nothing more leaves. It stays down. Returns the time.monotonic() of the first
        SIGKILL (the processes are listed before it)."""
        pid = postmaster_pid(self.primary)
        senders = self.wal_senders()
        pids = [*senders, pid, *(p for p in children_of(pid) if p not in senders)]
        killed_at = time.monotonic()
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids), "it is gone")
        (self.primary.datadir / "postmaster.pid").unlink(missing_ok=True)
        self.paused = False  # a stopped WAL sender died with the rest
        return killed_at

    def wal_senders(self) -> list[int]:
        pid = postmaster_pid(self.primary)
        return [p for p in children_of(pid) if "walsender" in process_title(p)]

    def pause_wal_sender(self) -> None:
        """SIGSTOP the primary's WAL sender: WAL written from now on stays on the primary, as
        with a standby cut off or lagging (asynchronous replication only: a synchronous
        primary would stop committing)."""
        senders = self.wal_senders()
        assert senders, "no WAL sender on the primary"
        self.paused = True
        for p in senders:
            os.kill(p, signal.SIGSTOP)

    def promote(self) -> None:
        """`pg_ctl promote` on the standby; returns once it takes writes."""
        assert self.standby is not None
        cmd = [
            *_as_server_user(),
            str(self.standby.bindir / "pg_ctl"),
            "promote",
            "-w",
            "-D",
            str(self.standby.datadir),
        ]
        _run(cmd, "pg_ctl promote")
        self.promoted = True
        standby = self.standby
        wait_for(
            lambda: query(standby.dsn, "SELECT pg_is_in_recovery()")[0][0] is False,
            "the standby is promoted",
        )

    # --- tear-down --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop both servers and remove their directories (a stopped WAL sender is killed
        with its primary)."""
        with contextlib.suppress(Exception):
            if self.primary.running:
                for p in self.wal_senders():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGCONT)
        try:
            if self.standby is not None:
                self.standby.stop()
        finally:
            self.primary.stop()
            if self._backup_dir is not None:
                shutil.rmtree(self._backup_dir, ignore_errors=True)

    def __enter__(self) -> ReplicatedPair:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
