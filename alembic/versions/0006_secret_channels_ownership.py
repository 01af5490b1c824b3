"""secret notification channels; a session, its leases and waiters are its role's

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Frozen: upgrade runs `0006_secret_channels_ownership.sql`, downgrade
`0006_secret_channels_ownership_downgrade.sql` (which restores 0005's function and view
definitions, drops 0006's helpers and the columns sessions.channel and sessions.owner_role).
Public signatures unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0006_secret_channels_ownership.sql")


def downgrade() -> None:
    execute_script(_HERE / "0006_secret_channels_ownership_downgrade.sql")
