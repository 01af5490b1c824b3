"""`pggcl ui`: serve the web UI (needs the `ui` extra)."""

from __future__ import annotations

import click

from pggcl.cli._base import is_loopback, require_dsn


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token",
    envvar="PGGCL_UI_TOKEN",
    metavar="TOKEN",
    help="Secret every request must carry (default: $PGGCL_UI_TOKEN). Needed to listen "
    "beyond loopback.",
)
@click.pass_context
def ui(ctx: click.Context, host: str, port: int, token: str | None) -> None:
    """Serve the web UI: see the limits live, and change them.

    It listens on loopback unless --host says otherwise; then a --token is required, and
    every request must carry it (open the address printed below once, or send
    `Authorization: Bearer TOKEN`). What the UI may change follows the database role of the
    DSN: a pggcl_user DSN gives a read-only UI.
    """
    dsn = require_dsn(ctx)
    try:
        from pggcl.ui import create_app
        from pggcl.ui.server import make_server
    except ImportError as exc:
        raise click.ClickException(
            f"the web UI needs the ui extra: pip install 'pggcl[ui]' ({exc})"
        ) from None
    if not token and not is_loopback(host):
        raise click.ClickException(
            f"--host {host} listens beyond this machine: give --token TOKEN (or set "
            "PGGCL_UI_TOKEN) so that every request must carry it"
        )
    if token is not None and not token.strip():
        raise click.ClickException("--token must not be empty")
    app = create_app(
        dsn, token=token, hosts=None if token else {"127.0.0.1", "localhost", "::1", host}
    )
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}/" + ("?token=" + token if token else "")
    click.echo(f"pggcl ui: open {address}  (Ctrl-C stops it)", err=True)
    make_server(app, host, port).run()
