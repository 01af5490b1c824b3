"""liveness by the session's own backend, reading is enough, bounded holders, owned TTL leases

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

Frozen: upgrade runs `0008_liveness_by_backend_owned_leases.sql`, downgrade
`0008_liveness_by_backend_owned_leases_downgrade.sql` (0007's functions and views, without the
columns, table and helpers 0008 added). Public signatures unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0008_liveness_by_backend_owned_leases.sql")


def downgrade() -> None:
    execute_script(_HERE / "0008_liveness_by_backend_owned_leases_downgrade.sql")
