"""Escrowed secrets get a lifecycle: pending -> active -> retired/abandoned, plus the keyslot fingerprint.

A secret is stored *pending* before it is put on the device and becomes *active* only once the device has
proven it opens; `fingerprint` identifies the keyslot it was verified in (so a key changed behind the kit's
back is detected without the secret), `verified_at` is the last time that was checked.
Rows written before this revision were stored after their key worked: they become active.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("secrets") as batch:
        batch.add_column(sa.Column("state", sa.String(16), nullable=False, server_default="active"))
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
        batch.add_column(sa.Column("verified_at", sa.DateTime(), nullable=True))
    op.execute("UPDATE secrets SET state = 'destroyed' WHERE destroyed_at IS NOT NULL")
    op.create_index(op.f("ix_secrets_state"), "secrets", ["state"])


def downgrade() -> None:
    op.drop_index(op.f("ix_secrets_state"), table_name="secrets")
    with op.batch_alter_table("secrets") as batch:
        batch.drop_column("verified_at")
        batch.drop_column("fingerprint")
        batch.drop_column("state")
