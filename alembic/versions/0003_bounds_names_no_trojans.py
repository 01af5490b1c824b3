"""bounded inputs, printable names, and SQL helpers safe on any search_path

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Frozen: upgrade runs `0003_bounds_names_no_trojans.sql`, downgrade
`0003_bounds_names_no_trojans_downgrade.sql` (which restores 0002's function definitions).
No table changes; public signatures unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0003_bounds_names_no_trojans.sql")


def downgrade() -> None:
    execute_script(_HERE / "0003_bounds_names_no_trojans_downgrade.sql")
