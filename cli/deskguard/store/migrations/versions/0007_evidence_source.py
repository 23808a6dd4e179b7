"""Where a compliance result's evidence came from: a live collection over SSH/WinRM, or the laptop's latest
agent check-in (for laptops that are off at night), and when that evidence was collected.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("compliance_hosts") as batch:
        batch.add_column(sa.Column("source", sa.String(16), nullable=True))       # live | checkin
        batch.add_column(sa.Column("evidence_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("compliance_hosts") as batch:
        batch.drop_column("evidence_at")
        batch.drop_column("source")
