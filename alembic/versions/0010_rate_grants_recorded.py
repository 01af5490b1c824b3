"""rate grants to queued waiters recorded: recheck and cancel say granted; gone is not granted

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

Frozen: upgrade runs `0010_rate_grants_recorded.sql`, downgrade
`0010_rate_grants_recorded_downgrade.sql` (0009's recheck, cancel and grant step, without
pggcl.rate_grants). Public signatures unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0010_rate_grants_recorded.sql")


def downgrade() -> None:
    execute_script(_HERE / "0010_rate_grants_recorded_downgrade.sql")
