"""Managing limits, as `prefect gcl` does: create, inspect, ls, update, enable, disable, delete.

Unlike `prefect gcl`, every failure exits 1 with one line on stderr, and `ls` has no row cap.
"""

from __future__ import annotations

import json

import click

from pggcl.cli._base import about_limit, check_slots, open_client
from pggcl.cli._output import (
    echo_json,
    holders_table,
    limits_table,
    output_option,
    queue_table,
    record,
    templates_table,
    yes_no,
)
from pggcl.formatting import duration, moment, per_second, slots
from pggcl.models import ConcurrencyLimit, LimitTemplate
from pggcl.sync import Client

# Negative numbers are the engine's to refuse (exit 1, naming the value), not click's (exit 2).
_limit_option = click.option("--limit", "-l", type=int, help="Maximum number of slots (0 or more).")
# `prefect gcl create/update --active-slots N` sets a counter; here active slots are counted
# from the leases held and the decaying rate-limit level, so there is nothing to set.
_active_slots_option = click.option(
    "--active-slots",
    type=int,
    metavar="N",
    help="Accepted for `prefect gcl` scripts and ignored, with a warning: pggcl counts active "
    "slots from the leases actually held (and the decaying rate-limit level), so they cannot "
    "be set; release a stuck lease with `pggcl release`.",
)


def _ignore_active_slots(value: int | None) -> None:
    if value is not None:
        click.echo(
            "Warning: --active-slots is ignored: pggcl counts active slots from the leases "
            "held (see `pggcl holders`; `pggcl release LEASE_ID` frees a stuck one)",
            err=True,
        )


_decay_option = click.option(
    "--slot-decay-per-second",
    type=float,
    help="Slots freed per second; above 0 makes the limit usable as a rate limit.",
)
_idle_option = click.option(
    "--idle-seconds",
    type=float,
    help="Templates only (a NAME with *): remove an instance after this many seconds unused "
    "(default 3600).",
)


@click.command()
@click.argument("name")
@click.option("--limit", "-l", type=int, required=True, help="Maximum number of slots (0 or more).")
@click.option(
    "--slot-decay-per-second",
    type=float,
    default=0.0,
    show_default=True,
    help="Slots freed per second; above 0 makes the limit usable as a rate limit.",
)
@click.option("--disable", is_flag=True, help="Create the limit inactive (it blocks nobody).")
@_idle_option
@_active_slots_option
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    limit: int,
    slot_decay_per_second: float,
    disable: bool,
    idle_seconds: float | None,
    active_slots: int | None,
) -> None:
    """Create the global concurrency limit NAME.

    A NAME with * (one or more characters) creates a template: a request for a missing limit
    that matches it ('tenant:*' matches 'tenant:acme') creates that limit on first use, active,
    with these values; changing the template changes them; unused ones go away by themselves.
    """
    check_slots("--limit", limit)
    _ignore_active_slots(active_slots)
    with open_client(ctx) as client, about_limit(name):
        client.create_limit(
            name,
            limit,
            slot_decay_per_second=slot_decay_per_second,
            active=not disable,
            idle_seconds=idle_seconds,
        )
    what = "template" if "*" in name else "global concurrency limit"
    click.echo(f"Created {what} with name {name!r}.")


@click.command()
@click.argument("name")
@output_option
@click.option(
    "--file",
    "-f",
    "file_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the JSON to this file instead (needs --output json), as `prefect gcl` does.",
)
@click.pass_context
def inspect(ctx: click.Context, name: str, output: str | None, file_path: str | None) -> None:
    """Show the limit NAME with its live occupancy, holders and waiters."""
    if file_path and output != "json":
        raise click.ClickException("--file needs --output json")
    with open_client(ctx) as client:
        template = _template_named(client, name)
        if template is not None:
            _show_template(template, output)
            return
        with about_limit(name):
            limit = client.read_limit(name)
            holders = client.holders(name)
            waiters = client.queue(name)
    if output == "json":
        data = {
            **record(limit),
            "holders": [record(h) for h in holders],
            "queue": [record(w) for w in waiters],
        }
        if file_path:
            with open(file_path, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=2)
                out.write("\n")
            click.echo(f"Wrote global concurrency limit {name!r} to {file_path}.")
        else:
            echo_json(data)
        return
    fields = [
        ("name", limit.name),
        ("limit", str(limit.limit)),
        ("active", yes_no(limit.active)),
        (
            "active slots (now)",
            f"{slots(limit.active_slots)} (held {limit.held_slots}, "
            f"decaying {slots(limit.decaying_slots)})",
        ),
        ("slot decay per second", per_second(limit.slot_decay_per_second)),
        ("waiting", str(limit.waiting)),
        *_made_from(limit),
        ("created", moment(limit.created)),
        ("updated", moment(limit.updated)),
        *_counted(limit),
    ]
    width = max(len(label) for label, _ in fields) + 1
    for label, value in fields:
        click.echo(f"{label + ':':<{width}} {value}")
    click.echo(f"\nholders ({len(holders)}):")
    if holders:
        click.echo(_indent(holders_table(holders)))
    click.echo(f"\nwaiting ({len(waiters)}):")
    if waiters:
        click.echo(_indent(queue_table(waiters)))


@click.command()
@click.argument("template", required=False)
@click.option("--templates", "only_templates", is_flag=True, help="List the templates alone.")
@output_option
@click.pass_context
def ls(ctx: click.Context, template: str | None, only_templates: bool, output: str | None) -> None:
    """List every global concurrency limit, sorted by name, then the templates (names with *)
    with how many instances each has. With TEMPLATE: the limits made from it."""
    with open_client(ctx) as client:
        limits = sorted(client.list_limits(), key=lambda lim: lim.name)
        templates = client.list_templates()
    if template is not None:
        limits = [lim for lim in limits if lim.template == template]
        if template not in {t.name for t in templates}:
            raise click.ClickException(f"template {template!r} not found")
    if only_templates:
        if output == "json":
            echo_json([record(t) for t in templates])
        elif not templates:
            click.echo("No templates found.")
        else:
            click.echo(templates_table(templates))
        return
    if output == "json":  # the limits, as before templates existed (--templates: those)
        echo_json([record(lim) for lim in limits])
        return
    if not limits:
        click.echo(
            f"No limits made from template {template!r}."
            if template
            else "No global concurrency limits found."
        )
    else:
        click.echo(limits_table(limits))
    if templates and template is None:
        click.echo("\n" + templates_table(templates))


@click.command()
@click.argument("name")
@_limit_option
@_decay_option
@click.option("--enable", is_flag=True, help="Make the limit active.")
@click.option("--disable", is_flag=True, help="Make the limit inactive (it blocks nobody).")
@_idle_option
@_active_slots_option
@click.pass_context
def update(
    ctx: click.Context,
    name: str,
    limit: int | None,
    slot_decay_per_second: float | None,
    enable: bool,
    disable: bool,
    idle_seconds: float | None,
    active_slots: int | None,
) -> None:
    """Change the limit NAME; options not given keep their value.

    A template (a NAME with *) changes with every limit made from it that was not changed
    individually; a limit made from a template and changed here keeps its own values from then
    on."""
    _ignore_active_slots(active_slots)
    nothing_else = (
        limit is None
        and slot_decay_per_second is None
        and not (enable or disable)
        and idle_seconds is None
    )
    if active_slots is not None and nothing_else:
        click.echo(f"Nothing to update for global concurrency limit {name!r}.")
        return
    if enable and disable:
        raise click.ClickException("--enable and --disable exclude each other: give one")
    if nothing_else:
        raise click.ClickException(
            "nothing to update: give --limit, --slot-decay-per-second, --enable, --disable or "
            "--idle-seconds"
        )
    check_slots("--limit", limit)
    active = True if enable else False if disable else None
    with open_client(ctx) as client, about_limit(name):
        client.update_limit(
            name,
            limit=limit,
            slot_decay_per_second=slot_decay_per_second,
            active=active,
            idle_seconds=idle_seconds,
        )
    what = "template" if "*" in name else "global concurrency limit"
    click.echo(f"Updated {what} with name {name!r}.")


@click.command()
@click.argument("name")
@click.pass_context
def enable(ctx: click.Context, name: str) -> None:
    """Make the limit NAME active: it blocks when full."""
    with open_client(ctx) as client, about_limit(name):
        client.update_limit(name, active=True)
    click.echo(f"Enabled global concurrency limit with name {name!r}.")


@click.command()
@click.argument("name")
@click.pass_context
def disable(ctx: click.Context, name: str) -> None:
    """Make the limit NAME inactive: it blocks nobody.

    Requests waiting on it go ahead at once.
    """
    with open_client(ctx) as client, about_limit(name):
        client.update_limit(name, active=False)
    click.echo(f"Disabled global concurrency limit with name {name!r}.")


@click.command()
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete the limit NAME. Its holders keep running; its waiters go ahead. Deleting a
    template (a NAME with *) leaves the limits made from it as plain limits."""
    with open_client(ctx) as client, about_limit(name):
        what = "global concurrency limit"
        if _template_named(client, name) is not None:
            what = "template"
        else:
            client.read_limit(name)  # a missing limit is an error before any question
        question = f"Are you sure you want to delete {what} {name!r}?"
        try:
            confirmed = yes or click.confirm(question, default=False)
        except click.Abort:  # end of input, or Ctrl-C, at the question
            raise click.ClickException(
                "no answer, so nothing was deleted (--yes skips the question)"
            ) from None
        if not confirmed:
            raise click.ClickException("deletion aborted; nothing was changed")
        if not client.delete_limit(name):
            raise click.ClickException(f"{what} {name!r} not found")
    click.echo(f"Deleted {what} with name {name!r}.")


def _counted(limit: ConcurrencyLimit) -> list[tuple[str, str]]:
    """The counters, as `inspect` shows them (`--output json` has every bucket)."""
    return [
        ("grants", str(limit.grants)),
        ("queued (had to wait)", str(limit.enqueued)),
        ("denied (try, no wait)", str(limit.denied)),
        ("gave up (waiting)", str(limit.gave_up)),
        ("rejected (waiting)", str(limit.rejected)),
        ("reclaimed slots", str(limit.reclaimed_slots)),
        ("wait", _seconds(limit.wait_seconds_count, limit.wait_seconds_sum, "grant")),
        ("hold", _seconds(limit.hold_seconds_count, limit.hold_seconds_sum, "lease")),
    ]


def _template_named(client: Client, name: str) -> LimitTemplate | None:
    """The template ``name``, when the name is a pattern and no limit of that name exists."""
    if "*" not in name:
        return None
    return next((t for t in client.list_templates() if t.name == name), None)


def _show_template(template: LimitTemplate, output: str | None) -> None:
    if output == "json":
        echo_json(record(template))
        return
    fields = [
        ("template", template.name),
        ("limit", str(template.limit)),
        ("active", yes_no(template.active)),
        ("slot decay per second", per_second(template.slot_decay_per_second)),
        ("idle time", duration(template.idle_seconds)),
        ("instances", f"{template.instances} (pggcl ls {template.name!r} lists them)"),
        ("created", moment(template.created)),
        ("updated", moment(template.updated)),
    ]
    width = max(len(label) for label, _ in fields) + 1
    for label, value in fields:
        click.echo(f"{label + ':':<{width}} {value}")


def _made_from(limit: ConcurrencyLimit) -> list[tuple[str, str]]:
    if limit.template is None:
        return []
    kept = "changed individually: keeps its own values" if limit.customized else "follows it"
    return [("template", f"{limit.template} ({kept})")]


def _seconds(count: int, total: float, of: str) -> str:
    if count == 0:
        return f"no {of} yet"
    return f"mean {total / count:.3f} s over {count} {of}{'s' if count != 1 else ''}"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


COMMANDS = [create, inspect, ls, update, enable, disable, delete]
