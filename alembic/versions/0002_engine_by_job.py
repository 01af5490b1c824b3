"""engine by job: acquire in named pieces, shared lease and queue steps, GC003 names its field

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Frozen: upgrade runs `0002_engine_by_job.sql`, downgrade `0002_engine_by_job_downgrade.sql`
(which restores 0001's function definitions). No table changes; public signatures unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0002_engine_by_job.sql")


def downgrade() -> None:
    execute_script(_HERE / "0002_engine_by_job_downgrade.sql")
