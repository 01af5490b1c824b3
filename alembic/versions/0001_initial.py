"""initial: install schema pggcl from sql/*.sql

Revision ID: 0001
Revises:
Create Date: 2025-01-01

A future revision applies its own upgrade script (kept outside `sql/*.sql`, e.g.
`sql/migrations/0002_*.sql`, so that `schema_sql()` does not pick it up) and then
re-applies the function files, so that the chain always ends equal to a fresh install
(tests/test_migrations.py checks this). Before the first such revision, freeze the
SQL this revision runs (copy today's sql/*.sql next to it) so it keeps installing the
0001 schema rather than the current one.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from pggcl.schema import sql_files

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("pggcl",)
depends_on: str | Sequence[str] | None = None


def _execute_script(sql: str) -> None:
    # The raw psycopg cursor, without parameters, sends the text as it is: several
    # statements, $$-quoted bodies, `%` and `:name` all pass untouched.
    dbapi_conn = op.get_bind().connection.dbapi_connection
    assert dbapi_conn is not None
    cur = dbapi_conn.cursor()
    try:
        cur.execute(sql)
    finally:
        cur.close()


def upgrade() -> None:
    for path in sql_files():
        _execute_script(path.read_text(encoding="utf-8"))


def downgrade() -> None:
    # Roles pggcl_admin / pggcl_user are cluster-wide and may serve other databases.
    op.execute("DROP SCHEMA IF EXISTS pggcl CASCADE")
