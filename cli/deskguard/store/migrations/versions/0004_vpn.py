"""VPN peers: each laptop's tunnel address from the policy's pool and its WireGuard public key.

Two partial unique indexes (on active rows) are what keeps addresses unique when two admins enrol at
once: the database refuses the second, whatever the application did. Revoked rows stay for the record.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("state = 'active'")


def upgrade() -> None:
    op.create_table(
        "vpn_peers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("device_uuid", sa.String(36), sa.ForeignKey("devices.uuid", name="fk_vpn_peers_device_uuid_devices"),
                  nullable=False),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("address", sa.String(45), nullable=False),
        sa.Column("public_key", sa.String(44), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("key_changed_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_vpn_peers"),
    )
    op.create_index("ix_vpn_peers_device_uuid", "vpn_peers", ["device_uuid"])
    op.create_index("uq_vpn_peers_address_active", "vpn_peers", ["pool", "address"], unique=True,
                    sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)
    op.create_index("uq_vpn_peers_device_active", "vpn_peers", ["device_uuid"], unique=True,
                    sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)


def downgrade() -> None:
    op.drop_table("vpn_peers")
