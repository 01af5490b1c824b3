"""dead waiters are never served nor shown; pggcl.session_id alone is no session

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Frozen: upgrade runs `0005_dead_waiters_no_takeover.sql`, downgrade
`0005_dead_waiters_no_takeover_downgrade.sql` (which restores 0004's function and
view definitions and drops the view pggcl._sessions_seen). No table changes; public
signatures unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0005_dead_waiters_no_takeover.sql")


def downgrade() -> None:
    execute_script(_HERE / "0005_dead_waiters_no_takeover_downgrade.sql")
