"""alembic environment for pggcl's own migration chain.

pggcl.schema builds the Config in code and hands over an open connection in
`config.attributes["connection"]`; running the `alembic` command with an ini that sets
`sqlalchemy.url` works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from pggcl.schema import VERSION_TABLE, libpq_dsn

# Serialises concurrent `pggcl db upgrade` runs against one database.
_LOCK_KEY = "pggcl.alembic"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        transactional_ddl=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": _LOCK_KEY})
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("pggcl migrations do not support --sql; use `pggcl db sql` instead")
    conn = context.config.attributes.get("connection")
    if conn is not None:
        _run(conn)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url, or use pggcl.schema.upgrade(dsn)")
    url = "postgresql+psycopg://" + libpq_dsn(url).split("://", 1)[1]
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        _run(connection)
        connection.commit()


main()
