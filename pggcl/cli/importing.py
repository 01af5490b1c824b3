"""`pggcl import prefect`: bring a Prefect server's global concurrency limits here.

Reads every global concurrency limit from the Prefect server's REST API (`--api-url`, default
`$PREFECT_API_URL`; `POST /v2/concurrency_limits/filter`, page by page) and creates or updates
the same limits here: name, limit, slot_decay_per_second, active. One line per limit says what
was done (`created`, `updated`, `unchanged`), or why it was not (`skipped: <reason>`, and then
the exit status is 1). Running it twice changes nothing the second time. Prefect is not needed:
the API is read with the standard library.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import click

from pggcl.cli._base import INT4_MAX, open_client
from pggcl.errors import LimitNotFoundError, PggclError

_PAGE = 200


@dataclass(frozen=True, slots=True)
class PrefectLimit:
    name: str
    limit: int
    slot_decay_per_second: float
    active: bool


def read_prefect_limits(api_url: str, timeout: float = 30.0) -> list[PrefectLimit]:
    """Every global concurrency limit of the Prefect server at ``api_url`` (its `/api` URL)."""
    url = api_url.rstrip("/") + "/v2/concurrency_limits/filter"
    found: list[PrefectLimit] = []
    offset = 0
    while True:
        body = json.dumps({"offset": offset, "limit": _PAGE}).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                page: list[dict[str, Any]] = json.load(response)
        except urllib.error.HTTPError as exc:
            raise click.ClickException(f"the Prefect API at {api_url} answered {exc}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise click.ClickException(
                f"could not read the Prefect API at {api_url}: {exc}"
            ) from None
        for item in page:
            found.append(
                PrefectLimit(
                    str(item["name"]),
                    int(item["limit"]),
                    float(item.get("slot_decay_per_second") or 0.0),
                    bool(item.get("active", True)),
                )
            )
        if len(page) < _PAGE:
            return found
        offset += len(page)


@click.group("import")
def import_group() -> None:
    """Bring limits from elsewhere."""


@import_group.command("prefect")
@click.option(
    "--api-url",
    envvar="PREFECT_API_URL",
    metavar="URL",
    help="The Prefect server's API, e.g. http://127.0.0.1:4200/api (default: $PREFECT_API_URL).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.pass_context
def import_prefect(ctx: click.Context, api_url: str | None, dry_run: bool) -> None:
    """Create or update here every global concurrency limit of a Prefect server.

    Name, limit, slot_decay_per_second and active are copied; one line per limit says what
    was done. A limit pggcl cannot take (its name or value) is reported as skipped, and the
    exit status is then 1. Running it twice changes nothing the second time.
    """
    if not api_url:
        raise click.ClickException("no Prefect API given: pass --api-url or set PREFECT_API_URL")
    limits = read_prefect_limits(api_url)
    skipped = 0
    would = "would be " if dry_run else ""
    with open_client(ctx) as client:
        for lim in sorted(limits, key=lambda x: x.name):
            try:
                if lim.limit > INT4_MAX:
                    raise PggclError(f"invalid limit: {lim.limit}; at most {INT4_MAX} slots")
                try:
                    here = client.read_limit(lim.name)
                except LimitNotFoundError:
                    if not dry_run:
                        client.create_limit(
                            lim.name, lim.limit, lim.slot_decay_per_second, lim.active
                        )
                    what = f"{would}created"
                else:
                    same = (here.limit, here.slot_decay_per_second, here.active) == (
                        lim.limit,
                        lim.slot_decay_per_second,
                        lim.active,
                    )
                    if same:
                        what = "unchanged"
                    else:
                        if not dry_run:
                            client.update_limit(
                                lim.name,
                                limit=lim.limit,
                                slot_decay_per_second=lim.slot_decay_per_second,
                                active=lim.active,
                            )
                        what = f"{would}updated"
            except PggclError as exc:
                skipped += 1
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                click.echo(f"{lim.name!r}: skipped: {first}", err=True)
                continue
            state = "active" if lim.active else "inactive"
            click.echo(
                f"{lim.name!r}: {what} (limit {lim.limit}, slot_decay_per_second "
                f"{lim.slot_decay_per_second:g}, {state})"
            )
    total = len(limits)
    click.echo(
        f"{total - skipped} of {total} limit(s) from {api_url}"
        + (" checked (dry run: nothing changed)" if dry_run else " imported")
    )
    if skipped:
        ctx.exit(1)


COMMANDS = [import_group]
