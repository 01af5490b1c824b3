"""Where the SQL engine and its migrations live, and how to install them.

`schema_sql()` is the fresh-install script, the current schema read from `sql/`;
`upgrade()`/`downgrade()`/`current()` drive the alembic chain in `alembic/` through alembic's
Python API, so users need no alembic.ini. Each revision runs its own frozen `.sql` file
(`alembic/versions/NNNN_*.sql`), never `sql/`, so a released revision installs the same thing
forever; tests/test_migrations.py checks that the chain ends equal to `sql/`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
from alembic import command, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from pggcl.core import versions
from pggcl.core.versions import check_server_version, supported_range

_PACKAGE_DIR = Path(__file__).resolve().parent

#: alembic keeps pggcl's revision here, apart from a user's own `alembic_version`.
VERSION_TABLE = "pggcl_alembic_version"


def _find(packaged: str, in_repo: str) -> Path:
    # A wheel carries the directory inside the package; a dev checkout has it at the repo root.
    for candidate in (_PACKAGE_DIR / packaged, _PACKAGE_DIR.parent / in_repo):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pggcl installation is incomplete: no {in_repo}/ directory found")


def sql_dir() -> Path:
    """The directory holding the engine's `*.sql` files."""
    return _find("_sql", "sql")


def alembic_dir() -> Path:
    """The alembic script directory (env.py and versions/)."""
    return _find("_alembic", "alembic")


def sql_files() -> list[Path]:
    """The engine's SQL files in the order they must run (sorted by file name)."""
    return sorted(sql_dir().glob("*.sql"), key=lambda p: p.name)


def schema_sql() -> str:
    """The fresh-install script: every `sql/*.sql` file, concatenated in file-name order."""
    parts = [f"-- sql/{p.name}\n{p.read_text(encoding='utf-8').rstrip()}\n" for p in sql_files()]
    return "\n".join(parts)


def execute_script(script: Path | str) -> None:
    """Run a migration script (a frozen `alembic/versions/*.sql` file, or SQL text) on the
    connection of the running alembic migration. For revision modules only."""
    sql = script.read_text(encoding="utf-8") if isinstance(script, Path) else script
    # The raw psycopg cursor, without parameters, sends the text as it is: several
    # statements, $$-quoted bodies, `%` and `:name` all pass untouched.
    dbapi_conn = op.get_bind().connection.dbapi_connection
    assert dbapi_conn is not None
    cur = dbapi_conn.cursor()
    try:
        # The script runs with search_path = pg_catalog, pg_temp, whoever installs: a view is
        # bound to the operators it finds when it is created, and an operator planted in a
        # schema on the installer's path (say public.+(integer, double precision)) would be
        # bound into pggcl.limits for good. The caller's path comes back afterwards (alembic's
        # own version table is created on it).
        cur.execute("SELECT pg_catalog.current_setting('search_path')")
        row = cur.fetchone()
        cur.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)")
        cur.execute(sql)
        if row is not None:
            cur.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (row[0],))
    finally:
        cur.close()


def _server_guard_sql() -> str:
    # The same refusal as check_server(), for the script run by psql: before any change.
    oldest = versions.MIN_SERVER_VERSION_NUM
    return f"""-- pggcl needs {supported_range()}: stop here on an older server.
DO $guard$
BEGIN
    IF pg_catalog.current_setting('server_version_num')::integer < {oldest} THEN
        RAISE EXCEPTION 'the database server runs PostgreSQL %, which pggcl does not support: '
            'it needs {supported_range()}', pg_catalog.current_setting('server_version');
    END IF;
END
$guard$;

"""


def install_sql() -> str:
    """What `pggcl db sql` prints: a guard that refuses a server older than pggcl supports,
    the fresh install, then the alembic version row that `pggcl db upgrade` would have
    written, so that upgrades later take over from there."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return (
        _server_guard_sql()
        + schema_sql()
        + f"""
-- Record the revision, as `pggcl db upgrade` does: later upgrades start from here (in a
-- schema of your search_path, which the install script had pinned to pg_catalog).
RESET search_path;
CREATE TABLE {VERSION_TABLE} (
    version_num varchar(32) NOT NULL,
    CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num)
);
INSERT INTO {VERSION_TABLE} (version_num) VALUES ('{head}');
"""
    )


def libpq_dsn(dsn: str) -> str:
    """Turn a SQLAlchemy-style `postgresql+psycopg://` URL into one libpq accepts."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql+asyncpg://"):
        if dsn.startswith(prefix):
            return "postgresql://" + dsn[len(prefix) :]
    return dsn


@contextlib.contextmanager
def _connection(dsn: str) -> Iterator[Connection]:
    # A creator lets libpq parse the DSN, so key=value strings, socket paths and
    # query options work exactly as with psql; NullPool leaves no idle connection
    # behind (a template database must have none).
    conninfo = libpq_dsn(dsn)
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(conninfo), poolclass=NullPool
    )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic Config for pggcl's chain, optionally bound to an open connection."""
    cfg = Config()
    cfg.set_main_option("script_location", str(alembic_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def check_server(conn: Connection) -> None:
    """Raise UnsupportedServerVersionError (naming the server's version and the supported
    range) when the server is older than pggcl supports: before anything is installed."""
    dbapi = conn.connection.dbapi_connection
    assert isinstance(dbapi, psycopg.Connection)  # what _connection's creator makes
    check_server_version(dbapi.info.server_version)


def upgrade(dsn: str, revision: str = "head") -> None:
    """Migrate the database at `dsn` up to `revision` (default: the newest). A server older
    than pggcl supports is refused first (`check_server`)."""
    with _connection(dsn) as conn:
        check_server(conn)
        command.upgrade(alembic_config(conn), revision)
        conn.commit()


def downgrade(dsn: str, revision: str) -> None:
    """Migrate the database at `dsn` down to `revision` (`base` removes schema pggcl)."""
    with _connection(dsn) as conn:
        command.downgrade(alembic_config(conn), revision)
        conn.commit()


def current(dsn: str) -> str | None:
    """The pggcl revision installed at `dsn`, or None when pggcl is not installed."""
    with _connection(dsn) as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()
