"""every PL/pgSQL helper pins its search_path

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

Frozen: upgrade runs `0011_pinned_helpers.sql`, downgrade `0011_pinned_helpers_downgrade.sql`
(the helpers unpinned again, as 0010 had them). No signature, table or body changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0011_pinned_helpers.sql")


def downgrade() -> None:
    execute_script(_HERE / "0011_pinned_helpers_downgrade.sql")
