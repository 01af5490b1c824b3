"""initial: install schema pggcl

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Frozen: this revision runs `0001_initial.sql`, a verbatim copy of `sql/*.sql` as it stood when
the revision was released. The current schema lives in `sql/`; every later change to it is a new
revision with its own frozen script, and tests/test_migrations.py checks that the chain ends
equal to a fresh install from `sql/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pggcl.schema import execute_script

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("pggcl",)
depends_on: str | Sequence[str] | None = None

_HERE = Path(__file__).resolve().parent


def upgrade() -> None:
    execute_script(_HERE / "0001_initial.sql")


def downgrade() -> None:
    # Roles pggcl_admin / pggcl_user are cluster-wide and may serve other databases.
    execute_script("DROP SCHEMA IF EXISTS pggcl CASCADE")
