"""pggcl.explain(waiter_id, max_holders): why a queued request waits

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

Frozen: upgrade runs `0012_explain.sql`, downgrade `0012_explain_downgrade.sql` (the function
dropped again). A new read-only function; no other signature, table or body changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0012_explain.sql")


def downgrade() -> None:
    execute_script(_HERE / "0012_explain_downgrade.sql")
