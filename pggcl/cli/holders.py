"""Who holds slots and who waits (`pggcl holders`), and giving back a stuck lease (`release`)."""

from __future__ import annotations

import uuid

import click

from pggcl.cli._base import about_limit, open_client
from pggcl.cli._output import echo_json, holders_table, output_option, queue_table, record


@click.command()
@click.argument("name", required=False)
@output_option
@click.pass_context
def holders(ctx: click.Context, name: str | None, output: str | None) -> None:
    """Show who holds slots and who waits, on every limit or on NAME."""
    with open_client(ctx) as client:
        if name is not None:
            with about_limit(name):
                client.read_limit(name)  # an unknown name is an error, not an empty list
        held = client.holders(name)
        waiting = client.queue(name)
    if output == "json":
        echo_json({"holders": [record(h) for h in held], "queue": [record(w) for w in waiting]})
        return
    click.echo(holders_table(held) if held else "No slots are held.")
    click.echo()
    click.echo(queue_table(waiting) if waiting else "Nobody is waiting.")


@click.command()
@click.argument("lease_id", metavar="LEASE_ID", type=click.UUID)
@click.pass_context
def release(ctx: click.Context, lease_id: uuid.UUID) -> None:
    """Give back the slots of a lease, e.g. of a stuck process.

    LEASE_ID is shown by `pggcl holders`. Queued waiters are served at once; the process
    that held the lease is not told.
    """
    with open_client(ctx) as client:
        released = client.release(lease_id)
    if not released:
        raise click.ClickException(
            f"lease {lease_id} is not held (it was released or reclaimed already)"
        )
    click.echo(f"Released lease {lease_id}.")


COMMANDS = [holders, release]
