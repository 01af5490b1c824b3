"""priorities: a head start in seconds, served without starving anyone

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

Frozen: upgrade runs `0015_priorities.sql`, downgrade `0015_priorities_downgrade.sql` (arrival
order again; the priority columns dropped). acquire and try_acquire gain a last parameter,
priority (default 0); pggcl.queue gains the last column priority. Waiters queued at the upgrade
keep their arrival order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0015_priorities.sql")


def downgrade() -> None:
    execute_script(_HERE / "0015_priorities_downgrade.sql")
