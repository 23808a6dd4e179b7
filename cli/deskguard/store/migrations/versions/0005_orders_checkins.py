"""Wipe/lock orders, agent check-ins and the agent's public key (docs/agent-protocol.md).

devices gains agent_public_key (PEM) and last_seen_at/last_seen_via; orders records every signed order and
its state; checkins keeps the latest verified check-in of each device (one row per device, replaced).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: a plain ALTER TABLE ADD COLUMN on SQLite and PostgreSQL, no table rebuild.
    op.add_column("devices", sa.Column("agent_public_key", sa.Text(), nullable=True))
    op.add_column("devices", sa.Column("last_seen_at", sa.DateTime(), nullable=True))
    op.add_column("devices", sa.Column("last_seen_via", sa.String(16), nullable=True))
    op.create_table(
        "orders",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("device_uuid", sa.String(36), sa.ForeignKey("devices.uuid", name="fk_orders_device_uuid_devices"),
                  nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("volumes", sa.Text(), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("prior_device_state", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ticket", sa.String(64), nullable=True),
        sa.Column("issued_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("cancel_envelope", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("nonce", name="uq_orders_nonce"),
    )
    op.create_index("ix_orders_device_uuid", "orders", ["device_uuid"])
    op.create_index("ix_orders_state", "orders", ["state"])
    op.create_table(
        "checkins",
        sa.Column("device_uuid", sa.String(36),
                  sa.ForeignKey("devices.uuid", name="fk_checkins_device_uuid_devices"), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("device_uuid", name="pk_checkins"),
    )


def downgrade() -> None:
    op.drop_table("checkins")
    op.drop_table("orders")
    # Plain DROP COLUMN (SQLite 3.35+): a batch rebuild of devices would have to re-create its partial unique
    # index on hostname by reflection, which may lose the WHERE clause.
    for column in ("last_seen_via", "last_seen_at", "agent_public_key"):
        op.execute(f"ALTER TABLE devices DROP COLUMN {column}")
