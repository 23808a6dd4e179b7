"""Self-enrolment (issue 22): enrolment tokens (hashed), and what a device that enrolled itself reported.

devices gains serial and enrolment_token_id; enrolment_tokens holds each token's SHA-256, its uses, expiry,
operator, hostname pattern and revocation. The device states "pending" and "enrolled" need no change here
(the state column is a plain string).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: a plain ALTER TABLE ADD COLUMN, no rebuild of devices (its partial unique index stays).
    op.add_column("devices", sa.Column("serial", sa.String(128), nullable=True))
    op.add_column("devices", sa.Column("enrolment_token_id", sa.String(36), nullable=True))
    op.create_table(
        "enrolment_tokens",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("uses_allowed", sa.Integer(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("operator", sa.String(128), nullable=True),
        sa.Column("hostname_pattern", sa.String(253), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_enrolment_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_enrolment_tokens_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("enrolment_tokens")
    # Plain DROP COLUMN (SQLite 3.35+), as in 0005: a batch rebuild of devices could lose its partial index.
    for column in ("enrolment_token_id", "serial"):
        op.execute(f"ALTER TABLE devices DROP COLUMN {column}")
