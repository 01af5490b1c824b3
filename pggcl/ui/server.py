"""Running the UI under uvicorn, for ``pggcl ui`` and the tests."""

from __future__ import annotations

import socket

import uvicorn
from starlette.applications import Starlette

from pggcl.ui.state import UiState


class UiServer(uvicorn.Server):
    """uvicorn, ending the open event streams first when it shuts down: otherwise it would
    wait for browsers to hang up before it stops."""

    def __init__(self, config: uvicorn.Config, state: UiState) -> None:
        super().__init__(config)
        self._state = state

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._state.hub.end_streams()
        await super().shutdown(sockets)


def make_server(
    app: Starlette, host: str = "127.0.0.1", port: int = 8787, log_level: str = "info"
) -> UiServer:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,
        timeout_graceful_shutdown=3,
    )
    state: UiState = app.state.ui
    return UiServer(config, state)
