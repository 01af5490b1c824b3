"""Why queued requests wait (`pggcl explain`): per request and limit, whether that limit blocks
it, its place in the queue, how full the limit is and who holds it (issue #16.3)."""

from __future__ import annotations

from collections.abc import Sequence

import click

from pggcl.cli._base import about_limit, open_client
from pggcl.cli._output import echo_json, output_option, record, table
from pggcl.formatting import moment, ordinal, plural, printable, slots
from pggcl.models import Explanation


def _limit_line(e: Explanation) -> str:
    """One limit a request waits on: does it block, the place in its queue, how full it is."""
    ahead = e.position - 1
    parts = [
        f"'{printable(e.name)}': " + ("BLOCKING" if e.blocking else "not blocking"),
        f"{ordinal(e.position)} in queue ({ahead} ahead)",
    ]
    if not e.active:
        parts.append("inactive")
    used = f"{slots(e.active_slots)}/{e.limit} in use"
    if e.active_slots != e.held_slots:
        used += f" ({e.held_slots} held, {slots(e.active_slots - e.held_slots)} decaying)"
    if e.leases:
        used += f", held by {plural(e.leases, 'lease')}"
    parts.append(used)
    if e.mode == "rate_limit" and e.seconds_until_room is not None:
        room = e.seconds_until_room
        parts.append("room now" if room <= 0 else f"room in {room:.1f} s")
    return ", ".join(parts)


def _holders_table(e: Explanation) -> str:
    rows = [[h.holder or "-", str(h.slots), moment(h.since), moment(h.expires)] for h in e.holders]
    return table(["HOLDER", "SLOTS", "SINCE", "EXPIRES"], rows, right=[1])


def explanation_text(explanations: Sequence[Explanation], holders: dict[int, str | None]) -> str:
    """The text of `pggcl explain`: a paragraph per request, a line per limit, its holders."""
    blocks: list[str] = []
    lines: list[str] = []
    current: int | None = None
    for e in explanations:
        if e.waiter_id != current:
            if lines:
                blocks.append("\n".join(lines))
            current = e.waiter_id
            what = "slot" if e.occupy == 1 else "slots"
            holder = printable(holders.get(e.waiter_id) or "-")
            lines = [
                f"Waiter {e.waiter_id} ({holder}): {e.occupy} {what}, {e.mode}, "
                f"queued since {moment(e.since)}"
            ]
        lines.append("  " + _limit_line(e))
        if e.holders:
            lines.extend("    " + line for line in _holders_table(e).splitlines())
            more = e.leases - len(e.holders)
            if more > 0:
                lines.append(f"    ... and {plural(more, 'more lease')}")
    if lines:
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


@click.command()
@click.argument("name", required=False)
@click.option(
    "--waiter",
    "waiter_id",
    type=int,
    metavar="WAITER_ID",
    help="Explain this queued request only (its id: shown by `pggcl explain`).",
)
@click.option(
    "--max-holders",
    type=click.IntRange(min=0),
    metavar="N",
    help="List at most N holders per limit, oldest first (default: all).",
)
@output_option
@click.pass_context
def explain(
    ctx: click.Context,
    name: str | None,
    waiter_id: int | None,
    max_holders: int | None,
    output: str | None,
) -> None:
    """Say why queued requests wait: every one, those queued on NAME, or one (--waiter).

    For each request and each limit it waits on: whether that limit blocks it (BLOCKING: a
    request ahead of it there, or no room for it), its place in that limit's queue, how many
    slots are in use of the limit, who holds them (oldest first), and for a rate limit when
    there will be room. Exit status 1 when --waiter names a request that is not queued
    (granted, cancelled, or no such request).
    """
    if name is not None and waiter_id is not None:
        raise click.UsageError("give NAME or --waiter, not both")
    with open_client(ctx) as client:
        if waiter_id is not None:
            found = client.explain(waiter_id, max_holders)
            if not found:
                raise click.ClickException(
                    f"waiter {waiter_id} is not queued (it was granted or cancelled, "
                    "or there is no such waiter)"
                )
        else:
            if name is not None:
                with about_limit(name):
                    client.read_limit(name)  # an unknown name is an error, not "nobody"
            found = client.explain_queue(name, max_holders)
        holders = {w.waiter_id: w.holder for w in client.queue()} if output != "json" else {}
    if output == "json":
        echo_json([record(e) for e in found])
        return
    click.echo(explanation_text(found, holders) if found else "Nobody is waiting.")


COMMANDS = [explain]
