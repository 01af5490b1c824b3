"""counters per limit: grants, queued, denied, gave up, rejected, reclaimed; wait and hold times

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

Frozen: upgrade runs `0009_counters.sql`, downgrade `0009_counters_downgrade.sql` (0008's
functions and views, without the counter columns and helpers 0009 added). Public signatures
unchanged; pggcl.limits has new columns at its end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0009_counters.sql")


def downgrade() -> None:
    execute_script(_HERE / "0009_counters_downgrade.sql")
