"""`pggcl metrics`: a Prometheus exporter and nothing else, for those who want the metrics
without the web UI (and without the `ui` extra).

It answers ``GET /metrics`` with the text the UI's ``/metrics`` answers (one renderer:
:mod:`pggcl.prometheus`), read fresh at each scrape from pggcl.limits (plain limits and each
template's busiest instances) and pggcl.template_totals through the public sync client;
anything else is 404. The standard library's threaded HTTP server is enough for a scraper or
two.
"""

from __future__ import annotations

import contextlib
import hmac
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import click

import pggcl
from pggcl.cli._base import is_loopback, require_dsn
from pggcl.errors import PggclError
from pggcl.prometheus import BUSIEST, CONTENT_TYPE, exposition, unavailable

_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


class MetricsServer(ThreadingHTTPServer):
    """Serves ``/metrics`` of the limits that ``client`` reads.

    With a ``token``, every request must carry ``Authorization: Bearer TOKEN``. Without one
    (loopback only), the Host header must name this machine, so that a web page cannot read
    the metrics through a DNS name rebound to 127.0.0.1 (as the UI refuses, too).
    """

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], client: pggcl.Client, token: str | None = None
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.client = client
        self.token = token
        self.hosts = None if token else _LOOPBACK_NAMES | {address[0]}


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        refusal = self._refusal()
        if refusal is not None:
            self._answer(*refusal)
        elif self.path.split("?", 1)[0] != "/metrics":
            self._answer(HTTPStatus.NOT_FOUND, "only /metrics is served here\n")
        else:
            try:
                client = self.server.client
                text = exposition(client.busiest_limits(BUSIEST), client.template_totals())
            except PggclError as exc:
                self._answer(HTTPStatus.SERVICE_UNAVAILABLE, unavailable(exc))
            else:
                self._answer(HTTPStatus.OK, text)

    def _refusal(self) -> tuple[HTTPStatus, str] | None:
        token = self.server.token
        if token is not None:
            given = self.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return HTTPStatus.UNAUTHORIZED, "send Authorization: Bearer TOKEN\n"
            return None
        host = self.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.server.hosts is not None and name.strip("[]") not in self.server.hosts:
            return HTTPStatus.MISDIRECTED_REQUEST, "only loopback host names are served\n"
        return None

    def _answer(self, status: HTTPStatus, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every 15 s is not news


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", required=True, type=click.IntRange(0, 65535), help="Port (0: any free one)."
)
@click.option(
    "--token",
    envvar="PGGCL_METRICS_TOKEN",
    metavar="TOKEN",
    help="Secret every scrape must carry as `Authorization: Bearer TOKEN` (default: "
    "$PGGCL_METRICS_TOKEN). Needed to listen beyond loopback.",
)
@click.pass_context
def metrics(ctx: click.Context, host: str, port: int, token: str | None) -> None:
    """Serve /metrics for Prometheus: every limit's gauges, counters and histograms.

    The same text as the web UI's /metrics, without the UI. Each scrape reads the view
    pggcl.limits once; reading it takes no lock an acquire waits for.
    """
    dsn = require_dsn(ctx)
    if not token and not is_loopback(host):
        raise click.ClickException(
            f"--host {host} listens beyond this machine: give --token TOKEN (or set "
            "PGGCL_METRICS_TOKEN) and have Prometheus send it (authorization: credentials)"
        )
    if token is not None and not token.strip():
        raise click.ClickException("--token must not be empty")
    with pggcl.Client(dsn) as client:
        client.list_limits()  # a wrong DSN or a missing schema is an error now, not at a scrape
        server = MetricsServer((host, port), client, token)
        with server:
            bound = server.server_address[1]
            shown = f"[{host}]" if ":" in host else host
            click.echo(f"pggcl metrics: serving http://{shown}:{bound}/metrics", err=True)
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop, quietly
                server.serve_forever()


COMMANDS = [metrics]
