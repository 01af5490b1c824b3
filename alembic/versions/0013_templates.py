"""templates: per-key limits created on first use

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

Frozen: upgrade runs `0013_templates.sql`, downgrade `0013_templates_downgrade.sql` (templates
dropped, their instances kept as plain limits; 0012's functions and pggcl.limits again).
create_limit and update_limit gain a last parameter, idle_seconds (default NULL); pggcl.limits
gains the last columns template and customized.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0013_templates.sql")


def downgrade() -> None:
    execute_script(_HERE / "0013_templates_downgrade.sql")
