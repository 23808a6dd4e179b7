"""Keyslot baselines: the keyslots each LUKS volume had when its key was escrowed (ENC-003).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keyslot_baselines",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_uuid", sa.String(36),
                  sa.ForeignKey("devices.uuid", name="fk_keyslot_baselines_device_uuid_devices"), nullable=False),
        sa.Column("luks_uuid", sa.String(36), nullable=False),
        sa.Column("fingerprints", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_keyslot_baselines"),
    )
    op.create_index("ix_keyslot_baselines_device_uuid", "keyslot_baselines", ["device_uuid"])
    op.create_index("uq_keyslot_baselines_volume", "keyslot_baselines", ["device_uuid", "luks_uuid"], unique=True)


def downgrade() -> None:
    op.drop_table("keyslot_baselines")
