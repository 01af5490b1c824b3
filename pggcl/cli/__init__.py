"""The `pggcl` command. Each command group lives in its own module and is added below.

The verbs and flags are those of `prefect gcl` (create, inspect, ls, update, enable, disable,
delete), plus `holders`, `explain`, `release`, `run`, `import prefect`, `demo`, `db`, `ui`
and `metrics`. Commands call only the public sync client, `pggcl.Client`.
"""

from __future__ import annotations

import os

import click

from pggcl import __version__
from pggcl.cli import explain, holders, importing, limits, metrics, run
from pggcl.cli._base import CliGroup
from pggcl.cli.db import db
from pggcl.cli.demo import demo
from pggcl.cli.ui import ui


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
    """Global concurrency limits and rate limits inside PostgreSQL.

    New here? Run `pggcl demo`.
    """
    ctx.obj = dsn or os.environ.get("PGGCL_DSN") or None


for command in (
    *limits.COMMANDS, *holders.COMMANDS, *explain.COMMANDS, *run.COMMANDS, *importing.COMMANDS,
    *metrics.COMMANDS, demo, db,
):  # fmt: skip
    main.add_command(command)
main.add_command(ui)

__all__ = ["main"]
