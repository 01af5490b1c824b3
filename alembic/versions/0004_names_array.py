"""a multidimensional names array is read as the names it holds

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Frozen: upgrade runs `0004_names_array.sql`, downgrade
`0004_names_array_downgrade.sql` (which restores 0003's function definitions).
No table changes; public signatures unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0004_names_array.sql")


def downgrade() -> None:
    execute_script(_HERE / "0004_names_array_downgrade.sql")
