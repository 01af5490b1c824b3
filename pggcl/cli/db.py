"""`pggcl db`: install, upgrade, inspect and remove the schema.

`pggcl.schema` (alembic, SQLAlchemy) is imported by the commands that use it: the other
commands start faster without it.
"""

from __future__ import annotations

import click

from pggcl.cli._base import require_dsn


@click.group()
def db() -> None:
    """Manage the pggcl schema in the database."""


@db.command()
@click.argument("revision", default="head")
@click.pass_context
def upgrade(ctx: click.Context, revision: str) -> None:
    """Install or upgrade the schema to REVISION (default: head).

    A server older than pggcl supports (PostgreSQL 15) is refused before anything changes."""
    from pggcl import schema

    dsn = require_dsn(ctx)
    schema.upgrade(dsn, revision)
    click.echo(f"pggcl schema at revision {schema.current(dsn) or 'base'}")


@db.command()
@click.argument("revision")
@click.pass_context
def downgrade(ctx: click.Context, revision: str) -> None:
    """Downgrade the schema to REVISION (`base` drops schema pggcl and its data)."""
    from pggcl import schema

    dsn = require_dsn(ctx)
    schema.downgrade(dsn, revision)
    click.echo(f"pggcl schema at revision {schema.current(dsn) or 'base'}")


@db.command()
@click.pass_context
def current(ctx: click.Context) -> None:
    """Print the installed revision (`base` when pggcl is not installed)."""
    from pggcl import schema

    click.echo(schema.current(require_dsn(ctx)) or "base")


@db.command("sql")
def sql_() -> None:
    """Print the fresh-install SQL script (run it with `psql -1 -f`); it records the revision,
    so `pggcl db upgrade` takes over later, and stops first on a server older than pggcl
    supports."""
    from pggcl import schema

    click.echo(schema.install_sql(), nl=False)
