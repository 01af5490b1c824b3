"""What one UI server holds: its DSN, client, live-update hub and secrets."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

from starlette.requests import Request

from pggcl.asyncio import AsyncClient
from pggcl.ui.access import Access, check_access
from pggcl.ui.live import Hub

#: How long the answer to "may this role manage limits?" is trusted, in seconds.
ACCESS_TTL = 60.0


@dataclass
class UiState:
    dsn: str
    client: AsyncClient
    hub: Hub
    token: str | None = None
    #: Signs the form tokens; new at each start, so a form from before a restart is refused.
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _access: Access | None = None
    _access_at: float = 0.0
    _access_lock: asyncio.Lock | None = None

    async def access(self) -> Access:
        """What the DSN's role may do; asked again after ACCESS_TTL seconds."""
        if self._access is None or time.monotonic() - self._access_at > ACCESS_TTL:
            self._access_lock = self._access_lock or asyncio.Lock()
            async with self._access_lock:
                if self._access is None or time.monotonic() - self._access_at > ACCESS_TTL:
                    self._access = await check_access(self.dsn)
                    self._access_at = time.monotonic()
        return self._access

    def forget_access(self) -> None:
        """Ask again at the next page: the database refused a change (PermissionDeniedError),
        so the role's grants changed since they were last read."""
        self._access = None


def ui_state(request: Request) -> UiState:
    state: UiState = request.app.state.ui
    return state
