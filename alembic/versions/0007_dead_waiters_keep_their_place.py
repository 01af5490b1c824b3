"""a dead waiter within its grace is passed over, not dropped: it keeps its place

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

Frozen: upgrade runs `0007_dead_waiters_keep_their_place.sql`, downgrade
`0007_dead_waiters_keep_their_place_downgrade.sql` (0006's grant step, without the new
helper). Public signatures unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0007_dead_waiters_keep_their_place.sql")


def downgrade() -> None:
    execute_script(_HERE / "0007_dead_waiters_keep_their_place_downgrade.sql")
