"""The `pggcl` command. Each command group lives in its own module and is added below."""

from __future__ import annotations

import os

import click

from pggcl import __version__
from pggcl.cli._base import CliGroup
from pggcl.cli.db import db


@click.group(cls=CliGroup)
@click.option(
    "--dsn",
    envvar="PGGCL_DSN",
    metavar="DSN",
    help="PostgreSQL connection string (default: $PGGCL_DSN).",
)
@click.version_option(__version__, prog_name="pggcl")
@click.pass_context
def main(ctx: click.Context, dsn: str | None) -> None:
    """Global concurrency limits and rate limits inside PostgreSQL."""
    ctx.obj = dsn or os.environ.get("PGGCL_DSN") or None


main.add_command(db)

__all__ = ["main"]
