"""template totals: swept instances' counters kept on their template, pggcl.template_totals

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

Frozen: upgrade runs `0014_template_totals.sql`, downgrade `0014_template_totals_downgrade.sql`
(the view and the retired_* columns dropped; 0013's _sweep_instances again). pggcl.limit_templates
gains the last columns retired_*; the new view pggcl.template_totals is readable by pggcl_user.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0014_template_totals.sql")


def downgrade() -> None:
    execute_script(_HERE / "0014_template_totals_downgrade.sql")
